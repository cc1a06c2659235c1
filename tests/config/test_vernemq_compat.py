"""vernemq.conf lines work verbatim: aliases, plugin sections, ignored VerneMQ-only keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugin_host.config import IGNORED_KEYS, IGNORED_LISTENER_OPTIONS
from plugin_host.settings import Origin

# A realistic vernemq.conf: parts of the shipped default file plus typical operator changes.
SAMPLE_VERNEMQ_CONF = """\
## To use this pre-packaged version of VerneMQ you must agree to the EULA.
accept_eula = yes

## Allow anonymous users to connect, default is 'off'.
allow_anonymous = off
allow_register_during_netsplit = off
allow_publish_during_netsplit = off
allow_subscribe_during_netsplit = off
allow_unsubscribe_during_netsplit = off
allow_multiple_sessions = off
coordinate_registrations = on
## retry_interval = 20
max_client_id_size = 100
persistent_client_expiration = 1w
max_inflight_messages = 20
max_online_messages = 1000
max_offline_messages = 1000
max_message_size = 0
upgrade_outgoing_qos = off

listener.tcp.buffer_sizes = 4096,16384,32768
listener.max_connections = 10000
listener.nr_of_acceptors = 10
listener.tcp.default = 127.0.0.1:1883
listener.tcp.allowed_protocol_versions = 3,4,5
listener.ws.default = 127.0.0.1:8080
listener.vmq.clustering = 0.0.0.0:44053
listener.http.default = 127.0.0.1:8888
listener.http.default.http_modules = vmq_metrics_http,vmq_health_http

systree_enabled = on
systree_interval = 20000
graphite_enabled = off
graphite_host = localhost
graphite_port = 2003
graphite_interval = 20000
shared_subscription_policy = prefer_local

plugins.vmq_passwd = off
plugins.vmq_acl = on
plugins.vmq_diversity = on
plugins.vmq_diversity.priority = 2
plugins.vmq_webhooks = on
plugins.vmq_webhooks.priority = 1
plugins.vmq_bridge = off
metadata_plugin = vmq_plumtree

vmq_acl.acl_file = ./etc/vmq.acl
vmq_acl.acl_reload_interval = 10
vmq_passwd.password_file = ./etc/vmq.passwd
vmq_passwd.password_reload_interval = 10

vmq_diversity.script_dir = ./share/lua
vmq_diversity.auth_postgres.enabled = off
vmq_diversity.postgres.ssl = off
vmq_diversity.postgres.password_hash_method = crypt
vmq_diversity.auth_redis.enabled = off
vmq_diversity.myscript.file = /etc/vernemq/auth.lua
vmq_diversity.keep_state = off
vmq_bcrypt.pool_size = 1

vmq_webhooks.pool_max_connections = 100
vmq_webhooks.cafile = /etc/ssl/ca.pem
vmq_webhooks.verify_peer = on
vmq_webhooks.webhook1.hook = auth_on_register
vmq_webhooks.webhook1.endpoint = http://127.0.0.1:8000/auth_on_register
vmq_webhooks.webhook1.response_timeout = 5000
vmq_webhooks.webhook2.hook = auth_on_publish
vmq_webhooks.webhook2.endpoint = https://auth.example.com/auth_on_publish?x=1

log.console = file
log.console.level = info
log.console.file = ./log/console.log
log.error.file = ./log/error.log
log.syslog = off
log.crash = on
log.crash.file = ./log/crash.log
log.crash.maximum_message_size = 64KB
log.crash.size = 10MB
log.crash.rotation = $D0
log.crash.rotation.keep = 5
nodename = VerneMQ@127.0.0.1
distributed_cookie = vmq
erlang.async_threads = 64
erlang.max_ports = 262144
erlang.distribution.port_range.minimum = 9100
leveldb.maximum_memory.percent = 70
"""


def _line(key: str) -> int:
    """The line of ``key = ...`` in the sample (1-based)."""
    for number, text in enumerate(SAMPLE_VERNEMQ_CONF.splitlines(), start=1):
        if text.startswith(f"{key} ="):
            return number
    raise AssertionError(key)


def test_sample_vernemq_conf_loads(load, tmp_path: Path) -> None:
    config = load("vernemq.conf", SAMPLE_VERNEMQ_CONF)
    path = str(tmp_path / "vernemq.conf")

    assert config.broker.allow_anonymous is False
    assert config.broker.persistent_client_expiration == 604800.0
    assert config.broker.nodename == "VerneMQ@127.0.0.1"
    assert config.broker.shared_subscription_policy == "round_robin"
    assert [(lc.kind, lc.name, lc.address) for lc in config.listeners] == [
        ("tcp", "default", "127.0.0.1:1883"),
        ("ws", "default", "127.0.0.1:8080"),
        ("http", "default", "127.0.0.1:8888"),
    ]
    assert config.listeners[0].allowed_protocol_versions == frozenset({3, 4, 5})
    assert config.listeners[0].max_connections == 10000

    plugins = {name: (p.enabled, p.priority) for name, p in config.plugins.items()}
    assert plugins == {
        "passwd": (False, None),
        "acl": (True, None),
        "diversity": (True, 2),
        "webhooks": (True, 1),
    }
    assert config.plugins["webhooks"].origin == Origin(path, _line("plugins.vmq_webhooks"))

    webhooks = config.sections["webhooks"]
    assert webhooks["webhook1.hook"] == "auth_on_register"
    assert webhooks["webhook2.endpoint"] == "https://auth.example.com/auth_on_publish?x=1"
    assert webhooks.group() == {
        "webhook1": {
            "hook": "auth_on_register",
            "endpoint": "http://127.0.0.1:8000/auth_on_register",
            "response_timeout": "5000",
        },
        "webhook2": {
            "hook": "auth_on_publish",
            "endpoint": "https://auth.example.com/auth_on_publish?x=1",
        },
    }
    assert webhooks.origins["webhook1.hook"] == Origin(path, _line("vmq_webhooks.webhook1.hook"))
    assert config.sections["diversity"].values == {
        "script_dir": "./share/lua",
        "myscript.file": "/etc/vernemq/auth.lua",
        "keep_state": "off",
    }
    assert config.sections["acl"].values == {
        "acl_file": "./etc/vmq.acl",
        "acl_reload_interval": "10",
    }
    assert set(config.sections["passwd"].values) == {"password_file", "password_reload_interval"}

    expected = [
        "accept_eula",
        "allow_register_during_netsplit",
        "allow_publish_during_netsplit",
        "allow_subscribe_during_netsplit",
        "allow_unsubscribe_during_netsplit",
        "allow_multiple_sessions",
        "coordinate_registrations",
        "listener.tcp.buffer_sizes",
        "listener.nr_of_acceptors",
        "listener.vmq.clustering",
        "listener.http.default.http_modules",
        "graphite_enabled",
        "graphite_host",
        "graphite_port",
        "graphite_interval",
        "plugins.vmq_bridge",
        "metadata_plugin",
        "vmq_diversity.auth_postgres.enabled",
        "vmq_diversity.postgres.ssl",
        "vmq_diversity.postgres.password_hash_method",
        "vmq_diversity.auth_redis.enabled",
        "vmq_bcrypt.pool_size",
        "log.console",
        "log.console.file",
        "log.error.file",
        "log.syslog",
        "log.crash",
        "log.crash.file",
        "log.crash.maximum_message_size",
        "log.crash.size",
        "log.crash.rotation",
        "log.crash.rotation.keep",
        "distributed_cookie",
        "erlang.async_threads",
        "erlang.max_ports",
        "erlang.distribution.port_range.minimum",
        "leveldb.maximum_memory.percent",
    ]
    assert [(w.key, w.line) for w in config.warnings] == [(k, _line(k)) for k in expected]
    assert (
        str(config.warnings[0])
        == f"{path}:{_line('accept_eula')}: accept_eula: ignored: not applicable to plugin-host"
    )
    graphite = _line("graphite_enabled")
    assert str(config.warnings[11]) == (
        f"{path}:{graphite}: graphite_enabled: ignored: not supported by plugin-host"
    )
    assert config.log.level == "info"  # log.console.level is honoured


def test_the_sample_in_the_docs_is_the_sample_tested() -> None:
    # docs/configuration.md shows this sample; keep the two in step.
    docs = Path(__file__).parents[2] / "docs" / "configuration.md"
    text = docs.read_text(encoding="utf-8")
    for line in ("vmq_webhooks.webhook1.hook = auth_on_register", "plugins.vmq_webhooks = on"):
        assert line in text


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("vmq_webhooks", "webhooks"),
        ("vmq_diversity", "diversity"),
        ("vmq_passwd", "passwd"),
        ("vmq_acl", "acl"),
    ],
)
def test_plugin_aliases(load, alias: str, name: str) -> None:
    config = load(
        "a.conf",
        f"""
        plugins.{alias} = on
        plugins.{alias}.priority = 7
        plugins.{alias}.on_error = next
        {alias}.some.key = value
        """,
    )
    settings = config.plugin(name)
    assert (settings.name, settings.enabled, settings.priority, settings.on_error) == (
        name,
        True,
        7,
        "next",
    )
    assert config.section(name).values == {"some.key": "value"}
    assert alias not in config.sections and alias not in config.plugins


def test_aliases_in_toml(load) -> None:
    config = load(
        "a.toml",
        """
        [plugins.vmq_webhooks]
        enabled = true
        priority = 1

        [vmq_webhooks.w1]
        hook = "auth_on_register"
        endpoint = "http://127.0.0.1/x"
        response_timeout = 500
        """,
    )
    assert config.plugin("webhooks").priority == 1
    section = config.section("webhooks")
    assert section.values == {
        "w1.hook": "auth_on_register",
        "w1.endpoint": "http://127.0.0.1/x",
        "w1.response_timeout": 500,
    }
    assert section.origins["w1.endpoint"].line == 7


def test_unknown_plugin_sections_are_kept_for_the_plugin_manager(load) -> None:
    config = load("s.conf", "myplugin.url = http://x\nmyplugin.retries = 3\n")
    assert config.section("myplugin").values == {"url": "http://x", "retries": "3"}
    assert "myplugin" not in config.plugins  # enabled by default: only mentioned settings


def test_plugin_path_is_accepted_with_a_warning(load, tmp_path: Path) -> None:
    config = load("p.conf", "plugins.myplugin = on\nplugins.myplugin.path = /opt/plugins/x\n")
    assert config.plugin("myplugin").enabled is True
    assert [str(w) for w in config.warnings] == [
        f"{tmp_path / 'p.conf'}:2: plugins.myplugin.path: ignored: plugins are Python "
        "distributions (pip install) or --plugins-dir files"
    ]


def test_an_ignored_key_set_twice_warns_once(load) -> None:
    config = load("i.conf", "accept_eula = yes\naccept_eula = yes\nerlang.max_ports = 1\n")
    assert [(w.key, w.line) for w in config.warnings] == [
        ("accept_eula", 1),
        ("erlang.max_ports", 3),
    ]


@pytest.mark.parametrize(
    "key",
    [
        "listener.ssl.eccs",
        "listener.ssl.default.psk_support",
        "listener.tcp.active_n",
        "listener.http.default.http_module.vmq_metrics_http.auth.mode",
        "listener.vmqs.clustering",
        "plugins.vmq_bridge.path",
        "vmq_bridge.tcp.br0",
        "vmq_diversity.mysql2.host",
        "vmq_diversity.memcache.port",
        "vmq_diversity.mongodb.ssl.verify",
        "queue_deliver_mode",
        "reg_views",
    ],
)
def test_ignored_key_examples(load, key: str) -> None:
    config = load("i.conf", f"{key} = x\n")
    assert [w.key for w in config.warnings] == [key]
    assert config.warnings[0].reason.startswith("ignored: ")


def test_ignored_lists_are_documented() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text(encoding="utf-8")
    for pattern, _reason in IGNORED_KEYS:
        shown = (
            pattern.replace("diversity.", "vmq_diversity.", 1)
            if pattern.startswith("diversity.")
            else pattern
        )
        assert f"`{shown}`" in docs, pattern
    for option in IGNORED_LISTENER_OPTIONS:
        assert f"`{option}`" in docs, option


def test_conf_hash_inside_a_bare_value_is_not_a_comment(tmp_path) -> None:
    """`a/#` in a topic filter needs no quotes; ` # text` after whitespace is still a comment."""
    from plugin_host.config import load_config

    conf = tmp_path / "vernemq.conf"
    conf.write_text(
        "listener.tcp.default = 127.0.0.1:0\n"
        "plugins.vmq_webhooks = on\n"
        "vmq_webhooks.w1.hook = on_publish\n"
        "vmq_webhooks.w1.endpoint = http://127.0.0.1:9/hook  # the hook service\n"
        "vmq_webhooks.w1.topic_filter = sensors/#\n"
    )
    config = load_config(conf)
    section = config.section("webhooks")
    assert section.get("w1.topic_filter") == "sensors/#"
    assert section.get("w1.endpoint") == "http://127.0.0.1:9/hook"
