"""Certificates (and CRLs) reloaded without dropping anyone: ``broker.reload()`` (what the
SIGHUP handler calls) in-process, and a real SIGHUP sent to a ``plugin-host serve`` process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trustme

from plugin_host import hookimpl
from plugin_host.testing import open_client, run_broker


async def _peer_der(client: Any) -> bytes:
    return client.stream.getpeercert(binary_form=True)


async def test_reload_swaps_the_certificate_for_new_handshakes_only(pki, paho, logs) -> None:
    async with run_broker(listeners=[pki.listener()]) as broker:
        address = broker.address
        first_server = pki.server
        async with open_client(address, client_id="old", ssl_context=pki.client_context()) as old:
            assert await old.subscribe("r", qos=1) == [1]
            assert await _peer_der(old) == pki.der(first_server)

            new_ca = trustme.CA()
            new_server = pki.write_server(new_ca)
            report = await broker.broker.reload()
            assert report == {"listeners": {"ssl.tls": "reloaded"}}
            assert broker.broker.listeners.show()[0].tls_reloads == 1
            await logs.wait_for("tls_reloaded")

            # A new client sees the new certificate ...
            ctx = pki.client_context(trust=new_ca)
            async with open_client(address, client_id="new", ssl_context=ctx) as new:
                assert await _peer_der(new) == pki.der(new_server)
                await new.publish("r", b"to the old connection", qos=1)
                # ... and the client connected before the reload is still there.
                assert (await old.receive()).payload == b"to the old connection"
            # A client that only trusts the old CA now fails to verify the server.
            assert not await paho(address, "stale", tls=pki.client_context()).try_connect()


async def test_failed_reload_keeps_the_previous_certificate(pki, logs) -> None:
    async with run_broker(listeners=[pki.listener()]) as broker:
        pki.certfile.write_text("half-written garbage")
        report = await broker.broker.reload()
        outcome = report["listeners"]["ssl.tls"]
        assert outcome.startswith("kept previous certificates: ")
        assert "listener.ssl.tls.certfile" in outcome
        (line,) = await logs.wait_for("tls_reload_failed")
        assert line["listener"] == "tls"
        ctx = pki.client_context()
        async with open_client(broker.address, client_id="c", ssl_context=ctx) as client:
            assert await _peer_der(client) == pki.der(pki.server)


async def test_reloaded_crl_refuses_new_handshakes_of_a_revoked_client(pki, paho, logs) -> None:
    alice = pki.client("alice")
    crl = pki.write_crl(pki.dir / "crl.pem")  # revokes nobody yet
    listener = pki.listener(client_auth=True, require_certificate=True, crlfile=crl)
    async with run_broker(listeners=[listener]) as broker:
        ctx = pki.client_context(alice)
        async with open_client(broker.address, client_id="alice", ssl_context=ctx) as connected:
            pki.write_crl(crl, alice)
            await broker.broker.reload()
            assert not await paho(broker.address, "alice2", tls=ctx).try_connect()
            (line,) = await logs.wait_for("tls_handshake_failed")
            assert "revoked" in line["reason"]
            await connected.sync()  # the session that was already up is not cut


class Reloadable:
    """A plugin that registers a sync and an async reload callback in its lifespan."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def plugin_host_lifespan(self, host: Any) -> Any:
        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            def sync_reload() -> str:
                self.calls.append("sync")
                return "done"

            async def async_reload() -> str:
                await trio.lowlevel.checkpoint()
                self.calls.append("async")
                return "async done"

            unregister = [host.on_reload(sync_reload), host.on_reload(async_reload)]
            try:
                yield
            finally:
                for remove in unregister:
                    remove()

        return lifespan()


async def test_plugins_register_reload_callbacks(pki) -> None:
    plugin = Reloadable()
    async with run_broker(listeners=[pki.listener()], plugins={"mine": plugin}) as broker:
        report = await broker.broker.reload()
        assert plugin.calls == ["sync", "async"]
        assert report["listeners"] == {"ssl.tls": "reloaded"}
        assert report["mine"] == "async done"  # (both are named after the plugin)
        assert sorted(broker.broker.reloads.names) == ["listeners", "mine", "mine"]
    assert broker.broker.reloads.names == ["listeners"]  # unregistered at lifespan exit


# --------------------------------------------------------------------------------------------
# A real SIGHUP to a real process


class ServeProcess:
    """``plugin-host serve --config FILE`` with JSON logs read as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._changed = trio.Event()

    async def read(self) -> None:
        buffer = b""
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some(65536):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for raw in complete:
                line = raw.decode()
                self.lines.append(line)
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    continue
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_for(self, event: str) -> dict[str, Any]:
        with trio.fail_after(30):
            while True:
                for entry in self.events:
                    if entry.get("event") == event:
                        return entry
                assert self.process.returncode is None, "\n".join(self.lines)
                await self._changed.wait()


async def test_real_sighup_reloads_certificates_in_a_serve_process(pki, tmp_path) -> None:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        "allow_anonymous = on\n"
        "listener.ssl.secure = 127.0.0.1:0\n"
        f"listener.ssl.secure.certfile = {pki.certfile}\n"
        f"listener.ssl.secure.keyfile = {pki.keyfile}\n"
    )
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-c",
            "from plugin_host.cli import main; main()",
            "serve",
            "--config",
            str(conf),
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    serve = ServeProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve.read)
            listening = await serve.wait_for("listening")
            address = (listening["host"], listening["port"])
            ctx = pki.client_context()
            async with open_client(address, client_id="before", ssl_context=ctx) as before:
                await before.subscribe("s", qos=1)
                new_ca = trustme.CA()
                new_server = pki.write_server(new_ca)
                process.send_signal(signal.SIGHUP)
                await serve.wait_for("tls_reloaded")
                new_ctx = pki.client_context(trust=new_ca)
                async with open_client(address, client_id="after", ssl_context=new_ctx) as after:
                    assert await _peer_der(after) == pki.der(new_server)
                    await after.publish("s", b"across the reload", qos=1)
                    assert (await before.receive()).payload == b"across the reload"
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Traceback" not in "\n".join(serve.lines)
    assert process.returncode == 0


def test_plugin_host_without_reloads_says_so() -> None:
    """A host that cannot reload (a test double) makes on_reload raise, so a plugin can fall
    back to its own SIGHUP receiver (the diversity plugin does)."""
    from plugin_host.plugins.lifespans import PluginHost

    view = PluginHost(object(), "p", lambda: None)  # type: ignore[arg-type]
    with pytest.raises(NotImplementedError):
        view.on_reload(lambda: None)
