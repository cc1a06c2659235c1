"""The ``diversity.*`` section: schema, parsing of raw (.conf) values, script order."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_host.settings import ConfigError, PluginSection
from plugin_host_diversity.config import parse, schema
from plugin_host_diversity.plugin import DiversityPlugin


def test_schema_declares_every_key() -> None:
    patterns = {key.pattern for key in DiversityPlugin().plugin_host_config_schema()}
    assert patterns == {
        "script_dir", "*.file", "nr_lua_states", "keep_state", "max_memory", "max_instructions",
        "max_call_time", "http.cafile", "http.certfile", "http.keyfile", "http.keyfile_password",
        "bcrypt.default_log_rounds", "bcrypt.pool_size", "reload_on_sighup", "*.enabled",
    }  # fmt: skip
    secret = {key.pattern for key in schema() if key.secret}
    assert secret == {"http.keyfile_password"}


def test_raw_conf_values(tmp_path: Path) -> None:
    (tmp_path / "b.lua").write_text("")
    (tmp_path / "a.lua").write_text("")
    (tmp_path / "notes.txt").write_text("")
    section = PluginSection(
        plugin="diversity",
        values={
            "script_dir": str(tmp_path),
            "extra.file": "/opt/extra.lua",
            "nr_lua_states": "4",
            "keep_state": "on",
            "max_memory": "32MB",
            "max_instructions": "1000000",
            "max_call_time": "250ms",
            "http.cafile": "/etc/ca.pem",
            "auth_redis.enabled": "off",
        },
    )
    config = parse(section)
    assert config.nr_lua_states == 4 and config.keep_state is True
    assert config.limits.max_memory == 32 * 1024 * 1024
    assert config.limits.max_instructions == 1_000_000
    assert config.limits.max_time == pytest.approx(0.25)
    assert config.tls.cafile == Path("/etc/ca.pem")
    assert [(s.name, s.path) for s in config.scripts()] == [
        ("a", tmp_path / "a.lua"),
        ("b", tmp_path / "b.lua"),
        ("extra", Path("/opt/extra.lua")),
    ]


def test_typed_values_and_defaults() -> None:
    config = parse(PluginSection(plugin="diversity", values={"max_call_time": 0.5}))
    assert config.limits.max_time == 0.5
    assert config.script_dir is None and config.scripts() == []
    assert config.nr_lua_states == 1 and config.keep_state is False
    assert config.limits.max_memory == 64 * 1024 * 1024


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"nr_lua_states": "0"}, "diversity.nr_lua_states", "expected an integer"),
        ({"keep_state": "maybe"}, "diversity.keep_state", "expected on/off"),
        ({"max_memory": "lots"}, "diversity.max_memory", "expected a size"),
        ({"script_dir": "/nonexistent/dir"}, "diversity.script_dir", "not a directory"),
        ({"auth_postgres.enabled": "on"}, "diversity.auth_postgres.enabled", "database modules"),
        ({"postgres.host": "db"}, "diversity.postgres.host", "database modules"),
        ({"bogus": "1"}, "diversity.bogus", "unknown key"),
    ],
)
def test_bad_values(values: dict[str, str], key: str, words: str) -> None:
    section = PluginSection(plugin="diversity", values=values)
    with pytest.raises(ConfigError) as caught:
        parse(section)
    assert caught.value.key == key
    assert words in caught.value.reason


def _loaded(tmp_path: Path, name: str, text: str) -> PluginSection:
    from plugin_host.config import apply_schema, load_config

    path = tmp_path / name
    path.write_text(text)
    return apply_schema(load_config(path).sections["diversity"], schema())


def test_through_the_config_loader_conf_and_toml(tmp_path: Path) -> None:
    scripts = tmp_path / "lua"
    scripts.mkdir()
    (scripts / "auth.lua").write_text("hooks = {}")
    conf = _loaded(
        tmp_path,
        "vernemq.conf",
        "plugins.vmq_diversity = on\n"
        "plugins.vmq_diversity.priority = 2\n"
        "vmq_diversity.script_dir = lua\n"
        "vmq_diversity.extra.file = lua/auth.lua\n"
        "vmq_diversity.keep_state = on\n"
        "vmq_diversity.max_call_time = 250ms\n"
        "vmq_diversity.http.keyfile_password = s3cret\n",
    )
    toml = _loaded(
        tmp_path,
        "broker.toml",
        '[plugins.diversity]\npriority = 2\n\n[diversity]\nscript_dir = "lua"\n'
        'keep_state = true\nmax_call_time = "250ms"\nhttp.keyfile_password = "s3cret"\n'
        '\n[diversity.extra]\nfile = "lua/auth.lua"\n',
    )
    for section in (conf, toml):
        config = parse(section)
        assert config.script_dir == scripts  # relative to the config file
        assert config.files == {"extra": scripts / "auth.lua"}
        assert config.keep_state is True and config.nr_lua_states == 1
        assert config.limits.max_time == pytest.approx(0.25)
        assert config.limits.max_memory == 64 * 1024 * 1024
        assert config.tls.keyfile_password == "s3cret"
        assert [s.name for s in config.scripts()] == ["auth", "extra"]


def test_loader_defaults() -> None:
    from plugin_host.config import apply_schema

    config = parse(apply_schema(PluginSection(plugin="diversity"), schema()))
    assert config.limits.max_time == 1.0
    assert config.limits.max_instructions == 10_000_000
    assert config.bcrypt_rounds == 12 and config.reload_on_sighup is True
