"""Interoperability with an independent implementation: paho-mqtt talks to a real socket whose
other end is driven by plugin_host.mqtt (our Parser reads paho's bytes, our encoder answers).

Covers MQTT 3.1, 3.1.1 and 5.0: CONNECT (will, credentials, v5 properties), CONNACK,
SUBSCRIBE/SUBACK, PUBLISH QoS 1 both ways with PUBACK, UNSUBSCRIBE/UNSUBACK, DISCONNECT.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from plugin_host.mqtt import (
    Connect,
    Disconnect,
    Packet,
    Parser,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    encode_connack,
    encode_puback,
    encode_publish,
    encode_suback,
    encode_unsuback,
)

PROTOCOLS = {3: paho.MQTTv31, 4: paho.MQTTv311, 5: paho.MQTTv5}


class Peer:
    """The server end of the connection: our parser on the socket paho connected to."""

    def __init__(self, client: paho.Client, conn: socket.socket) -> None:
        self.client = client
        self.conn = conn
        self.parser = Parser(max_packet_size=1 << 20)
        self.received: list[Packet] = []

    def pump(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Run paho's loop and read our socket until ``done()`` (event-driven, with a deadline)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError("peer did not reach the expected state")
            self.client.loop(timeout=0.05)
            try:
                data = self.conn.recv(65536)
            except BlockingIOError:
                continue
            if not data:
                raise ConnectionError("paho closed the connection")
            self.received += self.parser.feed(data)

    def expect(self, n: int = 1) -> list[Packet]:
        self.pump(lambda: len(self.received) >= n)
        got, self.received = self.received[:n], self.received[n:]
        return got


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)
    yield srv
    srv.close()


@pytest.mark.parametrize("level", [3, 4, 5])
def test_paho_session(level: int, listener: socket.socket) -> None:
    v5 = level == 5
    events: dict[str, Any] = {}
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="interop-1", protocol=PROTOCOLS[level]
    )
    client.on_connect = lambda c, u, flags, rc, props: events.__setitem__("connack", rc)
    client.on_subscribe = lambda c, u, mid, codes, props: events.__setitem__("suback", codes)
    client.on_unsubscribe = lambda c, u, mid, codes, props: events.__setitem__("unsuback", mid)
    client.on_publish = lambda c, u, mid, rc, props: events.__setitem__("puback", mid)
    client.on_message = lambda c, u, msg: events.__setitem__("message", msg)
    client.username_pw_set("user", "secret")
    will_props = None
    connect_props = None
    if v5:
        will_props = PahoProperties(PacketTypes.WILLMESSAGE)
        will_props.WillDelayInterval = 7
        will_props.UserProperty = ("wk", "wv")
        connect_props = PahoProperties(PacketTypes.CONNECT)
        connect_props.SessionExpiryInterval = 60
        connect_props.ReceiveMaximum = 10
    client.will_set("will/topic", b"gone", qos=1, retain=True, properties=will_props)
    if v5:
        client.connect("127.0.0.1", listener.getsockname()[1], 30, properties=connect_props)
    else:
        client.connect("127.0.0.1", listener.getsockname()[1], 30)
    conn, _ = listener.accept()
    conn.setblocking(False)
    peer = Peer(client, conn)
    try:
        # CONNECT
        (connect,) = peer.expect()
        assert isinstance(connect, Connect)
        assert connect.protocol_level == level
        assert connect.protocol_name == ("MQIsdp" if level == 3 else "MQTT")
        assert (connect.client_id, connect.keepalive) == ("interop-1", 30)
        assert (connect.username, connect.password) == ("user", b"secret")
        assert connect.will is not None
        assert (connect.will.topic, connect.will.payload) == ("will/topic", b"gone")
        assert (connect.will.qos, connect.will.retain) == (1, True)
        assert peer.parser.protocol_level == level
        if v5:
            assert connect.properties == {"session_expiry_interval": 60, "receive_maximum": 10}
            assert connect.will.properties == {
                "will_delay_interval": 7,
                "user_property": [("wk", "wv")],
            }
        conn.sendall(encode_connack(False, 0, level, {"topic_alias_maximum": 0} if v5 else None))
        peer.pump(lambda: "connack" in events)
        assert events["connack"] == 0

        # SUBSCRIBE / SUBACK
        client.subscribe([("a/+", 1), ("b/#", 2)])
        (sub,) = peer.expect()
        assert isinstance(sub, Subscribe)
        assert [(s.topic_filter, s.qos) for s in sub.subscriptions] == [("a/+", 1), ("b/#", 2)]
        conn.sendall(encode_suback(sub.packet_id, [1, 0x80], level))
        peer.pump(lambda: "suback" in events)
        assert [int(c.value if hasattr(c, "value") else c) for c in events["suback"]] == [1, 0x80]

        # PUBLISH QoS 1 from the client
        props = None
        if v5:
            props = PahoProperties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = 30
            props.UserProperty = [("k", "1"), ("k", "2")]
            props.CorrelationData = b"\x00\x01"
        info = client.publish("a/b", b"\x00hello", qos=1, retain=False, properties=props)
        (pub,) = peer.expect()
        assert isinstance(pub, Publish)
        assert (pub.topic, pub.payload, pub.qos, pub.packet_id) == (
            "a/b",
            b"\x00hello",
            1,
            info.mid,
        )
        if v5:
            assert pub.properties == {
                "message_expiry_interval": 30,
                "user_property": [("k", "1"), ("k", "2")],
                "correlation_data": b"\x00\x01",
            }
        conn.sendall(encode_puback(pub.packet_id, level))
        peer.pump(lambda: "puback" in events)

        # PUBLISH QoS 1 to the client, PUBACK back
        out_props = {"subscription_identifier": [3], "content_type": "text/plain"} if v5 else None
        conn.sendall(encode_publish("a/x", "héllo".encode(), 1, True, False, 77, out_props, level))
        peer.pump(lambda: "message" in events)
        msg = events["message"]
        assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("a/x", "héllo".encode(), 1, True)
        if v5:
            assert msg.properties.ContentType == "text/plain"
            assert msg.properties.SubscriptionIdentifier == [3]
        (ack,) = peer.expect()
        assert ack == Puback(77)

        # UNSUBSCRIBE / UNSUBACK
        client.unsubscribe(["a/+", "b/#"])
        (unsub,) = peer.expect()
        assert isinstance(unsub, Unsubscribe)
        assert unsub.topic_filters == ["a/+", "b/#"]
        conn.sendall(encode_unsuback(unsub.packet_id, [0, 0x11], level))
        peer.pump(lambda: "unsuback" in events)

        client.disconnect()
        (disc,) = peer.expect()
        assert disc == Disconnect()
    finally:
        conn.close()
        client.loop(timeout=0.01)


def test_paho_v5_subscription_options(listener: socket.socket) -> None:
    from paho.mqtt.subscribeoptions import SubscribeOptions

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", listener.getsockname()[1], 0, clean_start=True)
    conn, _ = listener.accept()
    conn.setblocking(False)
    peer = Peer(client, conn)
    try:
        (connect,) = peer.expect()
        assert isinstance(connect, Connect) and connect.client_id == ""
        conn.sendall(encode_connack(False, 0, 5, {"assigned_client_identifier": "gen-1"}))
        opts = SubscribeOptions(qos=2, noLocal=True, retainAsPublished=True, retainHandling=2)
        sub_props = PahoProperties(PacketTypes.SUBSCRIBE)
        sub_props.SubscriptionIdentifier = 42
        client.subscribe("x/#", options=opts, properties=sub_props)
        (sub,) = peer.expect()
        assert isinstance(sub, Subscribe)
        assert sub.subscriptions == [Subscription("x/#", 2, True, True, 2)]
        assert sub.properties == {"subscription_identifier": 42}
    finally:
        conn.close()
        client.loop(timeout=0.01)
