"""The brokers under test (one list, ``VARIANTS``) and how to start, watch and stop them.

A *variant* is one broker set-up: a name, the command that starts it, the text of its config
file, optional extra files (a plugins directory, Lua scripts) and an optional ``setup`` context
manager for helper processes (a webhook HTTP server, ...). Every variant is started fresh for
every scenario, on an ephemeral loopback port written into its config, pinned to its own CPU.

To compare a plugin-host feature, add a variant (the ``plugin-host+pyhook`` entry below is
the pattern: same family, extra command-line arguments and files, ``ratio_to=("plugin-host",)``
for a ratio column, ``default=False`` to run only when named in ``--brokers``). A plugin's own
benchmark script may instead ``brokers.VARIANTS.extend([...])`` and call ``compare.main(argv)``.
A ``setup(ctx)`` context manager runs before the broker starts and is left after it stopped;
it may start helper processes with ``ctx.spawn_helper(argv, log_name)`` (killed with the run)
and put values into ``ctx.values`` for the config text, e.g. a webhook server's port.

Config texts and files are ``string.Template`` texts: ``${host}``, ``${port}``, ``${workdir}``
and whatever a ``setup`` put into ``ctx.values`` (write ``$$`` for a literal ``$``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire
from procstat import PidProbe

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
AMQTT_SPEC = "amqtt==0.12.1"  # the version the harness was validated with; --amqtt-spec overrides


class BrokerError(Exception):
    """A broker could not be started (or is not available on this machine)."""


@dataclass
class RunContext:
    """Everything one broker run needs; ``setup`` hooks may add ``values`` and processes."""

    workdir: Path
    host: str
    port: int
    tools: Tools
    values: dict[str, str] = field(default_factory=dict)
    config_path: Path = Path()
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cpus: list[int] = field(default_factory=list)  # CPUs for helper processes (load side)

    def tool(self, family: str) -> list[str]:
        return self.tools.command(family)

    def template_values(self) -> dict[str, str]:
        return {
            "host": self.host,
            "port": str(self.port),
            "workdir": str(self.workdir),
            **self.values,
        }

    def spawn_helper(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        """Start a helper process (killed with the broker run, whatever happens)."""
        log = open(self.workdir / log_name, "wb")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            argv,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(self.cpus),  # noqa: PLW1509 - the driver has no threads
        )
        log.close()
        self.helpers.append(proc)
        return proc


@dataclass(frozen=True)
class Variant:
    """One broker set-up under test (see the module docstring)."""

    name: str
    family: str  # "plugin-host" | "amqtt" | "mosquitto": which tool and version it uses
    command: Callable[[RunContext], list[str]]
    config_name: str
    config_text: str
    files: dict[str, str] = field(default_factory=dict)
    setup: Callable[[RunContext], contextlib.AbstractContextManager[None]] | None = None
    ratio_to: tuple[str, ...] = ()  # table columns "<name>/<other>" when both ran
    default: bool = True  # run when --brokers is not given
    description: str = ""
    # installed third-party plugins to keep enabled (plugin-host family): every other one is
    # switched off, and so is any whose section the config text does not configure, so that a
    # baseline measures the broker, not whatever plugins happen to be installed
    plugins: tuple[str, ...] = ()


PLUGIN_HOST_CONF = """\
# plugin-host under benchmark: one loopback listener, anonymous clients, everything else default;
# installed third-party plugins that this variant does not configure are off
listener.tcp.bench = ${host}:${port}
allow_anonymous = on
${plugins_off}
"""

AMQTT_YAML = """\
# amqtt under benchmark: one loopback listener, anonymous clients, no logging/$$SYS plugins
listeners:
  default:
    type: tcp
    bind: ${host}:${port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
"""

MOSQUITTO_CONF = """\
# mosquitto under benchmark: one loopback listener, anonymous clients, no persistence, and
# TCP_NODELAY as asyncio (amqtt) and trio (plugin-host) set it; everything else default
listener ${port} ${host}
allow_anonymous true
persistence false
max_connections -1
set_tcp_nodelay true
"""

PYHOOK_PLUGIN = '''\
"""A trivial auth_on_publish hook: the cost of calling one Python hook per message."""

from plugin_host import hookimpl


@hookimpl
def auth_on_publish():
    return True
'''


# Persistence on (the default, spelled out) versus off, for the cost of the message store: run
# both on the fanin-qos1-persistent scenario, where every message reaches a persistent session.
PERSIST_CONF = (
    PLUGIN_HOST_CONF
    + """persistence = on
persistence.sync = batch
persistence.dir = ${workdir}/data
"""
)
NOPERSIST_CONF = PLUGIN_HOST_CONF + "persistence = off\n"


def plugin_host_command(ctx: RunContext, *extra: str) -> list[str]:
    """``plugin-host serve --config <the variant's config> *extra`` (for plugin-host variants)."""
    return [*ctx.tool("plugin-host"), "serve", "--config", str(ctx.config_path), *extra]


_plugin_host_command = plugin_host_command  # the name contrib benchmarks already use


VARIANTS: list[Variant] = [
    Variant(
        name="plugin-host",
        family="plugin-host",
        command=plugin_host_command,
        config_name="plugin-host.conf",
        config_text=PLUGIN_HOST_CONF,
        ratio_to=("amqtt",),
        description="plugin-host serve, default config, no plugins besides the built-in ones",
    ),
    Variant(
        name="amqtt",
        family="amqtt",
        command=lambda ctx: [*ctx.tool("amqtt"), "-c", str(ctx.config_path)],
        config_name="amqtt.yaml",
        config_text=AMQTT_YAML,
        description="amqtt (asyncio), anonymous auth plugin only",
    ),
    Variant(
        name="mosquitto",
        family="mosquitto",
        command=lambda ctx: [*ctx.tool("mosquitto"), "-c", str(ctx.config_path)],
        config_name="mosquitto.conf",
        config_text=MOSQUITTO_CONF,
        description="mosquitto (C), default settings, no persistence",
    ),
    Variant(
        name="plugin-host+pyhook",
        family="plugin-host",
        command=lambda ctx: plugin_host_command(ctx, "--plugins-dir", str(ctx.workdir / "plugins")),
        config_name="plugin-host.conf",
        config_text=PLUGIN_HOST_CONF,
        files={"plugins/bench_auth.py": PYHOOK_PLUGIN},
        ratio_to=("plugin-host",),
        default=False,
        description="plugin-host with one trivial Python auth_on_publish hook (--plugins-dir)",
    ),
    Variant(
        name="plugin-host+persist",
        family="plugin-host",
        command=plugin_host_command,
        config_name="plugin-host.conf",
        config_text=PERSIST_CONF,
        ratio_to=("plugin-host+nopersist",),
        default=False,
        description="plugin-host with the SQLite message store on, sync = batch (the default)",
    ),
    Variant(
        name="plugin-host+nopersist",
        family="plugin-host",
        command=plugin_host_command,
        config_name="plugin-host.conf",
        config_text=NOPERSIST_CONF,
        default=False,
        description="plugin-host with persistence = off (memory only)",
    ),
]


# --------------------------------------------------------------------------------------------
# Plugin variants of issues 4-6: hooks, installed plugins, webhooks over HTTPS, Lua


LUAHOOK_LUA = """\
-- The cost of calling one Lua hook per message (the contrib diversity plugin).
hooks = {
    auth_on_publish = function(pub) return true end,
    auth_on_publish_m5 = function(pub) return true end,
}
"""

LUA_HTTPS_REGISTER = """\
-- auth_on_register in Lua, over HTTPS (a private CA) to the benchmark webhook server.
http.ensure_pool({pool_id = "auth", size = 50, cafile = "${webhook_cafile}"})
local function auth_on_register(reg)
    local body = json.encode({client_id = reg.client_id, username = reg.username})
    local r = http.post("auth", "${webhook_url}", body, {["content-type"] = "application/json"})
    return r ~= false and r.status == 200
end
hooks = {auth_on_register = auth_on_register, auth_on_register_m5 = auth_on_register}
"""

_NO_ANONYMOUS = PLUGIN_HOST_CONF.replace("allow_anonymous = on", "allow_anonymous = off")
WEBHOOK_TLS = "webhooks.cafile = ${webhook_cafile}\n"
WEBHOOK_REGISTER_CONF = (
    _NO_ANONYMOUS
    + "webhooks.register.hook = auth_on_register\nwebhooks.register.endpoint = ${webhook_url}\n"
    + WEBHOOK_TLS
)
WEBHOOK_PUBLISH_CONF = (
    PLUGIN_HOST_CONF
    + "webhooks.publish.hook = auth_on_publish\nwebhooks.publish.endpoint = ${webhook_url}\n"
    + WEBHOOK_TLS
)
LUA_CONF = PLUGIN_HOST_CONF + "diversity.script_dir = ${workdir}/lua\n"


def webhook_service(
    max_age: int = 0,
) -> Callable[[RunContext], contextlib.AbstractContextManager[None]]:
    """A ``setup`` starting ``webhook_server.py`` (HTTPS, its own process on the load generator's
    CPU; ``max_age`` > 0 adds ``Cache-Control: max-age``): sets ``${webhook_url}`` and
    ``${webhook_cafile}``."""

    @contextlib.contextmanager
    def setup(ctx: RunContext) -> Iterator[None]:
        argv = [sys.executable, str(BENCH_DIR / "webhook_server.py"), "--dir", str(ctx.workdir)]
        ctx.spawn_helper([*argv, "--max-age", str(max_age), "--host", ctx.host], "webhook.log")
        port_file = ctx.workdir / "webhook.port"
        deadline = time.monotonic() + 30
        while not port_file.exists():  # written (atomically) once it listens
            if time.monotonic() > deadline:
                raise BrokerError("the webhook server did not start (see webhook.log)")
            time.sleep(0.05)
        ctx.values["webhook_url"] = f"https://{ctx.host}:{port_file.read_text()}/hook"
        ctx.values["webhook_cafile"] = str(ctx.workdir / "tls" / "ca.pem")
        yield

    return setup


def _plugin_variants() -> list[Variant]:
    lua = {"lua/bench.lua": LUAHOOK_LUA}
    https_lua = {"lua/auth.lua": LUA_HTTPS_REGISTER}
    return [
        Variant(
            name="plugin-host+installed",
            family="plugin-host",
            command=plugin_host_command,
            config_name="plugin-host.conf",
            config_text=PLUGIN_HOST_CONF,
            plugins=tuple(third_party_plugins()),
            ratio_to=("plugin-host",),
            default=False,
            description="plugin-host with every installed plugin loaded and none configured",
        ),
        Variant(
            name="plugin-host+luahook",
            family="plugin-host",
            command=plugin_host_command,
            config_name="plugin-host.conf",
            config_text=LUA_CONF,
            files=lua,
            ratio_to=("plugin-host", "plugin-host+pyhook"),
            default=False,
            description="plugin-host with one trivial Lua auth_on_publish hook (diversity)",
        ),
        *(
            Variant(
                name=f"plugin-host+webhook-{hook}{'-cache' if max_age else ''}",
                family="plugin-host",
                command=plugin_host_command,
                config_name="plugin-host.conf",
                config_text=conf,
                setup=webhook_service(max_age),
                ratio_to=("plugin-host",),
                default=False,
                description=f"auth_on_{hook} through an HTTPS webhook (keep-alive pool)"
                + (f", answers cached (max-age={max_age})" if max_age else ", no cache"),
            )
            for hook, conf in (
                ("register", WEBHOOK_REGISTER_CONF),
                ("publish", WEBHOOK_PUBLISH_CONF),
            )
            for max_age in (0, 60)
        ),
        Variant(
            name="plugin-host+lua-https-register",
            family="plugin-host",
            command=plugin_host_command,
            config_name="plugin-host.conf",
            config_text=_NO_ANONYMOUS + "diversity.script_dir = ${workdir}/lua\n",
            files=https_lua,
            setup=webhook_service(0),
            ratio_to=("plugin-host",),
            default=False,
            description="auth_on_register in Lua over HTTPS (keep-alive pool, private CA)",
        ),
    ]


def variant(name: str) -> Variant:
    for v in VARIANTS:
        if v.name == name:
            return v
    raise KeyError(name)


# --------------------------------------------------------------------------------------------
# The tools behind the families: where they are, their versions, installing amqtt


class Tools:
    """Finds (and for amqtt, installs into its own venv) the broker executables."""

    def __init__(self, amqtt_venv: Path, amqtt_spec: str = AMQTT_SPEC) -> None:
        self.amqtt_venv = amqtt_venv
        self.amqtt_spec = amqtt_spec
        self._unavailable: dict[str, str] = {}
        self._commands: dict[str, list[str]] = {}

    def command(self, family: str) -> list[str]:
        if family not in self._commands:
            reason = self.unavailable(family)
            if reason:
                raise BrokerError(reason)
        return self._commands[family]

    def unavailable(self, family: str) -> str | None:
        """Why this family cannot run here, or None (resolves and caches the command)."""
        if family in self._commands:
            return None
        if family not in self._unavailable:
            try:
                self._commands[family] = getattr(self, f"_find_{family.replace('-', '_')}")()
                return None
            except BrokerError as exc:
                self._unavailable[family] = str(exc)
        return self._unavailable[family]

    def _find_plugin_host(self) -> list[str]:
        script = Path(sys.executable).with_name("plugin-host")
        cmd = [str(script)] if script.exists() else None
        if cmd is None and shutil.which("plugin-host"):
            cmd = [str(shutil.which("plugin-host"))]
        if cmd is None:
            cmd = [sys.executable, "-c", "from plugin_host.cli import main; main()"]
        probe = subprocess.run(
            [*cmd, "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        if probe.returncode != 0:
            raise BrokerError(
                "plugin-host serve is not available: "
                + (probe.stderr.strip().splitlines() or ["no output"])[-1]
            )
        return cmd

    def _find_mosquitto(self) -> list[str]:
        exe = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
        )
        if not exe:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        return [exe]

    def _find_amqtt(self) -> list[str]:
        exe = self.amqtt_venv / "bin" / "amqtt"
        if not exe.exists():
            self._install_amqtt()
        return [str(exe)]

    def _install_amqtt(self) -> None:
        """amqtt lives in its own venv so its pins never touch the project's environment."""
        print(f"installing {self.amqtt_spec} into {self.amqtt_venv} ...", file=sys.stderr)
        try:
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(self.amqtt_venv)],
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [str(self.amqtt_venv / "bin" / "pip"), "install", "-q", self.amqtt_spec],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            raise BrokerError(
                f"could not install {self.amqtt_spec} into {self.amqtt_venv}: "
                f"{detail.decode(errors='replace').strip()[-300:] or exc}"
            ) from exc

    def version(self, family: str) -> str:
        try:
            if family == "plugin-host":
                import plugin_host

                return f"{plugin_host.__version__} ({_git_describe()})"
            if family == "amqtt":
                out = subprocess.run(
                    [
                        str(self.amqtt_venv / "bin" / "python"),
                        "-c",
                        "import importlib.metadata as m; print(m.version('amqtt'))",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                return out.stdout.strip()
            if family == "mosquitto":
                out = subprocess.run(
                    [*self.command("mosquitto"), "-h"], capture_output=True, text=True, check=False
                )
                m = re.search(r"version (\S+)", out.stdout + out.stderr)
                return m.group(1) if m else "unknown"
        except (OSError, subprocess.CalledProcessError, ImportError, BrokerError):
            pass
        return "unknown"


def _git_describe() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        )
        return "git " + out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"


# --------------------------------------------------------------------------------------------
# Broker processes


def free_port(host: str) -> int:
    """An ephemeral port nobody listens on right now (the broker binds it moments later)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _child_setup(cpus: list[int]) -> Callable[[], None]:
    """preexec_fn: pin to ``cpus``, allow many sockets, die with us (Linux PDEATHSIG)."""

    def setup() -> None:
        if cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, cpus)
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6", use_errno=True).prctl(
                    1, signal.SIGTERM
                )  # PR_SET_PDEATHSIG

    return setup


_LOG_PATTERN = re.compile(r"error|exception|traceback|critical|fatal|warn|drop", re.IGNORECASE)


@dataclass
class BrokerRun:
    """Outcome of stopping a broker: how it went, and what its log said that looks wrong."""

    exit_code: int | None
    stop_seconds: float
    killed: bool
    log_lines: int
    log_issues: list[str]
    log_issue_count: int


class BrokerProcess:
    """A running broker: its process, a /proc probe for CPU/RSS, and its log file."""

    def __init__(self, variant: Variant, ctx: RunContext, cpus: list[int]) -> None:
        self.variant = variant
        self.ctx = ctx
        self.log_path = ctx.workdir / f"{variant.name}.log"
        values = ctx.template_values()
        values.setdefault("plugins_off", "")
        if variant.family == "plugin-host":
            values["plugins_off"] = "\n".join(
                f"plugins.{name} = off"
                for name in unused_plugins(variant, variant.config_text, third_party_plugins())
            )
        for rel, text in variant.files.items():
            path = ctx.workdir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_render(variant, rel, text, values))
        ctx.config_path = ctx.workdir / variant.config_name
        ctx.config_path.write_text(
            _render(variant, variant.config_name, variant.config_text, values)
        )
        self.argv = variant.command(ctx)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ctx.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, not the broker: we stop it in order
                preexec_fn=_child_setup(cpus),  # noqa: PLW1509 - the driver has no threads
            )
        self.probe = PidProbe(self.proc.pid)
        self.ready_seconds = 0.0
        self.outcome: BrokerRun | None = None

    def cpu_seconds(self) -> float | None:
        return self.probe.cpu_seconds()

    def rss_bytes(self) -> int | None:
        return self.probe.rss_bytes()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until an MQTT CONNECT gets a CONNACK; returns the seconds it took."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"{self.variant.name} exited with status {self.proc.returncode} at start-up:\n"
                    + self.log_tail()
                )
            try:
                _probe_connack(self.ctx.host, self.ctx.port)
                return time.monotonic() - t0
            except (OSError, wire.ProtocolMismatch) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise BrokerError(
            f"{self.variant.name} did not answer MQTT on {self.ctx.host}:{self.ctx.port} within "
            f"{timeout:.0f} s ({last_error}):\n" + self.log_tail()
        )

    def stop(self, timeout: float = 10.0) -> BrokerRun:
        """SIGTERM (graceful shutdown), SIGKILL after ``timeout``; then read the log."""
        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        stop_seconds = time.monotonic() - t0
        return BrokerRun(
            exit_code=self.proc.returncode,
            stop_seconds=stop_seconds,
            killed=killed,
            **self._scan_log(),
        )

    def _scan_log(self) -> dict[str, object]:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        issues: dict[str, str] = {}
        count = 0
        for line in lines:
            if _LOG_PATTERN.search(line):
                count += 1
                # the same message with other numbers/ids counts once in the examples
                key = re.sub(r"\d+", "N", line)[-120:]
                if key not in issues and len(issues) < 8:
                    issues[key] = line.strip()[:300]
        return {
            "log_lines": len(lines),
            "log_issues": list(issues.values()),
            "log_issue_count": count,
        }

    def kill(self) -> None:
        """Last-resort cleanup (Ctrl-C): SIGKILL the broker's process group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def third_party_plugins() -> list[str]:
    """Names of the installed ``plugin_host`` entry points not shipped with plugin-host itself."""
    from importlib.metadata import entry_points

    return sorted(
        {
            ep.name
            for ep in entry_points(group="plugin_host")
            if ep.dist is None or ep.dist.name != "plugin-host"
        }
    )


VARIANTS.extend(_plugin_variants())


def unused_plugins(variant: Variant, config_text: str, installed: list[str]) -> list[str]:
    """The installed plugins this variant neither lists nor configures (they get turned off)."""
    configured = set(re.findall(r"^\s*(?:vmq_)?([a-z0-9_]+)\.", config_text, re.MULTILINE))
    keep = set(variant.plugins) | (configured - {"listener", "plugins"})
    return [name for name in installed if name not in keep]


def _render(variant: Variant, what: str, text: str, values: dict[str, str]) -> str:
    try:
        return string.Template(text).substitute(values)
    except (KeyError, ValueError) as exc:
        raise BrokerError(
            f"variant {variant.name}: {what}: bad placeholder {exc} (known: {sorted(values)}; "
            "write $$ for a literal $)"
        ) from None


def _probe_connack(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        s.connect((host, port))
        s.sendall(wire.connect("bench-ready-probe"))
        data = b""
        while len(data) < 4:
            chunk = s.recv(4 - len(data))
            if not chunk:
                raise wire.ProtocolMismatch("closed before CONNACK")
            data += chunk
        if data[0] != wire.CONNACK or data[3] != 0:
            raise wire.ProtocolMismatch(f"bad CONNACK {data.hex()}")
        s.sendall(wire.DISCONNECT_PACKET)


@contextlib.contextmanager
def running_broker(
    variant: Variant, ctx: RunContext, broker_cpus: list[int], ready_timeout: float = 60.0
) -> Iterator[BrokerProcess]:
    """Set up helpers, start the broker, wait for MQTT, and always tear everything down.

    On normal exit the broker gets a graceful stop and ``broker.outcome`` is filled in; on an
    exception (including KeyboardInterrupt) everything is killed at once.
    """
    with contextlib.ExitStack() as stack:
        stack.callback(_kill_helpers, ctx)
        if variant.setup is not None:
            stack.enter_context(variant.setup(ctx))
        broker = BrokerProcess(variant, ctx, broker_cpus)
        try:
            broker.ready_seconds = broker.wait_ready(ready_timeout)
            yield broker
        except BaseException:
            broker.kill()
            raise
        broker.outcome = broker.stop()


def _kill_helpers(ctx: RunContext) -> None:
    for proc in ctx.helpers:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
