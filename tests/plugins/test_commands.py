"""``plugin-host plugins``: the table of DESIGN section 5."""

from __future__ import annotations

from click.testing import CliRunner

from plugin_host.cli import main


def table(output: str) -> dict[str, list[str]]:
    lines = output.strip().splitlines()
    header = lines[0].split()
    assert header == ["NAME", "DISTRIBUTION", "VERSION", "ENABLED", "PRIORITY", "HOOKS"]
    rows = {}
    for line in lines[1:]:
        cells = line.split(None, 5)
        rows[cells[0]] = cells
    return rows


def test_plugins_table(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "mine.py").write_text(
        "from plugin_host import hookimpl\n\n@hookimpl\ndef on_client_gone(client_id):\n    pass\n"
    )
    (plugins / "off.py").write_text("raise RuntimeError('must not be imported')\n")
    conf = tmp_path / "broker.conf"
    conf.write_text("plugins.example.priority = 3\nplugins.off = off\nplugins.acl = off\n")
    result = CliRunner().invoke(
        main, ["plugins", "--config", str(conf), "--plugins-dir", str(plugins)]
    )
    assert result.exit_code == 0, result.output
    rows = table(result.stdout)
    assert rows["example"][:5] == ["example", "plugin-host-example", "1.2.3", "yes", "3"]
    assert rows["example"][5].startswith("auth_on_register, auth_on_register_m5")
    assert rows["passwd"][1:5] == ["plugin-host", "0.1.0", "yes", "-"]
    assert rows["acl"][3:] == ["no", "-", "(not loaded)"]
    assert rows["mine"][1:3] == ["(file)", str(plugins / "mine.py")]
    assert rows["mine"][-1].endswith("on_client_gone")
    assert rows["off"][-1].endswith("(not loaded)")
    # Enabled plugins come first, in chain order: prioritised, then by name.
    names = list(rows)
    assert names.index("example") < names.index("mine") < names.index("passwd")
    assert names.index("passwd") < names.index("acl")


def test_plugins_command_reports_broken_plugins(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "broken.py").write_text("import does_not_exist_anywhere\n")
    result = CliRunner().invoke(main, ["plugins", "--plugins-dir", str(plugins)])
    assert result.exit_code == 2
    assert "plugin 'broken'" in result.output and "does_not_exist_anywhere" in result.output
