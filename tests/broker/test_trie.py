"""The subscription trie and the retained store against a naive reference matcher."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from plugin_host.broker.message import Message
from plugin_host.broker.retained import RetainedStore
from plugin_host.broker.session import Session
from plugin_host.broker.trie import SubOptions, SubscriptionTrie


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT 4.7 topic matching, written the obvious way."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f = topic_filter.split("/")
    t = topic.split("/")
    for i, word in enumerate(f):
        if word == "#":
            return True
        if i >= len(t):
            return False
        if word != "+" and word != t[i]:
            return False
    return len(f) == len(t) or (len(f) == len(t) + 1 and f[-1] == "#")


class FakeSession:
    def __init__(self, name: str, online: bool = True, persistent: bool = False) -> None:
        self.name = name
        self.online = online
        self.persistent = persistent

    def __repr__(self) -> str:
        return self.name


levels = st.sampled_from(["a", "b", "c", "", "$SYS", "$x"])
topics = st.lists(levels, min_size=1, max_size=4).map("/".join)
filter_levels = st.sampled_from(["a", "b", "c", "", "+", "$SYS"])


@st.composite
def filters(draw):
    words = draw(st.lists(filter_levels, min_size=1, max_size=4))
    if draw(st.booleans()):
        words.append("#")
    return "/".join(words)


@settings(max_examples=300, deadline=None)
@given(st.lists(filters(), min_size=1, max_size=8), st.lists(topics, min_size=1, max_size=8))
def test_trie_matches_like_the_reference(filter_list, topic_list):
    trie = SubscriptionTrie()
    sessions = [FakeSession(f"s{i}") for i in range(len(filter_list))]
    for session, f in zip(sessions, filter_list, strict=True):
        trie.add(session, SubOptions(f, 1))
    for topic in topic_list:
        expected = {s for s, f in zip(sessions, filter_list, strict=True) if matches(f, topic)}
        got = {t.session for t in trie.match(topic).targets}
        assert got == expected, (topic, filter_list)
        assert {t.session for t in trie.match(topic).targets} == expected  # cached answer


def test_remove_prunes_and_invalidates_cache():
    trie = SubscriptionTrie()
    s = FakeSession("s")
    trie.add(s, SubOptions("a/+/c", 1))
    assert trie.match("a/b/c").targets
    assert trie.remove(s, "a/+/c")
    assert not trie.match("a/b/c").targets
    assert trie.root.children == {}
    assert not trie.remove(s, "a/+/c")
    assert trie.size == 0


def test_overlap_merge_and_no_local():
    trie = SubscriptionTrie()
    s = FakeSession("s")
    trie.add(s, SubOptions("a/#", 0, sub_id=1))
    trie.add(s, SubOptions("a/b", 2, no_local=True, sub_id=2))
    trie.add(s, SubOptions("+/b", 1, rap=True, sub_id=3))
    (target,) = trie.match("a/b").targets
    assert (target.qos, target.sub_ids, target.rap) == (2, (1, 2, 3), True)
    assert target.local.qos == 1 and target.local.sub_ids == (1, 3)
    trie.remove(s, "a/#")
    trie.remove(s, "+/b")
    (target,) = trie.match("a/b").targets
    assert target.local is False  # only a no_local subscription is left


def test_shared_groups_round_robin_online_first_then_persistent_offline():
    trie = SubscriptionTrie()
    a, b = FakeSession("a"), FakeSession("b")
    c = FakeSession("c", online=False, persistent=True)
    d = FakeSession("d", online=False, persistent=False)
    for s in (a, b, c, d):
        trie.add(s, SubOptions("jobs/+", 1, group="g"))
    (group,) = trie.match("jobs/1").groups
    picks = [group.pick("round_robin")[0] for _ in range(4)]
    assert picks == [a, b, a, b]
    a.online = b.online = False
    assert {group.pick("round_robin")[0] for _ in range(3)} == {c}
    c.persistent = False
    assert group.pick("round_robin") is None
    assert group.pick("random") is None


def test_retained_store_matching_and_expiry():
    store = RetainedStore()
    for topic in ("a", "a/b", "a/b/c", "x/b", "$SYS/up"):
        store.set(topic, Message(topic, b"v", retain=True))
    store.set("soon", Message("soon", b"v", retain=True, expires_at=10.0))

    def got(f: str, now: float = 0.0) -> list[str]:
        return sorted(m.topic for m in store.match(f, now))

    assert got("#") == ["a", "a/b", "a/b/c", "soon", "x/b"]
    assert got("a/#") == ["a", "a/b", "a/b/c"]
    assert got("+/b") == ["a/b", "x/b"]
    assert got("+") == ["a", "soon"]
    assert got("$SYS/#") == ["$SYS/up"]
    assert got("a/b") == ["a/b"]
    assert got("soon", now=11.0) == []
    assert len(store) == 5  # the expired one was removed when met
    store.set("a/b", None)
    assert got("a/#") == ["a", "a/b/c"]


def test_packet_ids_never_reuse_an_inflight_id():
    class B:
        class config:
            class broker:
                max_inflight_messages = 0
                max_offline_messages = 10
                max_online_messages = 10
                upgrade_outgoing_qos = False
                retry_interval = 0

        @staticmethod
        def now() -> float:
            return 0.0

    session = Session(B(), "", "c")  # type: ignore[arg-type]
    session.next_pid = 65534
    session.inflight = {65535: None, 1: None, 2: None}  # type: ignore[dict-item]
    assert session.alloc_packet_id() == 65534
    assert session.alloc_packet_id() == 3  # skips 65535, wraps, skips 1 and 2
    session.inflight[3] = None  # type: ignore[assignment]
    session.inflight[65534] = None  # type: ignore[assignment]
    assert session.alloc_packet_id() == 4
