"""Per-listener limits for every kind, and starting/stopping listeners while the server runs.

``broker.listeners`` (a ListenerManager) is what the admin API calls: ``show()``,
``stop(id, kill_sessions=...)``, ``start(id)``. Stopping one listener never touches another
listener's clients; without ``kill_sessions`` it does not touch its own either.
"""

from __future__ import annotations

import contextlib
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from plugin_host.listeners.manager import ListenerError
from plugin_host.mqtt import Connack, Connect, encode
from plugin_host.settings import ListenerConfig
from plugin_host.testing import open_client, run_broker

KINDS = ["tcp", "ssl", "ws", "wss"]


def make_listener(pki, kind: str, name: str = "l", **options) -> ListenerConfig:
    if kind in ("ssl", "wss"):
        return pki.listener(kind=kind, name=name, **options)
    return ListenerConfig(kind=kind, name=name, host="127.0.0.1", port=0, **options)


@asynccontextmanager
async def connected(pki, raw_ws, kind: str, address, client_id: str, level: int = 4):
    """CONNECT over any listener kind; yields the CONNACK, or None if the server closed first."""
    name = "MQIsdp" if level == 3 else "MQTT"
    connect = encode(Connect(protocol_name=name, protocol_level=level, client_id=client_id), 4)
    ctx = pki.client_context() if kind in ("ssl", "wss") else None
    async with AsyncExitStack() as stack:
        connack = None
        if kind in ("ws", "wss"):
            try:
                ws = await raw_ws.open(address, ssl_context=ctx)
            except Exception:  # refused before the upgrade completed
                ws = None
            if ws is not None:
                stack.push_async_callback(ws.aclose)
                await ws.send_frame(connect)
                with contextlib.suppress(AssertionError):  # closed before a CONNACK
                    (connack,) = await ws.packets(1)
        else:
            try:  # a refused TLS client breaks in its first send (grouped by its nursery)
                client = await stack.enter_async_context(
                    open_client(
                        address,
                        client_id=client_id,
                        protocol=level,
                        ssl_context=ctx,
                        check_connack=False,
                    )
                )
                connack = client.connack
            except* trio.BrokenResourceError:
                pass
        yield connack


@pytest.mark.parametrize("kind", KINDS)
async def test_max_connections_per_listener(pki, raw_ws, logs, kind) -> None:
    limited = make_listener(pki, kind, "limited", max_connections=1)
    other = ListenerConfig(kind="tcp", name="other", host="127.0.0.1", port=0)
    async with run_broker(listeners=[limited, other]) as broker:
        address = broker.listener_address("limited")
        status = broker.broker.listeners.find("limited")
        async with connected(pki, raw_ws, kind, address, "first") as first:
            assert isinstance(first, Connack) and first.reason_code == 0
            async with connected(pki, raw_ws, kind, address, "second") as second:
                assert second is None  # closed before any MQTT (or TLS, or HTTP) was spoken
            (line,) = await logs.wait_for("connection_rejected")
            assert line["listener"] == "limited" and line["reason"] == "max_connections"
            # The limit is per listener: the other one takes clients.
            async with open_client(broker.listener_address("other"), client_id="o"):
                pass
            assert (status.active, status.rejected) == (1, 1)
        with trio.fail_after(10):
            await status.idle.wait()
        async with connected(pki, raw_ws, kind, address, "third") as third:
            assert isinstance(third, Connack) and third.reason_code == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_allowed_protocol_versions_per_listener(pki, raw_ws, kind) -> None:
    only_311 = make_listener(pki, kind, "v311", allowed_protocol_versions=frozenset({4}))
    async with run_broker(listeners=[only_311]) as broker:
        async with connected(pki, raw_ws, kind, broker.address, "new", level=4) as ok:
            assert isinstance(ok, Connack) and ok.reason_code == 0
        async with connected(pki, raw_ws, kind, broker.address, "old", level=3) as refused:
            assert isinstance(refused, Connack) and refused.reason_code == 1  # bad version


def two_listeners() -> list[ListenerConfig]:
    return [
        ListenerConfig(kind="tcp", name="a", host="127.0.0.1", port=0),
        ListenerConfig(kind="tcp", name="b", host="127.0.0.1", port=0),
    ]


async def test_show() -> None:
    async with run_broker(listeners=two_listeners()) as broker:
        rows = broker.broker.listeners.show()
        assert [(r.id, r.state, r.type) for r in rows] == [
            ("tcp.a", "running", "mqtt"),
            ("tcp.b", "running", "mqtt"),
        ]
        row = rows[0].as_dict()
        assert row["addresses"] == [f"127.0.0.1:{broker.listener_address('a')[1]}"]
        assert row["allowed_protocol_versions"] == [3, 4, 5, 131]
        assert row["max_connections"] is None and row["tls_reloads"] is None


async def test_stop_and_start_one_listener_without_touching_the_other() -> None:
    async with run_broker(listeners=two_listeners()) as broker:
        listeners = broker.broker.listeners
        a, b = broker.listener_address("a"), broker.listener_address("b")
        async with (
            open_client(a, client_id="on-a") as on_a,
            open_client(b, client_id="on-b") as on_b,
        ):
            await on_b.subscribe("x", qos=1)
            status = await listeners.stop("tcp.a")
            assert status.state == "stopped" and status.connections == 1
            # New clients are refused by the OS; connected ones carry on, on both listeners.
            with pytest.raises(OSError):
                await trio.open_tcp_stream(*a)
            await on_a.publish("x", b"still here", qos=1)
            assert (await on_b.receive()).payload == b"still here"
            assert (await listeners.stop("a")).state == "stopped"  # idempotent
            status = await listeners.start("tcp.a")
            assert status.state == "running" and status.addresses == ((a[0], a[1]),)
            async with open_client(a, client_id="again"):
                pass
            assert (await listeners.start("tcp.a")).state == "running"  # idempotent


async def test_stop_with_kill_sessions_disconnects_only_that_listener() -> None:
    async with run_broker(listeners=two_listeners()) as broker:
        listeners = broker.broker.listeners
        a, b = broker.listener_address("a"), broker.listener_address("b")
        async with (
            open_client(a, client_id="a5", protocol=5) as a5,
            open_client(a, client_id="a3") as a3,
            open_client(b, client_id="b5", protocol=5) as b5,
        ):
            status = await listeners.stop("tcp.a", kill_sessions=True)
            assert status.connections == 0  # stop waited for them
            await a5.wait_closed()
            await a3.wait_closed()
            assert a5.server_disconnect is not None
            assert a5.server_disconnect.reason_code == 0x98  # administrative action
            await b5.sync()
            assert not b5.closed.is_set()


async def test_unknown_and_ambiguous_listener_names(pki) -> None:
    listeners = [
        ListenerConfig(kind="tcp", name="default", host="127.0.0.1", port=0),
        pki.listener(kind="ssl", name="default"),
    ]
    async with run_broker(listeners=listeners) as broker:
        manager = broker.broker.listeners
        with pytest.raises(ListenerError, match="no listener 'nope'"):
            await manager.stop("nope")
        with pytest.raises(ListenerError, match="ambiguous"):
            await manager.stop("default")
        port = broker.listener_address("default")[1]
        assert manager.find(f"127.0.0.1:{port}").kind == "tcp"
        assert manager.find("ssl.default").kind == "ssl"


async def test_start_fails_cleanly_when_the_port_was_taken() -> None:
    async with run_broker(listeners=two_listeners()) as broker:
        listeners = broker.broker.listeners
        await listeners.stop("tcp.a")
        host, port = broker.listener_address("a")
        squatter = trio.socket.socket()
        await squatter.bind((host, port))
        squatter.listen()
        try:
            with pytest.raises(ListenerError, match="cannot listen on"):
                await listeners.start("tcp.a")
            assert listeners.find("tcp.a").state == "stopped"
        finally:
            squatter.close()
        assert (await listeners.start("tcp.a")).state == "running"
