"""Shared helpers for the diversity plugin tests.

The plugin is exercised through its hookimpls inside its real lifespan, with real Lua states,
real scripts on disk (``tests/scripts`` in VerneMQ's style, copied next to a generated
``settings.lua`` module), real HTTPS servers with trustme certificates.

``RecordingHost`` stands in for the broker's ``Host`` object (the broker is not under test
here): it records disconnects and ``hooks_changed`` calls and answers session look-ups.
"""

from __future__ import annotations

import queue
import shutil
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trustme

from plugin_host.hooks.api import SessionInfo
from plugin_host.settings import Config, PluginSection, PluginSettings
from plugin_host_diversity.plugin import DiversityPlugin
from plugin_host_diversity.runtime import Later
from plugin_host_diversity.translate import HOOK_ARGS

SCRIPTS = Path(__file__).parent / "scripts"


@dataclass
class RecordingHost:
    """A minimal broker-side ``Host`` for plugin-level tests."""

    on_error: str = "deny"
    disconnects: list[tuple[str, str, bool]] = field(default_factory=list)
    known_clients: set[tuple[str, str]] = field(default_factory=set)
    online: set[tuple[str, str]] = field(default_factory=set)
    hooks_changed_calls: int = 0
    #: Set (and replaced) every time the plugin says its active hooks changed.
    hooks_changed_event: trio.Event = field(default_factory=trio.Event)
    reauthorized: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def log(self) -> Any:
        return structlog.get_logger("test").bind(plugin="diversity")

    @property
    def config(self) -> Config:
        return Config(plugins={"diversity": PluginSettings("diversity", on_error=self.on_error)})  # type: ignore[arg-type]

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, do_cleanup: bool = False
    ) -> bool:
        self.disconnects.append((mountpoint, client_id, do_cleanup))
        return (mountpoint, client_id) in self.known_clients

    async def reauthorize_subscriptions(
        self, client_id: str, mountpoint: str, username: str | None
    ) -> None:
        self.reauthorized.append((mountpoint, client_id, username))

    def sessions(self) -> list[SessionInfo]:
        return [self.session(c, m) for m, c in self.known_clients]  # type: ignore[misc]

    def session(self, client_id: str, mountpoint: str = "") -> SessionInfo | None:
        if (mountpoint, client_id) not in self.known_clients:
            return None
        return SessionInfo(
            client_id=client_id,
            mountpoint=mountpoint,
            username=None,
            online=(mountpoint, client_id) in self.online,
            protocol_level=4,
            clean_session=True,
        )

    def hooks_changed(self) -> None:
        self.hooks_changed_calls += 1
        self.hooks_changed_event.set()
        self.hooks_changed_event = trio.Event()


def script_dir(
    tmp_path: Path, *names: str, settings: dict[str, Any] | None = None, **inline: str
) -> Path:
    """A fresh script directory: copies of ``tests/scripts/<name>.lua``, inline scripts
    (``name="lua source"``) and, with ``settings``, a ``settings.lua`` module returning them.
    """
    directory = tmp_path / "lua"
    directory.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(SCRIPTS / f"{name}.lua", directory / f"{name}.lua")
    for name, source in inline.items():
        (directory / f"{name}.lua").write_text(source)
    if settings is not None:
        lines = ["return {"]
        for key, value in settings.items():
            lines.append(f"  {key} = {lua_literal(value)},")
        lines.append("}")
        (directory / "lib").mkdir(exist_ok=True)
        (directory / "lib" / "settings.lua").write_text("\n".join(lines) + "\n")
    return directory


def lua_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


class Awaiting:
    """A test's view of a running :class:`DiversityPlugin`: every hook call can be awaited.

    The hookimpls answer at once when no script waits for I/O and return a ``Later`` to
    await otherwise (as the host expects); this view awaits when needed. Everything else is
    the plugin's own attributes.
    """

    def __init__(self, plugin: DiversityPlugin) -> None:
        self.plugin = plugin

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.plugin, name)
        if name not in HOOK_ARGS:
            return attribute

        async def call(*args: Any) -> Any:
            result = attribute(*args)
            return await result if isinstance(result, Later) else result

        return call


@asynccontextmanager
async def running(
    values: dict[str, Any] | None = None,
    *,
    host: RecordingHost | None = None,
    plugin: DiversityPlugin | None = None,
) -> AsyncIterator[Any]:
    """Run a plugin instance's lifespan with the given ``diversity.*`` values."""
    plugin = plugin or DiversityPlugin()
    section_values = {"reload_on_sighup": False, **(values or {})}
    section = PluginSection(plugin="diversity", values=section_values)
    async with plugin.plugin_host_lifespan(host or RecordingHost(), section):
        yield Awaiting(plugin)


async def register(
    plugin: DiversityPlugin,
    client_id: str = "client-1",
    username: str | None = "alice",
    password: bytes | None = b"secret",
    *,
    m5: bool = False,
    mountpoint: str = "",
    properties: dict[str, Any] | None = None,
) -> Any:
    """Call auth_on_register(_m5) as the broker would."""
    if m5:
        return await plugin.auth_on_register_m5(
            "127.0.0.1", 50000, mountpoint, client_id, username, password, True,
            properties or {}, None, None, None, None,
        )  # fmt: skip
    return await plugin.auth_on_register(
        "127.0.0.1", 50000, mountpoint, client_id, username, password, True, None, None, None, None
    )


@dataclass
class TLSFiles:
    """PEM files on disk: a private CA, and a client certificate it issued."""

    ca: trustme.CA
    cafile: Path
    certfile: Path
    keyfile: Path


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> TLSFiles:
    client = ca.issue_cert("lua-client@example.test", common_name="lua-client")
    certs = tmp_path / "certs"
    certs.mkdir()
    cafile = certs / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    certfile = certs / "client.pem"
    client.cert_chain_pems[0].write_to_path(str(certfile))
    keyfile = certs / "client.key"
    client.private_key_pem.write_to_path(str(keyfile))
    return TLSFiles(ca, cafile, certfile, keyfile)


# Test files cannot import each other (importlib import mode): helpers are fixtures.


@pytest.fixture
def lua_dir(tmp_path: Path) -> Any:
    """``lua_dir(*script_names, settings=None, **inline_scripts) -> Path``."""

    def make(*names: str, settings: dict[str, Any] | None = None, **inline: str) -> Path:
        return script_dir(tmp_path, *names, settings=settings, **inline)

    return make


@pytest.fixture
def run() -> Any:
    """``run(values, host=..., plugin=...)``: an async context manager yielding the plugin."""
    return running


@pytest.fixture(name="register")
def register_fixture() -> Any:
    """``await register(plugin, client_id, username, password, m5=False, ...)``."""
    return register


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


# --- paho-mqtt clients for the end-to-end tests ---------------------------------------------

PAHO_WAIT = 10.0


class PahoClient:
    """paho-mqtt (an independent MQTT implementation) driven from trio tests.

    paho runs its network loop in its own thread; callbacks put results in thread-safe
    queues/events and the test waits for them in a worker thread (never by sleeping).
    """

    def __init__(
        self,
        address: tuple[str, int],
        client_id: str,
        *,
        v5: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.address = address
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.connack = queue.Queue[Any]()
        self.messages = queue.Queue[Any]()
        self.subacks: dict[int, queue.Queue[Any]] = {}
        self.pubacks: dict[int, queue.Queue[Any]] = {}
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda client, userdata, message: self.messages.put(message)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = lambda *args: self.disconnected.set()

    def _slot(self, table: dict[int, queue.Queue[Any]], mid: int) -> queue.Queue[Any]:
        with self._lock:
            return table.setdefault(mid, queue.Queue())

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            client.disconnect()  # no reconnection attempts after a refusal
        self.connack.put(rc)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._slot(self.subacks, mid).put([getattr(rc, "value", rc) for rc in rcs])

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._slot(self.pubacks, mid).put(getattr(rc, "value", rc))

    async def _wait(self, slot: queue.Queue[Any], what: str) -> Any:
        try:
            return await trio.to_thread.run_sync(slot.get, True, PAHO_WAIT)
        except queue.Empty:
            raise AssertionError(f"no {what} within {PAHO_WAIT} s") from None

    async def connect(self) -> int:
        """Connect; the CONNACK reason code (paho reports MQTT 3 codes by their v5 names)."""
        self.client.connect(*self.address)
        self.client.loop_start()
        return (await self._wait(self.connack, "CONNACK")).value

    async def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        _, mid = self.client.subscribe(topic, qos)
        return await self._wait(self._slot(self.subacks, mid), "SUBACK")

    async def publish(self, topic: str, payload: bytes, qos: int = 1, **kwargs: Any) -> int:
        """Publish; for QoS > 0 the PUBACK reason code (0 = accepted)."""
        info = self.client.publish(topic, payload, qos, **kwargs)
        if qos == 0:
            return 0
        return await self._wait(self._slot(self.pubacks, info.mid), "PUBACK")

    async def receive(self) -> Any:
        return await self._wait(self.messages, "message")

    async def wait_disconnected(self) -> None:
        if not await trio.to_thread.run_sync(self.disconnected.wait, PAHO_WAIT):
            raise AssertionError("still connected")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def paho() -> Any:
    """``paho(address, client_id, v5=..., username=..., password=...)``, stopped at teardown."""
    clients: list[PahoClient] = []

    def make(*args: Any, **kwargs: Any) -> PahoClient:
        client = PahoClient(*args, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.stop()
