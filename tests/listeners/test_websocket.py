"""``listener.ws.<name>`` / ``listener.wss.<name>``: MQTT over WebSocket.

paho-mqtt's websockets transport (MQTT 3.1.1 and 5, plain and TLS), trio-websocket as a raw
client packing several packets into one frame and splitting one packet over frames, and a
wsproto client for what neither can send: continuation frames, text frames, oversized frames.
Refusals (wrong path, no MQTT subprotocol, not an upgrade) get an HTTP error and one log line.
"""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
import trio
import trio_websocket
from wsproto.events import Ping

from plugin_host.mqtt import (
    Connack,
    Connect,
    Parser,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from plugin_host.settings import ListenerConfig
from plugin_host.testing import open_client, run_broker

FAILED = "websocket_handshake_failed"


def ws_listener(name: str = "web", **options) -> ListenerConfig:
    return ListenerConfig(kind="ws", name=name, host="127.0.0.1", port=0, **options)


def connect_bytes(client_id: str, level: int = 4) -> bytes:
    return encode(Connect(protocol_level=level, client_id=client_id), level)


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["v311", "v5"])
@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_paho_over_websocket(pki, paho, protocol, secure) -> None:
    listener = pki.listener(kind="wss", name="web") if secure else ws_listener()
    tls = pki.client_context() if secure else None
    async with run_broker(listeners=[listener]) as broker:
        sub = paho(broker.address, "sub", protocol=protocol, transport="websockets", tls=tls)
        pub = paho(broker.address, "pub", protocol=protocol, transport="websockets", tls=tls)
        assert await sub.connect() == 0
        assert await pub.connect() == 0
        await sub.subscribe("ws/t", 1)
        await pub.publish("ws/t", b"x" * 70000, 1)  # bigger than one 64 KiB read
        await pub.publish("ws/t", b"small", 0)
        assert (await sub.receive()).payload == b"x" * 70000
        assert (await sub.receive()).payload == b"small"
        status = broker.broker.listeners.show()[0]
        assert status.type == ("mqttwss" if secure else "mqttws")
        assert status.connections == 2
        await pub.disconnect()
        await sub.disconnect()


async def test_several_packets_in_one_frame_and_one_packet_over_frames() -> None:
    async with run_broker(listeners=[ws_listener()]) as broker:
        host, port = broker.address
        async with trio_websocket.open_websocket(
            host, port, "/mqtt", use_ssl=False, subprotocols=["mqtt"]
        ) as ws:
            assert ws.subprotocol == "mqtt"
            # CONNECT, SUBSCRIBE and a PUBLISH to itself: three packets, one frame.
            packed = (
                connect_bytes("packed")
                + encode(Subscribe(packet_id=1, subscriptions=[Subscription("f/#", 1)]), 4)
                + encode(Publish(topic="f/one", payload=b"first", qos=1, packet_id=2), 4)
            )
            await ws.send_message(packed)
            # One PUBLISH split over three frames (the header itself is cut).
            split = encode(Publish(topic="f/two", payload=b"second" * 100, qos=0), 4)
            for part in (split[:1], split[1:50], split[50:]):
                await ws.send_message(part)
            parser = Parser(server_side=False, protocol_level=4)
            got: list = []
            with trio.fail_after(10):
                while len([p for p in got if isinstance(p, Publish)]) < 2:
                    got.extend(parser.feed(await ws.get_message()))
            assert isinstance(got[0], Connack) and got[0].reason_code == 0
            assert isinstance(got[1], Suback) and got[1].reason_codes == [1]
            publishes = [p for p in got if isinstance(p, Publish)]
            assert [(p.topic, p.payload) for p in publishes] == [
                ("f/one", b"first"),
                ("f/two", b"second" * 100),
            ]


async def test_continuation_frames_and_ping(raw_ws) -> None:
    async with run_broker(listeners=[ws_listener()]) as broker:
        ws = await raw_ws.open(broker.address)
        data = connect_bytes("frag") + encode(
            Subscribe(packet_id=1, subscriptions=[Subscription("c", 0)]), 4
        )
        # One WebSocket message in four frames (first + three continuations).
        for start, end, fin in ((0, 3, False), (3, 10, False), (10, 20, False), (20, None, True)):
            await ws.send_frame(data[start:end], fin=fin)
        connack, suback = await ws.packets(2)
        assert isinstance(connack, Connack) and isinstance(suback, Suback)
        await ws.stream.send_all(ws.ws.send(Ping(payload=b"hi")))  # answered by the server
        await ws.send_frame(encode(Publish(topic="c", payload=b"after ping"), 4))
        (message,) = await ws.packets(1)
        assert message.payload == b"after ping"
        await ws.aclose()


async def test_max_ws_frame_size_in_both_directions(raw_ws, logs) -> None:
    async with run_broker(listeners=[ws_listener(max_ws_frame_size=100)]) as broker:
        ws = await raw_ws.open(broker.address)
        await ws.send_frame(connect_bytes("small-frames"))
        await ws.packets(1)
        await ws.send_frame(encode(Subscribe(packet_id=1, subscriptions=[Subscription("s")]), 4))
        await ws.packets(1)
        assert [len(f) for f in ws.frames] == [4, 5]  # one frame per flush: CONNACK, SUBACK
        big = encode(Publish(topic="s", payload=b"q" * 250), 4)
        for start in range(0, len(big), 100):  # within the limit: frames of at most 100 bytes
            await ws.send_frame(big[start : start + 100])
        (message,) = await ws.packets(1)
        assert message.payload == b"q" * 250
        # The delivery (256 bytes) went out as one flush, split at the frame limit.
        assert [len(f) for f in ws.frames[2:]] == [100, 100, 56]
        # A frame over the limit closes the WebSocket with 1009 (message too big).
        await ws.send_frame(encode(Publish(topic="s", payload=b"z" * 100), 4))
        assert await ws.wait_closed() == 1009
        (line,) = await logs.wait_for("websocket_protocol_error")
        assert line["code"] == 1009 and "larger than 100 bytes" in line["error"]


async def test_text_frame_is_a_protocol_error(raw_ws, logs) -> None:
    plain = ListenerConfig(kind="tcp", name="plain", host="127.0.0.1", port=0)
    async with run_broker(listeners=[ws_listener(), plain]) as broker:
        bystander_address = broker.listener_address("plain")
        async with open_client(bystander_address, client_id="bystander") as bystander:
            ws = await raw_ws.open(broker.address)
            await ws.send_frame(connect_bytes("texty"))
            await ws.packets(1)
            await ws.send_text("PUBLISH please")
            assert await ws.wait_closed() == 1003
            (line,) = await logs.wait_for("websocket_protocol_error")
            assert line["code"] == 1003 and "text frame" in line["error"]
            with trio.fail_after(10):
                await broker.broker.listeners.find("ws.web").idle.wait()  # its task is gone
            await bystander.sync()  # everyone else is fine


@pytest.mark.parametrize(
    "path, subprotocols, status, reason",
    [
        ("/other", ("mqtt",), 404, "no MQTT WebSocket endpoint at /other (use /mqtt)"),
        ("/mqtt", (), 400, "no MQTT subprotocol offered"),
        ("/mqtt", ("chat", "json"), 400, "unsupported subprotocol(s) chat, json"),
    ],
)
async def test_upgrade_refused(raw_ws, logs, path, subprotocols, status, reason) -> None:
    async with run_broker(listeners=[ws_listener()]) as broker:
        with pytest.raises(Exception) as info:
            await raw_ws.open(broker.address, path=path, subprotocols=subprotocols)
        assert info.value.status == status
        assert reason.encode() in info.value.body
        (line,) = await logs.wait_for(FAILED)
        assert reason in line["reason"] and line["peer"].startswith("127.0.0.1:")
        assert broker.broker.listeners.show()[0].handshake_failures == 1


async def test_trio_websocket_client_sees_the_refusal() -> None:
    async with run_broker(listeners=[ws_listener()]) as broker:
        host, port = broker.address
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket(
                host, port, "/nope", use_ssl=False, subprotocols=["mqtt"]
            ):
                pass
        assert info.value.status_code == 404


async def test_plain_http_request_gets_400(logs) -> None:
    async with run_broker(listeners=[ws_listener()]) as broker:
        stream = await trio.open_tcp_stream(*broker.address)
        await stream.send_all(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                response += chunk
        assert response.startswith(b"HTTP/1.1 400 ")
        (line,) = await logs.wait_for(FAILED)
        assert "not a WebSocket upgrade" in line["reason"]


async def test_mqttv31_subprotocol_and_mqtt_3_1(raw_ws) -> None:
    async with run_broker(listeners=[ws_listener()]) as broker:
        ws = await raw_ws.open(broker.address, subprotocols=("mqttv3.1",))
        assert ws.subprotocol == "mqttv3.1"
        await ws.send_frame(
            encode(Connect(protocol_name="MQIsdp", protocol_level=3, client_id="old"), 3)
        )
        (connack,) = await ws.packets(1)
        assert isinstance(connack, Connack) and connack.reason_code == 0
        await ws.aclose()


@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
async def test_connection_opts_forwarded_over_websocket(pki, raw_ws, recorder, secure) -> None:
    alice = pki.client("alice")
    if secure:
        listener = pki.listener(
            kind="wss", name="web", client_auth=True, forward_connection_opts=True
        )
        ctx = pki.client_context(alice)
    else:
        listener = ws_listener(forward_connection_opts=True)
        ctx = None
    async with run_broker(listeners=[listener], plugins={"rec": recorder}) as broker:
        ws = await raw_ws.open(broker.address, ssl_context=ctx)
        await ws.send_frame(connect_bytes("w"))
        await ws.packets(1)
        await ws.aclose()
        port = broker.address[1]
    args = recorder.last("w")
    assert args["listener_type"] == ("mqttwss" if secure else "mqttws")
    assert (args["listener_addr"], args["listener_port"]) == ("127.0.0.1", port)
    assert args["client_cert"] == (pki.der(alice) if secure else None)
