"""kill -9: a broker process killed mid-stream loses nothing it acknowledged.

Publishers (paho, persistent sessions) stream QoS 1 and QoS 2 messages to persistent subscribers
that are offline, and to one that is online; the broker gets SIGKILL in the middle. After a
restart on the same store:

* every subscriber's session is back (session_present = 1) with its subscriptions (nobody
  subscribes again) and everything queued for it; the retained message is back;
* every message whose PUBACK / PUBCOMP reached its publisher before the crash is delivered;
* the publishers re-send what was not acknowledged (with DUP and the same packet id, as MQTT
  asks of a persistent session), so in the end *every* message is delivered: QoS 1 at least
  once, QoS 2 exactly once, to every subscriber, the online one included (its unacknowledged
  deliveries are re-sent with their packet ids; its QoS 2 state is kept by paho).

QoS 2 "exactly once across the crash" therefore holds in the strongest form a broker can give:
a QoS 2 message is on disk, together with the publisher's packet id, before its PUBREC is sent,
so a re-sent PUBLISH is recognised and never routed twice; and a QoS 2 delivery leaves only once
its in-flight record is durable, so it is re-sent with the same packet id, never as a new
message.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

N = 800  # messages per publisher
KILL_AFTER = 200  # acknowledgements each publisher has seen when the broker is killed
WAIT = 60.0


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


class Client:
    """A paho client (its own network thread) with what the test needs to wait for."""

    def __init__(self, client_id: str, v5: bool = False) -> None:
        self.v5 = v5
        if v5:
            self.paho = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
            )
        else:
            self.paho = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
            )
        self.paho.max_inflight_messages_set(50)
        self.cond = threading.Condition()
        self.connacks: list[Any] = []
        self.disconnects = 0
        self.acked: set[int] = set()  # mids with their PUBACK / PUBCOMP
        self.received: list[tuple[str, bytes]] = []
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_publish = self._on_publish
        self.paho.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.connacks.append(flags)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.acked.add(mid)
            self.cond.notify_all()

    def _on_message(self, client, userdata, message):
        with self.cond:
            self.received.append((message.topic, message.payload))
            self.cond.notify_all()

    def wait(self, predicate, what: str) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, WAIT), f"{self.paho._client_id!r}: {what}"

    def connect(self, address: tuple[str, int]) -> Any:
        """Connect (again) to ``address``, keeping the session; the CONNACK flags."""
        seen = len(self.connacks)
        if self.v5:
            self.paho.connect(*address, clean_start=False, properties=_session_props())
        else:
            self.paho.connect(*address)
        self.paho.loop_start()
        self.wait(lambda: len(self.connacks) > seen, "no CONNACK")
        return self.connacks[-1]

    def subscribe(self, topic: str, qos: int) -> None:
        done = threading.Event()
        self.paho.on_subscribe = lambda *args: done.set()
        self.paho.subscribe(topic, qos)
        assert done.wait(WAIT), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        info = self.paho.publish(topic, payload, qos, retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        return info.mid

    def disconnect(self) -> None:
        seen = self.disconnects
        self.paho.disconnect()
        self.wait(lambda: self.disconnects > seen, "not disconnected")
        self.paho.loop_stop()

    def lost(self) -> None:
        """The broker died: wait until paho noticed, stop its thread (keeping the session)."""
        self.wait(lambda: self.disconnects > 0, "the connection loss went unnoticed")
        self.paho.loop_stop()

    def payloads(self, topic: str) -> Counter[bytes]:
        with self.cond:
            return Counter(p for t, p in self.received if t == topic)


def test_nothing_acknowledged_is_lost_when_the_broker_is_killed(broker_process, store_file):
    # (queues long enough for everything: the test is about the crash, not queue limits)
    config = "max_offline_messages = 100000\nmax_online_messages = 100000\n"
    config += "max_inflight_messages = 50\n"
    # a longer commit window: more acknowledgements in the air when the broker is killed
    config += "persistence.sync_delay = 20ms\n"
    broker = broker_process(config=config)
    address = broker.address()

    # Persistent subscribers, offline during the stream; one more stays online.
    offline = [Client("sub-v3"), Client("sub-v5", v5=True)]
    for sub in offline:
        assert not sub.connect(address).session_present
        sub.subscribe("k/#", 2)
        sub.disconnect()
    online = Client("sub-online")
    online.connect(address)
    online.subscribe("k/#", 2)
    keeper = Client("retainer")
    keeper.connect(address)
    mid = keeper.publish("r/1", b"kept", 1, retain=True)
    keeper.wait(lambda: mid in keeper.acked, "retained message not acknowledged")
    keeper.disconnect()

    pub1, pub2 = Client("pub-qos1"), Client("pub-qos2", v5=True)
    pub1.connect(address)
    pub2.connect(address)
    mids1 = {pub1.publish("k/q1", b"1-%d" % i, 1): b"1-%d" % i for i in range(N)}
    mids2 = {pub2.publish("k/q2", b"2-%d" % i, 2): b"2-%d" % i for i in range(N)}
    for pub in (pub1, pub2):
        pub.wait(lambda pub=pub: len(pub.acked) >= KILL_AFTER, "too few acknowledgements")

    broker.kill()  # SIGKILL, mid-stream
    with pub1.cond, pub2.cond:
        acked1 = {mids1[m] for m in pub1.acked}
        acked2 = {mids2[m] for m in pub2.acked}
    assert KILL_AFTER <= len(acked1) < N and KILL_AFTER <= len(acked2) < N
    for client in (pub1, pub2, online):
        client.lost()

    broker = broker_process(config=config)
    restored = broker.wait_for("store_restored")
    assert restored["sessions"] == 6  # 3 subscribers, 2 publishers, the retainer
    assert restored["retained"] == 1
    address = broker.address()

    # The publishers come back and re-send what was not acknowledged.
    for pub, mids in ((pub1, mids1), (pub2, mids2)):
        assert pub.connect(address).session_present
        pub.wait(lambda pub=pub, mids=mids: len(pub.acked) == len(mids), "not all acknowledged")
    assert online.connect(address).session_present
    for sub in offline:
        assert sub.connect(address).session_present  # subscriptions too: no resubscribing
    # End markers (one publisher, one topic, one QoS: they come after everything before).
    pub1.publish("k/q1", b"end", 1)
    pub2.publish("k/q2", b"end", 2)
    for sub in [*offline, online]:
        sub.wait(
            lambda sub=sub: sub.payloads("k/q1")[b"end"] and sub.payloads("k/q2")[b"end"],
            "end markers not received",
        )
        q1, q2 = sub.payloads("k/q1"), sub.payloads("k/q2")
        del q1[b"end"], q2[b"end"]
        name = sub.paho._client_id
        assert acked1 <= set(q1), (name, sorted(acked1 - set(q1))[:10])
        assert acked2 <= set(q2), (name, sorted(acked2 - set(q2))[:10])
        assert set(q1) == set(mids1.values()), name  # QoS 1: at least once
        assert set(q2) == set(mids2.values()), name  # QoS 2: once...
        duplicates = {p: n for p, n in q2.items() if n > 1}
        assert not duplicates, (name, duplicates)  # ...and only once

    watcher = Client("watcher")
    watcher.connect(address)
    watcher.subscribe("r/#", 1)
    watcher.wait(lambda: ("r/1", b"kept") in watcher.received, "retained message lost")
    for client in (pub1, pub2, online, *offline, watcher):
        client.disconnect()
    assert broker.terminate() == 0
    # A clean stop folds everything: nothing waits in the journal, queues are empty.
    assert store_file.count("journal") == 0
    assert store_file.count("deliveries") == 0
