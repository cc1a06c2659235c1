"""Discovery through real entry points and --plugins-dir, config checks, load failures."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from plugin_host.config import ConfigOverrides, load_config
from plugin_host.plugins.builtin.passwd import hash_password
from plugin_host.plugins.discovery import PluginLoadError
from plugin_host.plugins.manager import PluginManager
from plugin_host.settings import ConfigError


def installed(*names: str) -> list[importlib.metadata.EntryPoint]:
    """Real installed entry points of group plugin_host, restricted to ``names``."""
    eps = importlib.metadata.entry_points(group="plugin_host")
    found = [ep for ep in eps if ep.name in names]
    assert sorted(ep.name for ep in found) == sorted(names)
    return found


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def fake_distribution(root: Path, name: str, version: str, entry_points: dict[str, str]) -> None:
    """An installed distribution on disk (dist-info with METADATA and entry_points.txt)."""
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[plugin_host]\n{lines}")


def dist_entry_points(root: Path) -> list[importlib.metadata.EntryPoint]:
    return [
        ep
        for dist in importlib.metadata.distributions(path=[str(root)])
        for ep in dist.entry_points
        if ep.group == "plugin_host"
    ]


# --- entry points ---------------------------------------------------------------------------


def test_installed_example_distribution_is_discovered_by_default():
    manager = PluginManager.discover(load_config(None))
    rows = {row.name: row for row in manager.table()}
    example = rows["example"]
    assert (example.distribution, example.version, example.enabled) == (
        "plugin-host-example",
        "1.2.3",
        True,
    )
    assert example.source == "entry point"
    assert example.hooks == (
        "auth_on_register",
        "auth_on_register_m5",
        "auth_on_publish",
        "on_publish",
    )
    assert rows["passwd"].distribution == "plugin-host" and rows["acl"].enabled
    # Installed but not configured: answers nothing, so it changes nobody's broker.
    assert not manager.dispatcher.implemented("auth_on_register")


async def test_example_plugin_through_the_chain_with_priorities(tmp_path, host):
    passwd = write(tmp_path / "passwd", f"alice:{hash_password(b'other', rounds=4)}\n")

    def config(priorities: str):
        return load_config(
            write(
                tmp_path / "broker.conf",
                f"""\
                {priorities}
                passwd.password_file = {passwd}
                example.username = alice
                example.password = wonder
                example.topic_prefix = tenant1/
                example.audit = on
                """,
            )
        )

    args = {"username": "alice", "password": b"wonder", "client_id": "c"}
    # passwd first: alice is in its file with another password -> bad credentials.
    cfg = config("plugins.passwd.priority = 1\nplugins.example.priority = 2")
    manager = PluginManager.discover(cfg, entry_points=installed("example", "passwd"))
    assert manager.names == ("passwd", "example")
    async with manager.running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_register", args)
    assert (outcome.allowed, outcome.plugin, outcome.invalid_credentials) == (False, "passwd", True)

    # example first: it knows alice/wonder.
    cfg = config("plugins.example.priority = 1\nplugins.passwd.priority = 2")
    manager = PluginManager.discover(cfg, entry_points=installed("example", "passwd"))
    assert manager.names == ("example", "passwd")
    example = manager.plugin("example")
    async with manager.running(host) as dispatcher:
        assert (await dispatcher.auth("auth_on_register", args)).allowed
        publish = await dispatcher.auth("auth_on_publish", {"topic": "t", "client_id": "c"})
        assert publish.modifiers == {"topic": "tenant1/t"}
        dispatcher.notify("on_publish", {"client_id": "c", "topic": "tenant1/t"})
    assert example.published == [("c", "tenant1/t")]
    assert example.events == ["start", "stop"]
    assert manager.section("example")["audit"] is True  # typed by the plugin's schema


def test_entry_point_import_failure_names_plugin_and_distribution(tmp_path, monkeypatch):
    write(tmp_path / "broken_mod_for_tests.py", "x = 1\nraise RuntimeError('cannot start')\n")
    fake_distribution(tmp_path, "broken-dist", "0.4", {"broken": "broken_mod_for_tests"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginLoadError) as info:
        PluginManager.discover(load_config(None), entry_points=dist_entry_points(tmp_path))
    message = str(info.value)
    assert "plugin 'broken' (broken-dist 0.4) failed to import" in message
    assert "RuntimeError: cannot start" in message and "broken_mod_for_tests.py:2" in message
    assert isinstance(info.value, ConfigError)  # the CLI prints it and exits 2


def test_disabled_entry_point_is_not_imported(tmp_path, monkeypatch):
    write(tmp_path / "never_imported_mod.py", "raise RuntimeError('imported!')\n")
    fake_distribution(tmp_path, "never-dist", "1.0", {"never": "never_imported_mod"})
    monkeypatch.syspath_prepend(str(tmp_path))
    conf = write(tmp_path / "b.conf", "plugins.never = off\n")
    manager = PluginManager.discover(load_config(conf), entry_points=dist_entry_points(tmp_path))
    assert "never_imported_mod" not in sys.modules
    (row,) = manager.table()
    assert (row.name, row.enabled, row.distribution, row.hooks) == (
        "never",
        False,
        "never-dist",
        (),
    )


def test_two_plugins_with_one_name(tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    write(plugins / "passwd.py", "")
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[plugins]))
    with pytest.raises(ConfigError, match="two plugins are named 'passwd'"):
        PluginManager.discover(cfg, entry_points=installed("passwd"))


# --- plugins dir ------------------------------------------------------------------------------


def test_plugins_dir_files_are_plugins_named_after_the_file(tmp_path, host):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    write(
        plugins / "only_bob.py",
        """\
        from plugin_host import hookimpl

        @hookimpl
        def auth_on_register(username):
            return True if username == "bob" else None
        """,
    )
    write(plugins / "_helper.py", "raise RuntimeError('helpers are not plugins')\n")
    write(plugins / "notes.txt", "not python")
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[plugins]))
    manager = PluginManager.discover(cfg, entry_points=())
    (row,) = manager.table()
    assert (row.name, row.source, row.hooks) == ("only_bob", "plugins dir", ("auth_on_register",))
    assert row.distribution == str(plugins / "only_bob.py")


async def test_plugins_dir_plugin_answers(tmp_path, host):
    plugins = tmp_path / "p"
    plugins.mkdir()
    write(
        plugins / "deny_all.py",
        """\
        from plugin_host import Deny, hookimpl

        @hookimpl
        async def auth_on_publish(topic):
            return Deny(f"no {topic}")
        """,
    )
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[plugins]))
    async with PluginManager.discover(cfg, entry_points=()).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", {"topic": "x"})
    assert (outcome.allowed, outcome.reason, outcome.plugin) == (False, "no x", "deny_all")


def test_disabled_plugins_dir_file_is_not_imported(tmp_path):
    plugins = tmp_path / "p"
    plugins.mkdir()
    write(plugins / "explode.py", "raise RuntimeError('imported!')\n")
    conf = write(tmp_path / "b.toml", f'plugins_dir = "{plugins}"\n[plugins]\nexplode = false\n')
    cfg = load_config(conf)
    manager = PluginManager.discover(cfg, entry_points=())
    assert [(r.name, r.enabled) for r in manager.table()] == [("explode", False)]
    assert "plugin_host_dir_plugins.explode" not in sys.modules


def test_plugins_dir_import_error_names_the_file_and_line(tmp_path):
    plugins = tmp_path / "p"
    plugins.mkdir()
    write(plugins / "explode.py", "import os\n\nraise RuntimeError('imported!')\n")
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[plugins]))
    with pytest.raises(PluginLoadError) as info:
        PluginManager.discover(cfg, entry_points=())
    assert str(info.value) == (
        f"plugin 'explode' ({plugins / 'explode.py'}) failed to import: "
        f"RuntimeError: imported! ({plugins / 'explode.py'}:3)"
    )


def test_syntax_error_in_plugin_file(tmp_path):
    plugins = tmp_path / "p"
    plugins.mkdir()
    write(plugins / "typo.py", "def f(:\n")
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[plugins]))
    with pytest.raises(PluginLoadError, match=r"'typo' .*SyntaxError.*typo.py:1"):
        PluginManager.discover(cfg, entry_points=())


def test_missing_plugins_dir(tmp_path):
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[tmp_path / "nope"]))
    with pytest.raises(ConfigError, match="is not a directory"):
        PluginManager.discover(cfg, entry_points=())


# --- registration failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        (
            "@hookimpl\ndef auth_on_publish(topik):\n    pass\n",
            r"cannot be registered: auth_on_publish\(topik\): 'topik' is not an argument of "
            r"auth_on_publish \(it has: username, mountpoint, client_id, qos, topic",
        ),
        (
            "@hookimpl\ndef auth_on_publsh(topic):\n    pass\n",
            r"implements unknown hook 'auth_on_publsh' \(did you mean 'auth_on_publish'\?\)",
        ),
        (
            "@hookimpl(wrapper=True)\ndef auth_on_publish(topic):\n    return (yield)\n",
            "hook wrappers are not supported",
        ),
        (
            "@hookimpl\nasync def plugin_host_lifespan(host):\n    pass\n",
            "plugin_host_lifespan must be a plain function returning an async context manager",
        ),
        (
            "@hookimpl\nasync def plugin_host_active_hooks():\n    return set()\n",
            "plugin_host_active_hooks must be a plain function",
        ),
        (
            "@hookimpl\ndef plugin_host_config_schema():\n    return ['x']\n",
            "must return plugin_host.settings.Key objects",
        ),
    ],
)
def test_registration_failures_are_clear(tmp_path, source, fragment):
    plugins = tmp_path / "p"
    plugins.mkdir()
    write(plugins / "bad.py", "from plugin_host import hookimpl\n\n" + source)
    cfg = load_config(None, overrides=ConfigOverrides(plugins_dirs=[plugins]))
    with pytest.raises(PluginLoadError, match=fragment) as info:
        PluginManager.discover(cfg, entry_points=())
    assert str(info.value).startswith(f"plugin 'bad' ({plugins / 'bad.py'})")


# --- configuration ----------------------------------------------------------------------------


def test_plugins_setting_for_an_unknown_plugin_is_an_error(tmp_path):
    conf = write(tmp_path / "b.conf", "# plugins\nplugins.examle.priority = 3\n")
    with pytest.raises(ConfigError) as info:
        PluginManager.discover(load_config(conf), entry_points=installed("example"))
    assert str(info.value) == (
        f"{conf}:2: plugins.examle: plugin 'examle' is not installed "
        "(did you mean 'example'?); installed: example"
    )


def test_section_for_an_unknown_plugin_is_an_error(tmp_path):
    conf = write(tmp_path / "b.conf", "\n\nnosuch.key = 1\n")
    with pytest.raises(ConfigError) as info:
        PluginManager.discover(load_config(conf), entry_points=installed("passwd"))
    assert str(info.value).startswith(f"{conf}:3: nosuch.key: no installed plugin is named")


def test_off_for_an_unknown_plugin_is_only_a_warning(tmp_path):
    conf = write(tmp_path / "b.conf", "plugins.nosuch = off\n")
    with capture_logs() as logs:
        PluginManager.discover(load_config(conf), entry_points=())
    assert any(e["event"] == "plugin_not_installed" for e in logs)


def test_config_of_a_disabled_plugin_is_ignored_with_a_warning(tmp_path):
    conf = write(tmp_path / "b.conf", "plugins.example = off\nexample.whatever = 1\n")
    with capture_logs() as logs:
        manager = PluginManager.discover(load_config(conf), entry_points=installed("example"))
    assert manager.names == ()
    warning = next(e for e in logs if e["event"] == "plugin_config_ignored")
    assert warning["plugin"] == "example"


def test_vernemq_aliases_reach_the_builtin_plugins(tmp_path):
    passwd = write(tmp_path / "pw", "")
    conf = write(
        tmp_path / "vernemq.conf",
        f"plugins.vmq_passwd = on\nvmq_passwd.password_file = {passwd}\n"
        "vmq_passwd.password_reload_interval = 3\nplugins.vmq_acl = off\n",
    )
    manager = PluginManager.discover(load_config(conf), entry_points=installed("passwd", "acl"))
    assert manager.names == ("passwd",)
    section = manager.section("passwd")
    assert section["password_file"] == passwd and section["password_reload_interval"] == 3.0


def test_schema_errors_point_at_the_line(tmp_path):
    conf = write(tmp_path / "b.conf", "example.username = a\nexample.colour = red\n")
    with pytest.raises(ConfigError, match=rf"{conf}:2: example.colour: unknown key"):
        PluginManager.discover(load_config(conf), entry_points=installed("example"))
