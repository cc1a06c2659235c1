"""The real ``plugin-host`` script: exit codes, start-up, graceful stop on signals."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
from pathlib import Path

import pytest

# The broker engineer owns plugin_host/server.py; these tests need it (and nothing else).
needs_server = pytest.mark.skipif(
    importlib.util.find_spec("plugin_host.server") is None,
    reason="plugin_host.server does not exist yet",
)


def _run(exe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _is_listening(event: dict) -> bool:
    return event.get("event") == "listening"


def test_version_and_help(plugin_host_exe: Path, tmp_path: Path) -> None:
    result = _run(plugin_host_exe, "--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("plugin-host, version ")
    result = _run(plugin_host_exe, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Examples:" in result.stdout


def test_check_config_exit_codes(plugin_host_exe: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.conf"
    good.write_text("admin.api_key = topsecret\naccept_eula = yes\n")
    result = _run(plugin_host_exe, "check-config", str(good), cwd=tmp_path)
    assert result.returncode == 0
    assert "admin.api_key = ***" in result.stdout
    assert "topsecret" not in result.stdout + result.stderr
    assert result.stderr == (
        f"warning: {good}:2: accept_eula: ignored: not applicable to plugin-host\n"
    )

    bad = tmp_path / "bad.toml"
    bad.write_text('allow_anonymous = true\nmax_inflight_messages = "many"\n')
    result = _run(plugin_host_exe, "check-config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"{bad}:2: max_inflight_messages: bad value 'many': expected an integer\n"
    )


def test_serve_with_bad_config_exits_2_without_traceback(
    plugin_host_exe: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("listener.tcp.default = 127.0.0.1\n")
    result = _run(plugin_host_exe, "serve", "--config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"{bad}:1: listener.tcp.default: bad listener address '127.0.0.1': expected IP:PORT, "
        "e.g. 127.0.0.1:1883, 0.0.0.0:1883 or [::1]:1883\n"
    )
    result = _run(plugin_host_exe, "serve", "--listen", "nowhere", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("--listen: bad listener address 'nowhere'")


@needs_server
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_on_an_ephemeral_port_and_stop(serve_process, signum: int) -> None:
    server = serve_process("--listen", "127.0.0.1:0")
    listening = server.wait_for(_is_listening)
    assert listening["host"] == "127.0.0.1"
    port = listening["port"]
    assert port > 0
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # the port really accepts connections
    code, rest = server.stop(signum)
    assert code == 0, server.events
    assert "Traceback" not in rest
    assert any(event.get("event") == "stopped" for event in server.events)
    tuned = [event for event in server.events if event.get("event") == "gc_tuned"]
    assert len(tuned) == 1 and tuned[0]["frozen"] > 0 and tuned[0]["young"] == 10_000
    for event in server.events:  # JSON lines (stderr is not a terminal) with a timestamp
        assert "raw" not in event or not event["raw"].strip(), event
    assert all(
        "timestamp" in event and "level" in event for event in server.events if event.get("event")
    )


@needs_server
def test_serve_with_a_config_file_logs_ignored_keys(serve_process, tmp_path: Path) -> None:
    config = tmp_path / "vernemq.conf"
    config.write_text(
        "accept_eula = yes\n"
        "allow_anonymous = on\n"
        "listener.tcp.default = 127.0.0.1:0\n"
        "erlang.async_threads = 64\n"
    )
    server = serve_process("--config", str(config), "--log-format", "json")
    server.wait_for(_is_listening)
    ignored = [e for e in server.events if e.get("event") == "config_key_ignored"]
    assert [(e["key"], e["where"]) for e in ignored] == [
        ("accept_eula", f"{config}:1"),
        ("erlang.async_threads", f"{config}:4"),
    ]
    assert all(e["level"] == "warning" for e in ignored)
    code, _rest = server.stop()
    assert code == 0


@needs_server
def test_port_in_use_is_one_clear_line(plugin_host_exe: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(plugin_host_exe, "serve", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("plugin-host: ")]
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port}" in errors[0]
    assert "in use" in errors[0].lower()
    assert "Traceback" not in result.stderr


PLUGIN_WITH_SCHEMA = """
from plugin_host import hookimpl
from plugin_host.settings import Key


@hookimpl
def plugin_host_config_schema():
    return [Key("retries", "int", default=3)]
"""


@needs_server
def test_a_bad_plugin_section_is_a_config_error(plugin_host_exe: Path, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "myplug.py").write_text(PLUGIN_WITH_SCHEMA)
    config = tmp_path / "broker.conf"
    config.write_text("listener.tcp.default = 127.0.0.1:0\nmyplug.retries = often\n")
    result = _run(
        plugin_host_exe,
        "serve",
        "--config",
        str(config),
        "--plugins-dir",
        str(plugins),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert f"{config}:2: myplug.retries: bad value 'often': expected an integer\n" in result.stderr
    assert "Traceback" not in result.stderr
