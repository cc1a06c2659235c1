"""Property-based tests: encode then parse gives back the original packet, for every packet type
and protocol level, with random (allowed) properties; and parsing does not depend on how the
byte stream is chunked."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin_host.mqtt import (
    ALLOWED_PROPERTIES,
    AUTH_REASON_CODES,
    CONNACK_REASON_CODES,
    DISCONNECT_REASON_CODES,
    MAX_VARINT,
    PROPERTIES_BY_NAME,
    PUBACK_REASON_CODES,
    PUBREL_REASON_CODES,
    SUBACK_REASON_CODES,
    UNSUBACK_REASON_CODES,
    V3_SUBACK_RETURN_CODES,
    WILL,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Parser,
    Pingreq,
    Pingresp,
    PropertyType,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
)

LEVELS = [3, 4, 5]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------ strategies

# MQTT strings: any Unicode scalar value except U+0000 (surrogates cannot be encoded anyway).
mqtt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
topic_name = mqtt_text.filter(lambda t: t and "+" not in t and "#" not in t)
binary = st.binary(max_size=24)
packet_id = st.integers(1, 0xFFFF)
qos = st.integers(0, 2)


def _value(name: str, context: int) -> st.SearchStrategy[Any]:
    spec = PROPERTIES_BY_NAME[name]
    t = spec.type
    if name == "response_topic":
        return topic_name
    if t is PropertyType.UTF8:
        return mqtt_text
    if t is PropertyType.BINARY:
        return binary
    if t is PropertyType.UTF8_PAIR:
        return st.lists(st.tuples(mqtt_text, mqtt_text), min_size=1, max_size=3)
    top = {
        PropertyType.BYTE: 0xFF,
        PropertyType.TWO_BYTE_INT: 0xFFFF,
        PropertyType.FOUR_BYTE_INT: 0xFFFF_FFFF,
        PropertyType.VARINT: MAX_VARINT,
    }[t]
    if spec.maximum is not None:
        top = spec.maximum
    ints = st.integers(spec.minimum, top)
    if name == "subscription_identifier" and context == PacketType.PUBLISH:
        return st.lists(ints, min_size=1, max_size=3)
    return ints


def properties(context: int, exclude: frozenset[str] = frozenset()) -> st.SearchStrategy[dict]:
    """Random properties allowed in ``context`` (each allowed one present or not)."""
    names = sorted(ALLOWED_PROPERTIES[context] - exclude)
    strategy = st.fixed_dictionaries({}, optional={n: _value(n, context) for n in names})

    def fix(props: dict[str, Any]) -> dict[str, Any]:
        # Authentication data is only valid together with an authentication method.
        if "authentication_data" in props and "authentication_method" not in props:
            props["authentication_method"] = "m"
        return props

    return strategy.map(fix)


def _payload_for(props: dict[str, Any]) -> st.SearchStrategy[bytes]:
    if props.get("payload_format_indicator") == 1:
        return mqtt_text.map(lambda s: s.encode("utf-8"))
    return binary


@st.composite
def publishes(draw: st.DrawFn, level: int, from_client: bool) -> Publish:
    q = draw(qos)
    props: dict[str, Any] = {}
    if level == 5:
        exclude = frozenset({"subscription_identifier"}) if from_client else frozenset()
        props = draw(properties(PacketType.PUBLISH, exclude))
    topic = draw(topic_name)
    if "topic_alias" in props and draw(st.booleans()):
        topic = ""
    return Publish(
        topic,
        draw(_payload_for(props)),
        q,
        draw(st.booleans()),
        draw(st.booleans()) if q else False,
        draw(packet_id) if q else None,
        props,
    )


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    v5 = level == 5
    will = None
    if draw(st.booleans()):
        wprops = draw(properties(WILL)) if v5 else {}
        will = Will(
            draw(topic_name), draw(_payload_for(wprops)), draw(qos), draw(st.booleans()), wprops
        )
    username = draw(st.none() | mqtt_text)
    password = draw(st.none() | binary)
    if not v5 and username is None:
        password = None  # MQTT 3.x: no password without a user name
    raw_level = level if v5 else draw(st.sampled_from([level, level | 0x80]))
    return Connect(
        "MQIsdp" if level == 3 else "MQTT",
        raw_level,
        draw(mqtt_text),
        draw(st.booleans()),
        draw(st.integers(0, 0xFFFF)),
        username,
        password,
        will,
        draw(properties(PacketType.CONNECT)) if v5 else {},
    )


@st.composite
def connacks(draw: st.DrawFn, level: int) -> Connack:
    if level == 5:
        rc = draw(st.sampled_from(sorted(CONNACK_REASON_CODES)))
        props = draw(properties(PacketType.CONNACK))
    else:
        rc = draw(st.integers(0, 5))
        props = {}
    present = draw(st.booleans()) and rc == 0 and level != 3
    return Connack(present, rc, props)


def acks(cls: type, level: int) -> st.SearchStrategy[Packet]:
    if level != 5:
        return st.builds(cls, packet_id)
    codes = PUBREL_REASON_CODES if cls in (Pubrel, Pubcomp) else PUBACK_REASON_CODES
    return st.builds(
        cls,
        packet_id,
        st.sampled_from(sorted(codes)),
        properties(cls.packet_type),  # type: ignore[attr-defined]
    )


@st.composite
def subscriptions(draw: st.DrawFn, level: int) -> Subscription:
    topic_filter = draw(mqtt_text | st.sampled_from(["a/+/b", "#", "$share/g/x/#", "$SYS/#"]))
    if level != 5:
        return Subscription(topic_filter, draw(qos))
    no_local = draw(st.booleans()) and not topic_filter.startswith("$share/")
    return Subscription(
        topic_filter, draw(qos), no_local, draw(st.booleans()), draw(st.integers(0, 2))
    )


def subscribes(level: int) -> st.SearchStrategy[Packet]:
    return st.builds(
        Subscribe,
        packet_id,
        st.lists(subscriptions(level), min_size=1, max_size=4),
        properties(PacketType.SUBSCRIBE) if level == 5 else st.just({}),
    )


def subacks(level: int) -> st.SearchStrategy[Packet]:
    codes = SUBACK_REASON_CODES if level == 5 else V3_SUBACK_RETURN_CODES
    return st.builds(
        Suback,
        packet_id,
        st.lists(st.sampled_from(sorted(codes)), min_size=1, max_size=5),
        properties(PacketType.SUBACK) if level == 5 else st.just({}),
    )


def unsubscribes(level: int) -> st.SearchStrategy[Packet]:
    return st.builds(
        Unsubscribe,
        packet_id,
        st.lists(mqtt_text, min_size=1, max_size=4),
        properties(PacketType.UNSUBSCRIBE) if level == 5 else st.just({}),
    )


def unsubacks(level: int) -> st.SearchStrategy[Packet]:
    if level != 5:
        return st.builds(Unsuback, packet_id)
    return st.builds(
        Unsuback,
        packet_id,
        st.lists(st.sampled_from(sorted(UNSUBACK_REASON_CODES)), min_size=1, max_size=5),
        properties(PacketType.UNSUBACK),
    )


def disconnects(level: int, from_client: bool) -> st.SearchStrategy[Packet]:
    if level != 5:
        return st.just(Disconnect())
    exclude = "server_reference" if from_client else "session_expiry_interval"
    return st.builds(
        Disconnect,
        st.sampled_from(sorted(DISCONNECT_REASON_CODES)),
        properties(PacketType.DISCONNECT, frozenset({exclude})),
    )


def auths() -> st.SearchStrategy[Packet]:
    return st.builds(Auth, st.sampled_from(sorted(AUTH_REASON_CODES)), properties(PacketType.AUTH))


def client_packets(level: int) -> st.SearchStrategy[Packet]:
    """Anything a client may send after CONNECT."""
    options: list[st.SearchStrategy[Packet]] = [
        publishes(level, True),
        acks(Puback, level),
        acks(Pubrec, level),
        acks(Pubrel, level),
        acks(Pubcomp, level),
        subscribes(level),
        unsubscribes(level),
        st.just(Pingreq()),
        disconnects(level, True),
    ]
    if level == 5:
        options.append(auths())
    return st.one_of(options)


def server_packets(level: int) -> st.SearchStrategy[Packet]:
    """Anything a server may send."""
    options: list[st.SearchStrategy[Packet]] = [
        connacks(level),
        publishes(level, False),
        acks(Puback, level),
        acks(Pubrec, level),
        acks(Pubrel, level),
        acks(Pubcomp, level),
        subacks(level),
        unsubacks(level),
        st.just(Pingresp()),
    ]
    if level == 5:
        options += [disconnects(level, False), auths()]
    return st.one_of(options)


def _roundtrip(packet: Packet, level: int, parser: Parser) -> None:
    data = encode(packet, level)
    assert parser.feed(data) == [packet]
    assert parser.buffered == 0


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("level", LEVELS)
@FAST
@given(data=st.data())
def test_connect_roundtrip(level: int, data: st.DataObject) -> None:
    packet = data.draw(connects(level))
    parser = Parser()
    _roundtrip(packet, level, parser)
    assert parser.protocol_level == level


STRATEGIES = {
    "connack": lambda lvl: (connacks(lvl), False),
    "publish-from-client": lambda lvl: (publishes(lvl, True), True),
    "publish-from-server": lambda lvl: (publishes(lvl, False), False),
    "puback": lambda lvl: (acks(Puback, lvl), True),
    "pubrec": lambda lvl: (acks(Pubrec, lvl), False),
    "pubrel": lambda lvl: (acks(Pubrel, lvl), True),
    "pubcomp": lambda lvl: (acks(Pubcomp, lvl), False),
    "subscribe": lambda lvl: (subscribes(lvl), True),
    "suback": lambda lvl: (subacks(lvl), False),
    "unsubscribe": lambda lvl: (unsubscribes(lvl), True),
    "unsuback": lambda lvl: (unsubacks(lvl), False),
    "pingreq": lambda lvl: (st.just(Pingreq()), True),
    "pingresp": lambda lvl: (st.just(Pingresp()), False),
    "disconnect-from-client": lambda lvl: (disconnects(lvl, True), True),
    "disconnect-from-server": lambda lvl: (disconnects(lvl, False), False),
    "auth-from-client": lambda lvl: (auths(), True),
    "auth-from-server": lambda lvl: (auths(), False),
}
CASES = [
    (name, level)
    for name in STRATEGIES
    for level in LEVELS
    if not ((name.startswith("auth") or name == "disconnect-from-server") and level != 5)
]


@pytest.mark.parametrize(("kind", "level"), CASES, ids=[f"{k}-v{lvl}" for k, lvl in CASES])
@FAST
@given(data=st.data())
def test_packet_roundtrip(kind: str, level: int, data: st.DataObject) -> None:
    strategy, from_client = STRATEGIES[kind](level)
    packet = data.draw(strategy)
    parser = Parser(server_side=from_client, protocol_level=level)
    _roundtrip(packet, level, parser)


# ------------------------------------------------------------------------------ chunking


@st.composite
def client_sessions(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    level = draw(st.sampled_from(LEVELS))
    packets: list[Packet] = [draw(connects(level))]
    packets += draw(st.lists(client_packets(level), max_size=12))
    return level, packets


@st.composite
def server_streams(draw: st.DrawFn) -> tuple[int, list[Packet]]:
    level = draw(st.sampled_from(LEVELS))
    return level, draw(st.lists(server_packets(level), max_size=12))


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = []
    last = 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=client_sessions(), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_client_stream_any_chunking(session: tuple[int, list[Packet]], cuts: list[int]) -> None:
    level, packets = session
    data = b"".join(encode(p, level) for p in packets)
    whole = Parser().feed(data)
    assert whole == packets
    parser = Parser()
    got: list[Packet] = []
    for piece in _split(data, cuts):
        got += parser.feed(memoryview(piece))
    assert got == packets
    assert parser.buffered == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=server_streams(), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_server_stream_any_chunking(stream: tuple[int, list[Packet]], cuts: list[int]) -> None:
    level, packets = stream
    data = b"".join(encode(p, level) for p in packets)
    parser = Parser(server_side=False, protocol_level=level)
    got: list[Packet] = []
    for piece in _split(data, cuts):
        got += parser.feed(bytearray(piece))
    assert got == packets


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(session=client_sessions())
def test_one_byte_at_a_time(session: tuple[int, list[Packet]]) -> None:
    level, packets = session
    data = b"".join(encode(p, level) for p in packets)
    parser = Parser()
    got: list[Packet] = []
    for i in range(len(data)):
        got += parser.feed(data[i : i + 1])
    assert got == packets


def test_many_packets_one_feed() -> None:
    packets = [
        Publish(
            f"t/{i}",
            bytes([i % 256]) * (i % 300),
            i % 3,
            False,
            False,
            (i % 65535) + 1 if i % 3 else None,
        )
        for i in range(5000)
    ]
    data = b"".join(encode(p, 4) for p in packets)
    parser = Parser(protocol_level=4)
    assert parser.feed(data) == packets


def test_large_packet_in_small_chunks_is_linear() -> None:
    """A 4 MiB PUBLISH fed 1 KiB at a time completes (the buffer is not re-scanned)."""
    payload = bytes(range(256)) * 16384
    data = encode(Publish("big", payload), 4)
    parser = Parser(protocol_level=4)
    got: list[Packet] = []
    for i in range(0, len(data), 1024):
        got += parser.feed(data[i : i + 1024])
    assert got == [Publish("big", payload)]
