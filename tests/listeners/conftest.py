"""Helpers for the listener tests: trustme PKI files, listener configs, log and WebSocket tools.

paho-mqtt clients (TCP, TLS, WebSocket) come from the ``paho`` fixture of
``plugin_host.testing.pytest_plugin`` (:class:`plugin_host.testing.PahoClient`).
"""

from __future__ import annotations

import contextlib
import datetime
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from structlog.testing import capture_logs
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from plugin_host.hooks.forward import forward_hooks
from plugin_host.mqtt import Parser
from plugin_host.settings import ListenerConfig

WAIT = 10.0


# --------------------------------------------------------------------------------------------
# PKI


@dataclass
class PKI:
    """A CA, a server certificate for 127.0.0.1/localhost, and files for the listener."""

    dir: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    certfile: Path = field(init=False)
    keyfile: Path = field(init=False)
    cafile: Path = field(init=False)
    server: trustme.LeafCert = field(init=False)

    def __post_init__(self) -> None:
        self.certfile = self.dir / "server.pem"
        self.keyfile = self.dir / "server.key"
        self.cafile = self.dir / "ca.pem"
        self.write_server(self.ca)

    def write_server(self, ca: trustme.CA) -> trustme.LeafCert:
        """Issue a server certificate from ``ca`` and (over)write the listener's files."""
        self.server = ca.issue_cert("127.0.0.1", "localhost")
        self.server.private_key_pem.write_to_path(str(self.keyfile))
        # The chain file: leaf first (what the listener presents).
        self.certfile.write_bytes(b"".join(p.bytes() for p in self.server.cert_chain_pems))
        self.ca.cert_pem.write_to_path(str(self.cafile))
        return self.server

    def client(self, cn: str, ca: trustme.CA | None = None) -> trustme.LeafCert:
        """A client certificate with subject CN ``cn`` (from the PKI's CA unless ``ca``)."""
        return (ca or self.ca).issue_cert(f"{cn}.clients.test", common_name=cn)

    def listener(self, kind: str = "ssl", name: str = "tls", **options: Any) -> ListenerConfig:
        """A TLS listener config on 127.0.0.1:0 with these files; ``client_auth=True`` adds
        the CA file (client certificates are asked for)."""
        opts: dict[str, Any] = {"certfile": self.certfile, "keyfile": self.keyfile}
        if options.pop("client_auth", False):
            opts["cafile"] = self.cafile
        opts.update(options)
        return ListenerConfig(kind=kind, name=name, host="127.0.0.1", port=0, **opts)  # type: ignore[arg-type]

    def client_context(
        self, cert: trustme.LeafCert | None = None, *, trust: trustme.CA | None = None
    ) -> ssl.SSLContext:
        """A client context trusting ``trust`` (the PKI's CA), presenting ``cert`` if given."""
        ctx = ssl.create_default_context()
        (trust or self.ca).configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx

    def write_crl(self, path: Path, *revoked: trustme.LeafCert) -> Path:
        """A PEM CRL of the PKI's CA revoking ``revoked`` (empty: a valid CRL revoking none)."""
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())
        ca_key: Any = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), None)
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now - datetime.timedelta(minutes=1))
            .next_update(now + datetime.timedelta(days=1))
        )
        for leaf in revoked:
            serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - datetime.timedelta(minutes=1))
                .build()
            )
        crl = builder.sign(ca_key, hashes.SHA256())
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return path

    @staticmethod
    def der(leaf: trustme.LeafCert) -> bytes:
        """The DER bytes of a trustme leaf certificate."""
        return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return PKI(tmp_path)


# --------------------------------------------------------------------------------------------
# An auth plugin recording what auth_on_register sees


@forward_hooks(("auth_on_register", "auth_on_register_m5"), to="_record", awaits=False)
class RegisterRecorder:
    """Records auth_on_register(_m5) arguments (``v5`` says which); allows everyone."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.event = trio.Event()

    def _record(self, hook: str, args: dict[str, Any]) -> bool:
        self.calls.append({**args, "v5": hook == "auth_on_register_m5"})
        self.event.set()
        return True

    def last(self, client_id: str) -> dict[str, Any]:
        """The arguments of the last register call of ``client_id``."""
        for call in reversed(self.calls):
            if call["client_id"] == client_id:
                return call
        raise AssertionError(f"auth_on_register not called for {client_id}: {self.calls}")


@pytest.fixture
def recorder() -> RegisterRecorder:
    return RegisterRecorder()


# --------------------------------------------------------------------------------------------
# Waiting for log lines (the broker runs in the test's trio run: events, no polling)


class LogWatch:
    """Captured structlog lines; ``await wait_for(event, count)`` wakes on each new line."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def processor(self, logger: Any, method: str, event_dict: Any) -> Any:
        changed, self._changed = self._changed, trio.Event()
        # Logged from a worker thread (no trio context): the next line wakes the waiters.
        with contextlib.suppress(RuntimeError):
            changed.set()
        return event_dict

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["event"] == event]

    async def wait_for(self, event: str, count: int = 1) -> list[dict[str, Any]]:
        with trio.fail_after(WAIT):
            while len(self.of(event)) < count:
                await self._changed.wait()
        return self.of(event)


@pytest.fixture
def logs() -> Iterator[LogWatch]:
    watch = LogWatch()
    with capture_logs(processors=[watch.processor]) as entries:
        watch.entries = entries
        yield watch


# --------------------------------------------------------------------------------------------
# A raw WebSocket client (wsproto): exact control over frames, fragments and frame types


class WebSocketRejected(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class RawWebSocket:
    """A client WebSocket over TCP or TLS that sends and reads individual frames."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, subprotocol: str | None):
        self.stream = stream
        self.ws = ws
        self.subprotocol = subprotocol
        self.parser = Parser(server_side=False, protocol_level=4)
        self.frames: list[bytes] = []  # payloads of complete binary frames received
        self._frame = bytearray()
        self.close_code: int | None = None
        self._packets: list[Any] = []

    @classmethod
    async def open(
        cls,
        address: tuple[str, int],
        *,
        path: str = "/mqtt",
        subprotocols: tuple[str, ...] = ("mqtt",),
        ssl_context: ssl.SSLContext | None = None,
        prefix: bytes = b"",
    ) -> RawWebSocket:
        """Connect, send ``prefix`` (a PROXY header), TLS if asked, then the upgrade."""
        stream: trio.abc.Stream = await trio.open_tcp_stream(*address)
        if prefix:
            await stream.send_all(prefix)
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_hostname=address[0])
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(
            host=f"{address[0]}:{address[1]}", target=path, subprotocols=list(subprotocols)
        )
        await stream.send_all(ws.send(request))
        status, body = 0, b""
        with trio.fail_after(WAIT):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except trio.BrokenResourceError:
                    data = b""
                if not data:  # closed without an HTTP answer
                    raise WebSocketRejected(status, body)
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        return cls(stream, ws, event.subprotocol)
                    if isinstance(event, RejectConnection):
                        status = event.status_code
                        if not event.has_body:
                            raise WebSocketRejected(status, b"")
                    elif isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished:
                            raise WebSocketRejected(status, body)

    async def send_frame(self, data: bytes, *, fin: bool = True) -> None:
        """One binary frame (``fin=False``: a fragment; the next frames continue it)."""
        await self.stream.send_all(self.ws.send(BytesMessage(data=data, message_finished=fin)))

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))

    async def _read(self) -> bool:
        data = await self.stream.receive_some(65536)
        if not data:
            return False
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, BytesMessage):
                self._frame += event.data
                self._packets.extend(self.parser.feed(event.data))
                if event.frame_finished:
                    self.frames.append(bytes(self._frame))
                    self._frame.clear()
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                if self.ws.state is ConnectionState.REMOTE_CLOSING:
                    await self.stream.send_all(self.ws.send(event.response()))
                return False
        return True

    async def packets(self, count: int) -> list[Any]:
        """The next ``count`` MQTT packets from the server."""
        with trio.fail_after(WAIT):
            while len(self._packets) < count:
                assert await self._read(), f"closed ({self.close_code}) after {self._packets}"
        out, self._packets = self._packets[:count], self._packets[count:]
        return out

    async def wait_closed(self) -> int | None:
        """Read until the server closes; the WebSocket close code (None: no close frame)."""
        with trio.fail_after(WAIT):
            while await self._read():
                pass
        return self.close_code

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


@pytest.fixture
def raw_ws() -> type[RawWebSocket]:
    return RawWebSocket
