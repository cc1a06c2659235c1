"""Broker-wide keys, defaults and value syntax, in both file formats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plugin_host.config import ConfigOverrides, load_config
from plugin_host.settings import Config


def _get(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_no_file_is_a_local_development_broker() -> None:
    config = load_config(None)
    assert [(lc.kind, lc.name, lc.host, lc.port) for lc in config.listeners] == [
        ("tcp", "default", "127.0.0.1", 1883)
    ]
    assert config.broker.allow_anonymous is True
    assert config.source is None
    assert config.warnings == []


def test_defaults_follow_vernemq(load) -> None:
    config = load("empty.conf", "# nothing but a comment\n\n")
    broker = config.broker
    assert broker.allow_anonymous is False  # VerneMQ default with a config file
    assert broker.max_inflight_messages == 20
    assert broker.max_offline_messages == 1000
    assert broker.max_online_messages == 1000
    assert broker.retry_interval == 20.0
    assert broker.max_client_id_size == 100
    assert broker.systree_interval == 20.0
    assert broker.persistent_client_expiration is None
    # a file without a listener still serves MQTT locally
    assert [lc.address for lc in config.listeners] == ["127.0.0.1:1883"]


# (key, .conf value, TOML value, attribute, expected)
CASES: list[tuple[str, str, Any, str, Any]] = [
    ("allow_anonymous", "on", True, "broker.allow_anonymous", True),
    ("max_client_id_size", "23", 23, "broker.max_client_id_size", 23),
    ("retry_interval", "30", 30, "broker.retry_interval", 30.0),
    ("max_inflight_messages", "0", 0, "broker.max_inflight_messages", 0),
    ("max_online_messages", "-1", -1, "broker.max_online_messages", -1),
    ("max_offline_messages", "0", 0, "broker.max_offline_messages", 0),
    ("max_message_size", "64KB", "64KB", "broker.max_message_size", 65536),
    ("max_message_rate", "100", 100, "broker.max_message_rate", 100),
    ("upgrade_outgoing_qos", "true", True, "broker.upgrade_outgoing_qos", True),
    ("persistent_client_expiration", "2d", "2d", "broker.persistent_client_expiration", 172800.0),
    ("max_last_will_delay", "1h", "1h", "broker.max_last_will_delay", 3600.0),
    ("max_keepalive", "600", 600, "broker.max_keepalive", 600),
    ("max_subscriptions_per_client", "50", 50, "broker.max_subscriptions_per_client", 50),
    ("topic_max_depth", "0", 0, "broker.topic_max_depth", 0),
    ("receive_max_client", "10", 10, "broker.receive_max_client", 10),
    ("receive_max_broker", "100", 100, "broker.receive_max_broker", 100),
    ("topic_alias_max_client", "5", 5, "broker.topic_alias_max_client", 5),
    ("topic_alias_max_broker", "7", 7, "broker.topic_alias_max_broker", 7),
    (
        "suppress_lwt_on_session_takeover",
        "on",
        True,
        "broker.suppress_lwt_on_session_takeover",
        True,
    ),
    (
        "shared_subscription_policy",
        "random",
        "random",
        "broker.shared_subscription_policy",
        "random",
    ),
    ("max_outgoing_buffer", "1MB", 1048576, "broker.max_outgoing_buffer", 1048576),
    ("hook_timeout", "2500", 2500, "broker.hook_timeout", 2.5),
    ("systree_enabled", "off", False, "broker.systree_enabled", False),
    ("systree_interval", "5000", 5000, "broker.systree_interval", 5.0),
    ("nodename", "VerneMQ@127.0.0.1", "VerneMQ@127.0.0.1", "broker.nodename", "VerneMQ@127.0.0.1"),
    ("mqtt_connect_timeout", "10s", "10s", "broker.mqtt_connect_timeout", 10.0),
    ("persistence", "off", False, "persistence.enabled", False),
    ("persistence.sync", "always", "always", "persistence.sync", "always"),
    ("persistence.sync_delay", "20", 20, "persistence.sync_delay", 0.02),
    ("admin.api_key", "k3y", "k3y", "admin_api_key", "k3y"),
    ("log.level", "debug", "debug", "log.level", "debug"),
    ("log.format", "json", "json", "log.format", "json"),
]


@pytest.mark.parametrize(("key", "conf", "toml", "attribute", "expected"), CASES)
def test_key_in_conf_and_toml(
    load, key: str, conf: str, toml: Any, attribute: str, expected: Any
) -> None:
    from_conf = load("broker.conf", f"{key} = {conf}\n")
    assert _get(from_conf, attribute) == expected
    toml_value = f'"{toml}"' if isinstance(toml, str) else str(toml).lower()
    from_toml = load("broker.toml", f"{key} = {toml_value}\n")
    assert _get(from_toml, attribute) == expected
    assert from_conf.warnings == from_toml.warnings == []


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("20", 20.0),
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("1f", 1209600.0),
    ],
)
def test_retry_interval_takes_cuttlefish_durations(load, value: str, seconds: float) -> None:
    assert load("d.conf", f"retry_interval = {value}\n").broker.retry_interval == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("never", None), ("1h", 3600.0), ("1d", 86400.0), ("1w", 604800.0), ("1m", 2419200.0)],
)
def test_persistent_client_expiration_uses_vernemq_units(
    load, value: str, seconds: float | None
) -> None:
    # VerneMQ: m = month of four weeks (not minutes) for this key.
    config = load("p.conf", f"persistent_client_expiration = {value}\n")
    assert config.broker.persistent_client_expiration == seconds


def test_max_last_will_delay_client_means_no_cap(load) -> None:
    assert load("w.conf", "max_last_will_delay = client\n").broker.max_last_will_delay is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("prefer_local", "round_robin"),
        ("local_only", "round_robin"),
        ("prefer_online_before_local", "round_robin"),
        ("round_robin", "round_robin"),
        ("random", "random"),
    ],
)
def test_shared_subscription_policy_names(load, value: str, expected: str) -> None:
    config = load("s.conf", f"shared_subscription_policy = {value}\n")
    assert config.broker.shared_subscription_policy == expected


@pytest.mark.parametrize(("value", "size"), [("100", 100), ("2kb", 2048), ("3MB", 3 << 20)])
def test_sizes(load, value: str, size: int) -> None:
    assert load("m.conf", f"max_message_size = {value}\n").broker.max_message_size == size


def test_quoted_values_and_comments(load) -> None:
    config = load(
        "q.conf",
        """
        nodename = "node # one"   # the quotes keep the hash
        admin.api_key = 'plain'
        listener.tcp.default = 127.0.0.1:1883 # trailing comment
        listener.tcp.default.mountpoint = "a \\"quoted\\" mount"
        """,
    )
    assert config.broker.nodename == "node # one"
    assert config.admin_api_key == "plain"
    assert config.listeners[0].mountpoint == 'a "quoted" mount'


def test_persistence_dir_and_plugins_dir_are_relative_to_the_file(load, tmp_path: Path) -> None:
    config = load(
        "p.conf",
        """
        persistence.dir = data
        plugins_dir = plugins, /opt/more
        """,
    )
    assert config.persistence.dir == tmp_path / "data"
    assert config.plugins_dirs == [tmp_path / "plugins", Path("/opt/more")]


def test_plugins_dir_toml_array(load, tmp_path: Path) -> None:
    config = load("p.toml", 'plugins_dir = ["a", "b"]\n')
    assert config.plugins_dirs == [tmp_path / "a", tmp_path / "b"]


def test_toml_friendly_spellings(load) -> None:
    config = load(
        "t.toml",
        """
        [persistence]
        enabled = false
        sync = "off"

        [log]
        level = "warning"
        """,
    )
    assert config.persistence.enabled is False
    assert config.persistence.sync == "off"
    assert config.log.level == "warning"


def test_vernemq_log_console_level_sets_the_log_level(load) -> None:
    config = load("l.conf", "log.console.level = debug\nlog.console = file\n")
    assert config.log.level == "debug"
    assert [w.key for w in config.warnings] == ["log.console"]


def test_overrides(load, write_config) -> None:
    path = write_config(
        "o.conf",
        """
        allow_anonymous = off
        listener.max_connections = 5
        listener.tcp.default = 0.0.0.0:1883
        listener.tcp.other = 0.0.0.0:1884
        listener.ws.web = 127.0.0.1:8080
        plugins_dir = mine
        log.level = error
        """,
    )
    config = load_config(
        path,
        overrides=ConfigOverrides(
            listen=["127.0.0.1:0", "[::1]:0"],
            allow_anonymous=True,
            plugins_dirs=[Path("/extra")],
            log_level="DEBUG",
            log_format="console",
        ),
    )
    # --listen replaces the tcp listeners, keeps the others; global options still apply
    assert [(lc.kind, lc.name, lc.address, lc.max_connections) for lc in config.listeners] == [
        ("ws", "web", "127.0.0.1:8080", 5),
        ("tcp", "listen1", "127.0.0.1:0", 5),
        ("tcp", "listen2", "[::1]:0", 5),
    ]
    assert config.broker.allow_anonymous is True
    assert config.plugins_dirs == [path.parent / "mine", Path("/extra")]
    assert (config.log.level, config.log.format) == ("debug", "console")


def test_no_allow_anonymous_override_without_file() -> None:
    config = load_config(None, overrides=ConfigOverrides(allow_anonymous=False))
    assert config.broker.allow_anonymous is False
