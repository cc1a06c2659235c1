"""``apply_schema``: typing and validating a plugin's section against its declared keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_host.config import apply_schema
from plugin_host.settings import ConfigError, Key, PluginSection

# Roughly what the webhooks plugin declares (spec section 3.1).
WEBHOOK_KEYS = [
    Key("pool_max_connections", "int", default=100),
    Key("pool_timeout", "duration_ms", default=60000),
    Key("cafile", "path"),
    Key("keyfile_password", "str", secret=True),
    Key("tls_version", "enum", default="tlsv1.2", choices=("tlsv1.2", "tlsv1.3")),
    Key("verify_peer", "bool", default=True),
    Key("max_body", "size", default="64KB"),
    Key("ratio", "float"),
    Key("lifetime", "duration_s"),
    Key("names", "list"),
    Key("*.hook", "str", required=True),
    Key("*.endpoint", "str", required=True),
    Key("*.response_timeout", "duration_ms", default=5000),
    Key("*.base64encode", "bool", default=True),
]


def test_conf_values_are_typed(load, tmp_path: Path) -> None:
    config = load(
        "w.conf",
        """
        vmq_webhooks.pool_max_connections = 10
        vmq_webhooks.pool_timeout = 2s
        vmq_webhooks.cafile = certs/ca.pem
        vmq_webhooks.keyfile_password = hunter2
        vmq_webhooks.tls_version = tlsv1.3
        vmq_webhooks.verify_peer = off
        vmq_webhooks.max_body = 1MB
        vmq_webhooks.ratio = 0.5
        vmq_webhooks.lifetime = 90
        vmq_webhooks.names = a, b ,c
        vmq_webhooks.w1.hook = auth_on_register
        vmq_webhooks.w1.endpoint = http://127.0.0.1/a
        vmq_webhooks.w1.response_timeout = 250
        vmq_webhooks.w2.hook = on_publish
        vmq_webhooks.w2.endpoint = http://127.0.0.1/b
        vmq_webhooks.w2.base64encode = off
        """,
    )
    typed = apply_schema(config.section("webhooks"), WEBHOOK_KEYS)
    assert typed.values == {
        "pool_max_connections": 10,
        "pool_timeout": 2.0,
        "cafile": tmp_path / "certs" / "ca.pem",  # relative to the config file
        "keyfile_password": "hunter2",
        "tls_version": "tlsv1.3",
        "verify_peer": False,
        "max_body": 1 << 20,
        "ratio": 0.5,
        "lifetime": 90.0,
        "names": ["a", "b", "c"],
        "w1.hook": "auth_on_register",
        "w1.endpoint": "http://127.0.0.1/a",
        "w1.response_timeout": 0.25,
        "w1.base64encode": True,  # default filled per webhook
        "w2.hook": "on_publish",
        "w2.endpoint": "http://127.0.0.1/b",
        "w2.response_timeout": 5.0,
        "w2.base64encode": False,
    }
    assert typed.group() == {
        "w1": {
            "hook": "auth_on_register",
            "endpoint": "http://127.0.0.1/a",
            "response_timeout": 0.25,
            "base64encode": True,
        },
        "w2": {
            "hook": "on_publish",
            "endpoint": "http://127.0.0.1/b",
            "response_timeout": 5.0,
            "base64encode": False,
        },
    }
    assert typed.origins["w1.hook"].line == 11
    assert config.section("webhooks").values["pool_timeout"] == "2s"  # the raw one is untouched


def test_defaults_without_configuration() -> None:
    typed = apply_schema(PluginSection(plugin="webhooks"), WEBHOOK_KEYS)
    assert typed.values == {
        "pool_max_connections": 100,
        "pool_timeout": 60.0,
        "tls_version": "tlsv1.2",
        "verify_peer": True,
        "max_body": 65536,
    }


def test_toml_native_values(load) -> None:
    config = load(
        "w.toml",
        """
        [webhooks]
        pool_max_connections = 5
        verify_peer = false
        names = ["x", "y"]
        ratio = 2

        [webhooks.w1]
        hook = "auth_on_publish"
        endpoint = "http://127.0.0.1/p"
        response_timeout = "1s"
        """,
    )
    typed = apply_schema(config.section("webhooks"), WEBHOOK_KEYS)
    assert typed["pool_max_connections"] == 5
    assert typed["verify_peer"] is False
    assert typed["names"] == ["x", "y"]
    assert typed["ratio"] == 2.0
    assert typed["w1.response_timeout"] == 1.0


def _error(load, text: str, name: str = "w.conf") -> str:
    config = load(name, text)
    with pytest.raises(ConfigError) as info:
        apply_schema(config.section("webhooks"), WEBHOOK_KEYS)
    return str(info.value)


def test_unknown_key(load, tmp_path: Path) -> None:
    text = "vmq_webhooks.pool_max_conections = 3\n"
    assert _error(load, text) == (
        f"{tmp_path / 'w.conf'}:1: webhooks.pool_max_conections: "
        "unknown key (did you mean pool_max_connections?)"
    )
    text = "webhooks.w1.hook = a\nwebhooks.w1.endpoint = b\nwebhooks.w1.colour = red\n"
    assert _error(load, text) == f"{tmp_path / 'w.conf'}:3: webhooks.w1.colour: unknown key"


def test_bad_values(load, tmp_path: Path) -> None:
    path = tmp_path / "w.conf"
    assert _error(load, "webhooks.pool_max_connections = many\n") == (
        f"{path}:1: webhooks.pool_max_connections: bad value 'many': expected an integer"
    )
    assert _error(load, "webhooks.tls_version = sslv3\n") == (
        f"{path}:1: webhooks.tls_version: bad value 'sslv3': expected one of tlsv1.2, tlsv1.3"
    )
    assert _error(load, "webhooks.verify_peer = 1\n") == (
        f"{path}:1: webhooks.verify_peer: bad value '1': expected on or off"
    )
    assert _error(load, '[webhooks]\npool_timeout = "soon"\n', "w.toml") == (
        f"{tmp_path / 'w.toml'}:2: webhooks.pool_timeout: bad value 'soon': expected a duration: "
        "a number of ms, or with a unit like 500ms, 5s, 2m"
    )


def test_missing_required_key_points_at_its_sibling(load, tmp_path: Path) -> None:
    text = "# webhooks\nvmq_webhooks.w1.hook = auth_on_register\n"
    assert _error(load, text) == (
        f"{tmp_path / 'w.conf'}:2: webhooks.w1.endpoint: required key is missing"
    )


def test_required_key_without_wildcard() -> None:
    section = PluginSection(plugin="db")
    with pytest.raises(ConfigError) as info:
        apply_schema(section, [Key("url", required=True)])
    assert str(info.value) == "db.url: required key is missing"


def test_exact_pattern_wins_over_wildcard() -> None:
    section = PluginSection(plugin="p", values={"tls.depth": "3", "a.depth": "x"})
    typed = apply_schema(section, [Key("*.depth", "str"), Key("tls.depth", "int")])
    assert typed.values == {"tls.depth": 3, "a.depth": "x"}


def test_unknown_key_type_is_a_plugin_bug() -> None:
    section = PluginSection(plugin="p", values={"a": "1"})
    with pytest.raises(TypeError):
        apply_schema(section, [Key("a", "colour")])  # type: ignore[arg-type]


def test_a_bad_secret_value_is_not_echoed(load, tmp_path: Path) -> None:
    config = load("s.toml", "[webhooks]\nkeyfile_password = true\n")
    with pytest.raises(ConfigError) as info:
        apply_schema(config.section("webhooks"), WEBHOOK_KEYS)
    assert str(info.value) == (
        f"{tmp_path / 's.toml'}:2: webhooks.keyfile_password: bad value ***: expected a string"
    )
