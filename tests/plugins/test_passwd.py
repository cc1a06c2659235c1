"""The built-in passwd plugin and the ``plugin-host passwd`` commands."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import stat
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner
from structlog.testing import capture_logs

from plugin_host.cli import main
from plugin_host.config import load_config
from plugin_host.hooks.results import EXHAUSTED
from plugin_host.plugins.builtin.passwd import (
    hash_password,
    parse_password_file,
    verify_password,
)
from plugin_host.plugins.builtin.watch import FileFormatError
from plugin_host.plugins.manager import PluginManager
from plugin_host.settings import ConfigError


def passwd_entry_point() -> list[importlib.metadata.EntryPoint]:
    return [
        ep for ep in importlib.metadata.entry_points(group="plugin_host") if ep.name == "passwd"
    ]


def replace(path: Path, text: str) -> None:
    """Rewrite a file the way editors and `plugin-host passwd` do: a new file, renamed."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def sha512_6(password: bytes, salt: bytes) -> str:
    digest = hashlib.sha512(password + salt).digest()
    return f"$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def pbkdf2_7(password: bytes, salt: bytes, iterations: int = 101) -> str:
    digest = hashlib.pbkdf2_hmac("sha512", password, salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def manager_for(tmp_path: Path, passwd: Path, interval: str = "0") -> PluginManager:
    conf = tmp_path / "broker.conf"
    conf.write_text(
        f"passwd.password_file = {passwd}\npasswd.password_reload_interval = {interval}\n"
    )
    return PluginManager.discover(load_config(conf), entry_points=passwd_entry_point())


def register(username, password) -> dict:
    return {"username": username, "password": password, "client_id": "c", "peer_addr": "::1"}


# --- file format ------------------------------------------------------------------------------


def test_supported_hash_formats():
    assert verify_password(b"pw", hash_password(b"pw", rounds=4))
    assert not verify_password(b"pw2", hash_password(b"pw", rounds=4))
    assert verify_password(b"pw", sha512_6(b"pw", b"saltsaltsalt"))
    assert not verify_password(b"px", sha512_6(b"pw", b"saltsaltsalt"))
    assert verify_password(b"pw", pbkdf2_7(b"pw", b"0123456789abcdef"))
    assert not verify_password(b"px", pbkdf2_7(b"pw", b"0123456789abcdef"))
    # $2y$ (htpasswd -B) and long passwords (bcrypt uses the first 72 bytes).
    long = b"x" * 72
    assert verify_password(long + b"ignored", hash_password(long, rounds=4).replace("$2b$", "$2y$"))
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password(b"y" * 73)


def test_parse_and_errors(tmp_path):
    good = parse_password_file(
        f"# users\n\nalice:{sha512_6(b'a', b's')}\nbob:{hash_password(b'b', 4)}\n", tmp_path
    )
    assert sorted(good) == ["alice", "bob"]
    with pytest.raises(FileFormatError, match=r":2: expected user:hash"):
        parse_password_file("# c\njust-a-name\n", tmp_path / "pw")
    with pytest.raises(FileFormatError, match=r":1: user 'carol': unsupported hash"):
        parse_password_file("carol:plaintext\n", tmp_path / "pw")
    with pytest.raises(FileFormatError, match=r":1: user 'dave': malformed bcrypt"):
        parse_password_file("dave:$2b$12$short\n", tmp_path / "pw")


# --- through the dispatcher -------------------------------------------------------------------


async def test_passwd_decisions(tmp_path, host):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hash_password(b'wonderland', 4)}\nbob:{sha512_6(b'b', b'salt')}\n")
    async with manager_for(tmp_path, passwd).running(host) as dispatcher:
        assert dispatcher.chain("auth_on_register") == ("passwd",)
        assert dispatcher.chain("auth_on_register_m5") == ("passwd",)
        ok = await dispatcher.auth("auth_on_register", register("alice", b"wonderland"))
        assert ok.allowed
        assert (await dispatcher.auth("auth_on_register_m5", register("bob", b"b"))).allowed
        wrong = await dispatcher.auth("auth_on_register", register("alice", b"nope"))
        assert (wrong.allowed, wrong.invalid_credentials, wrong.plugin) == (False, True, "passwd")
        assert wrong.reason_code == 0x86
        # Unknown users, no user name, no password: next (here: the chain is exhausted).
        for args in (register("mallory", b"x"), register(None, b"x"), register("alice", None)):
            assert await dispatcher.auth("auth_on_register", args) is EXHAUSTED


async def test_inactive_without_a_file(host):
    manager = PluginManager.discover(load_config(None), entry_points=passwd_entry_point())
    async with manager.running(host) as dispatcher:
        assert not dispatcher.implemented("auth_on_register")
        assert not dispatcher.implemented("auth_on_register_m5")


async def test_missing_or_broken_file_stops_start_up(tmp_path, host):
    manager = manager_for(tmp_path, tmp_path / "absent")
    with pytest.raises(ConfigError) as info:
        async with manager.running(host):
            pass
    conf = tmp_path / "broker.conf"
    assert str(info.value) == (
        f"{conf}:1: passwd.password_file: cannot read {tmp_path / 'absent'}: "
        "No such file or directory"
    )
    broken = tmp_path / "broken"
    broken.write_text("alice\n")
    with pytest.raises(ConfigError, match=r"passwd.password_file: .*broken:1: expected user:hash"):
        async with manager_for(tmp_path, broken).running(host):
            pass


async def test_reloaded_when_the_file_changes(tmp_path, host):
    passwd = tmp_path / "passwd"
    passwd.write_text(f"alice:{hash_password(b'one', 4)}\n")
    manager = manager_for(tmp_path, passwd, interval="0.02")
    plugin = manager.plugin("passwd")
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            assert (await dispatcher.auth("auth_on_register", register("alice", b"one"))).allowed
            generation = plugin.file.generation
            replace(passwd, f"alice:{hash_password(b'two', 4)}\nbob:{sha512_6(b'b', b's')}\n")
            with trio.fail_after(10):
                await plugin.file.wait_generation(generation + 1)
            old = await dispatcher.auth("auth_on_register", register("alice", b"one"))
            assert old.invalid_credentials
            assert (await dispatcher.auth("auth_on_register", register("alice", b"two"))).allowed
            assert (await dispatcher.auth("auth_on_register", register("bob", b"b"))).allowed

            # A broken file on reload: logged, the previous users stay.
            generation = plugin.file.generation
            replace(passwd, "garbage line\n")
            with trio.fail_after(10):
                await plugin.file.wait_generation(generation + 1)
            assert (await dispatcher.auth("auth_on_register", register("bob", b"b"))).allowed
    events = [e["event"] for e in logs]
    assert "password_file_reloaded" in events and "password_file_reload_failed" in events


# --- plugin-host passwd add / delete ---------------------------------------------------------


def test_passwd_add_and_delete_commands(tmp_path):
    runner = CliRunner()
    path = tmp_path / "passwd"
    result = runner.invoke(
        main, ["passwd", "add", str(path), "alice", "--password", "a1", "--rounds", "4"]
    )
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Prompted twice, without echo.
    result = runner.invoke(
        main, ["passwd", "add", str(path), "bob", "--rounds", "4"], input="b0b\nb0b\n"
    )
    assert result.exit_code == 0, result.output
    assert "b0b" not in result.output
    users = parse_password_file(path.read_text(), path)
    assert verify_password(b"a1", users["alice"]) and verify_password(b"b0b", users["bob"])

    # Changing a password keeps the line in place; comments survive.
    path.write_text("# managed\n" + path.read_text())
    result = runner.invoke(
        main, ["passwd", "add", str(path), "alice", "--password", "new", "--rounds", "4"]
    )
    assert result.exit_code == 0 and "updated alice" in result.output
    lines = path.read_text().splitlines()
    assert lines[0] == "# managed" and lines[1].startswith("alice:") and len(lines) == 3
    assert verify_password(b"new", parse_password_file(path.read_text(), path)["alice"])

    result = runner.invoke(main, ["passwd", "delete", str(path), "alice"])
    assert result.exit_code == 0
    assert sorted(parse_password_file(path.read_text(), path)) == ["bob"]
    result = runner.invoke(main, ["passwd", "delete", str(path), "alice"])
    assert result.exit_code == 1 and "no user 'alice'" in result.output


def test_passwd_command_rejects_bad_input(tmp_path):
    runner = CliRunner()
    path = tmp_path / "passwd"
    result = runner.invoke(main, ["passwd", "add", str(path), "a:b", "--password", "x"])
    assert result.exit_code == 2 and "without ':'" in result.output
    result = runner.invoke(main, ["passwd", "add", str(path), "bob"], input="one\ntwo\none\none\n")
    assert "do not match" in result.output.lower()
    result = runner.invoke(main, ["passwd", "add", str(path), "c", "--password", "z" * 80])
    assert result.exit_code == 2 and "72 bytes" in result.output
    result = runner.invoke(main, ["passwd", "delete", str(tmp_path / "none"), "bob"])
    assert result.exit_code == 1 and "does not exist" in result.output


async def test_file_written_by_the_command_is_picked_up_by_a_running_broker(tmp_path, host):
    path = tmp_path / "passwd"
    CliRunner().invoke(
        main, ["passwd", "add", str(path), "alice", "--password", "1", "--rounds", "4"]
    )
    manager = manager_for(tmp_path, path, interval="0.02")
    plugin = manager.plugin("passwd")
    async with manager.running(host) as dispatcher:
        generation = plugin.file.generation
        result = CliRunner().invoke(
            main, ["passwd", "add", str(path), "zoe", "--password", "2", "--rounds", "4"]
        )
        assert result.exit_code == 0
        with trio.fail_after(10):
            await plugin.file.wait_generation(generation + 1)
        assert (await dispatcher.auth("auth_on_register", register("zoe", b"2"))).allowed
