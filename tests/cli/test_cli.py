"""The click command tree, in process (CliRunner)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from click.testing import CliRunner

import plugin_host
from plugin_host import cli
from plugin_host.cli import LAZY_COMMANDS, main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"plugin-host, version {plugin_host.__version__}\n"


def test_help_is_for_newcomers(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for text in (
        "Examples:",
        "plugin-host serve ",
        "plugin-host serve --config vernemq.conf",
        "plugin-host check-config broker.toml",
        "127.0.0.1:1883",
        "serve",
        "check-config",
    ):
        assert text in result.output


def test_serve_help_lists_every_option(runner: CliRunner) -> None:
    result = runner.invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for option in (
        "--config FILE",
        "--listen HOST:PORT",
        "--allow-anonymous / --no-allow-anonymous",
        "--plugins-dir DIR",
        "--log-level",
        "--log-format",
        "Examples:",
    ):
        assert option in result.output


def test_check_config_prints_the_effective_config(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(
        "admin.api_key = 'my-api-key'\n"
        "[listener.tcp]\n"
        'default = "0.0.0.0:1883"\n'
        "[vmq_webhooks]\n"
        'keyfile_password = "pw-123"\n'
    )
    result = runner.invoke(main, ["check-config", str(config)])
    assert result.exit_code == 0, result.output
    assert "listener.tcp.default = 0.0.0.0:1883" in result.stdout
    assert "admin.api_key = ***" in result.stdout
    assert "webhooks.keyfile_password = ***" in result.stdout
    assert "my-api-key" not in result.output and "pw-123" not in result.output
    assert result.stderr == ""


PLUGIN_WITH_SCHEMA = """
from plugin_host import hookimpl
from plugin_host.settings import Key


@hookimpl
def plugin_host_config_schema():
    return [
        Key("url", "str", required=True),
        Key("opaque", "str", secret=True),
        Key("retries", "int", default=3),
    ]
"""


def test_check_config_validates_plugin_sections(runner: CliRunner, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "myplug.py").write_text(PLUGIN_WITH_SCHEMA)
    config = tmp_path / "broker.conf"
    config.write_text("myplug.url = http://x\nmyplug.opaque = hidden-value\n")
    result = runner.invoke(main, ["check-config", str(config), "--plugins-dir", str(plugins)])
    assert result.exit_code == 0, result.output
    assert "myplug.url = http://x" in result.stdout
    assert "myplug.opaque = ***" in result.stdout  # secret by the plugin's schema
    assert "hidden-value" not in result.output

    config.write_text("myplug.url = http://x\nmyplug.retries = often\n")
    result = runner.invoke(main, ["check-config", str(config), "--plugins-dir", str(plugins)])
    assert result.exit_code == 2
    assert result.stderr == f"{config}:2: myplug.retries: bad value 'often': expected an integer\n"


def test_check_config_error(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text("allow_anonymous = on\nallow_anonymous = off\n")
    result = runner.invoke(main, ["check-config", str(config)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"{config}:2: allow_anonymous: duplicate key (already set on line 1)\n"
    )
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_check_config_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["check-config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert result.stderr == (
        f"{tmp_path / 'nope.toml'}: cannot read config file: No such file or directory\n"
    )


def test_serve_config_error_before_anything_starts(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "broker.conf"
    config.write_text("max_inflight_messages = -5\n")
    result = runner.invoke(main, ["serve", "-c", str(config)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"{config}:1: max_inflight_messages: bad value '-5': must be between 0 and 65535\n"
    )


def test_a_missing_lazy_command_does_not_break_the_cli(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        LAZY_COMMANDS, "ghost", ("plugin_host_ghost.commands", "ghost_group", "Haunt.")
    )
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "ghost" not in result.output  # hidden while unavailable
    result = runner.invoke(main, ["ghost"])
    assert result.exit_code == 1
    assert "'plugin-host ghost' is not available in this installation" in result.output
    assert "plugin_host_ghost.commands is missing" in result.output


def test_a_lazy_command_loads_from_its_module(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # any importable module attribute that is a click command will do: use check-config
    monkeypatch.setitem(LAZY_COMMANDS, "again", ("plugin_host.cli", "check_config", "x"))
    result = runner.invoke(main, ["--help"])
    assert "again" in result.output
    result = runner.invoke(main, ["again", "--help"])
    assert result.exit_code == 0
    assert "Validate FILE" in result.output


def test_an_import_error_inside_a_lazy_module_is_not_hidden(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "broken_cmds.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(LAZY_COMMANDS, "broken", ("broken_cmds", "group", "x"))
    result = runner.invoke(main, ["broken"])
    assert isinstance(result.exception, ModuleNotFoundError)
    assert result.exception.name == "no_such_dependency_xyz"


@pytest.mark.parametrize(("name", "spec"), sorted(LAZY_COMMANDS.items()))
def test_registered_lazy_commands(runner: CliRunner, name: str, spec: tuple[str, str, str]) -> None:
    module_name, attribute, _help = spec
    try:
        available = hasattr(importlib.import_module(module_name), attribute)
    except ModuleNotFoundError:
        available = False
    if available:
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0, result.output
        assert name in runner.invoke(main, ["--help"]).output
    else:
        result = runner.invoke(main, [name])
        assert result.exit_code == 1
        assert "not available in this installation" in result.output


def test_exit_codes_are_documented() -> None:
    assert (cli.EXIT_RUNTIME_ERROR, cli.EXIT_CONFIG_ERROR, cli.EXIT_INTERRUPTED) == (1, 2, 130)
    assert "130" in (cli.__doc__ or "")
