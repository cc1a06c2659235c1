"""Configuration exactly as VerneMQ writes it (.conf) and as TOML, through the real loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from plugin_host.config import apply_schema, load_config
from plugin_host.http import TLSOptions
from plugin_host.settings import ConfigError
from plugin_host_webhooks.config import WebhooksSettings, load_settings, schema


def settings_from(tmp_path: Path, text: str, suffix: str = ".conf") -> WebhooksSettings:
    path = tmp_path / f"broker{suffix}"
    path.write_text(text)
    return load_settings(apply_schema(load_config(path).section("webhooks"), schema()))


def config_error(tmp_path: Path, text: str, suffix: str = ".conf") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        settings_from(tmp_path, text, suffix)
    return info.value


VERNEMQ_CONF = """\
plugins.vmq_webhooks = on
vmq_webhooks.webhook2.hook = auth_on_publish
vmq_webhooks.webhook2.endpoint = https://auth.example.test/publish
vmq_webhooks.webhook2.no_payload = on
vmq_webhooks.webhook2.response_timeout = 1500
vmq_webhooks.webhook1.hook = auth_on_register
vmq_webhooks.webhook1.endpoint = http://127.0.0.1:8080/register
vmq_webhooks.webhook1.base64encode = off
vmq_webhooks.pool_max_connections = 20
vmq_webhooks.pool_timeout = 30000
vmq_webhooks.cafile = /etc/ssl/ca.pem
vmq_webhooks.certfile = /etc/ssl/client.pem
vmq_webhooks.keyfile = /etc/ssl/client.key
vmq_webhooks.keyfile_password = pw
vmq_webhooks.tls_version = tlsv1.3
vmq_webhooks.verify_peer = on
vmq_webhooks.depth = 3
vmq_webhooks.use_crls = off
"""


def test_vernemq_conf_lines_work_verbatim(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, VERNEMQ_CONF)
    assert [w.name for w in settings.webhooks] == ["webhook1", "webhook2"]  # sorted by name
    first, second = settings.webhooks
    assert (first.hook, first.endpoint, first.base64payload) == (
        "auth_on_register",
        "http://127.0.0.1:8080/register",
        False,
    )
    assert (first.no_payload, first.response_timeout) == (False, 5.0)  # defaults
    assert (second.hook, second.no_payload, second.response_timeout) == (
        "auth_on_publish",
        True,
        1.5,
    )
    assert second.base64payload is True
    assert settings.pool_max_connections == 20
    assert settings.pool_timeout == 30.0
    assert settings.use_crls is False
    expected_tls = TLSOptions(
        cafile=Path("/etc/ssl/ca.pem"),
        certfile=Path("/etc/ssl/client.pem"),
        keyfile=Path("/etc/ssl/client.key"),
        keyfile_password="pw",
        tls_version="tlsv1.3",
        verify=True,
        depth=3,
    )
    assert settings.tls == expected_tls
    assert first.tls == second.tls == expected_tls


def test_webhooks_spelling_and_toml_give_the_same_settings(tmp_path: Path) -> None:
    conf = settings_from(
        tmp_path,
        "webhooks.w.hook = on_publish\n"
        "webhooks.w.endpoint = https://h.test/p\n"
        "webhooks.w.topic_filter = sensors/+/temp\n"
        "webhooks.w.cafile = /ca.pem\n"
        "webhooks.w.server_name = h.internal\n"
        "webhooks.verify_peer = off\n"
        "webhooks.use_system_cas = on\n",
    )
    toml = settings_from(
        tmp_path,
        "[vmq_webhooks]\n"
        "verify_peer = false\n"
        "use_system_cas = true\n"
        "[vmq_webhooks.w]\n"
        'hook = "on_publish"\n'
        'endpoint = "https://h.test/p"\n'
        'topic_filter = "sensors/+/temp"\n'
        'cafile = "/ca.pem"\n'
        'server_name = "h.internal"\n',
        suffix=".toml",
    )
    assert conf.webhooks == toml.webhooks
    assert conf.tls == toml.tls == TLSOptions(verify=False, use_system_cas=True, depth=100)
    [hook] = conf.webhooks
    assert hook.topic_filter == "sensors/+/temp"
    assert hook.tls == TLSOptions(
        cafile=Path("/ca.pem"),
        server_name="h.internal",
        verify=False,
        use_system_cas=True,
        depth=100,
    )


def test_defaults(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "")
    assert settings.webhooks == ()
    assert settings.pool_max_connections == 100
    assert settings.pool_timeout == 60.0
    assert settings.cache_max_entries == 100_000
    assert settings.cache_sweep_interval == 10.0
    assert settings.tls == TLSOptions(tls_version="tlsv1.2", verify=True, depth=100)


def test_base64payload_is_accepted_as_the_vmq_admin_spelling(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        "webhooks.a.hook = on_publish\nwebhooks.a.endpoint = http://h/\n"
        "webhooks.a.base64payload = off\n",
    )
    assert settings.webhooks[0].base64payload is False
    error = config_error(
        tmp_path,
        "webhooks.a.hook = on_publish\nwebhooks.a.endpoint = http://h/\n"
        "webhooks.a.base64payload = off\nwebhooks.a.base64encode = off\n",
    )
    assert error.key == "webhooks.a.base64payload"


@pytest.mark.parametrize(
    ("lines", "key", "reason"),
    [
        (["vmq_webhooks.a.hook = auth_on_register"], "webhooks.a.endpoint", "required"),
        (["vmq_webhooks.a.endpoint = http://h/"], "webhooks.a.hook", "required"),
        (
            ["vmq_webhooks.a.hook = on_message_drop", "vmq_webhooks.a.endpoint = http://h/"],
            "webhooks.a.hook",
            "bad value",
        ),
        (
            ["vmq_webhooks.a.hook = on_publish", "vmq_webhooks.a.endpoint = ftp://h/"],
            "webhooks.a.endpoint",
            "http:// or https://",
        ),
        (
            [
                "vmq_webhooks.a.hook = on_register",
                "vmq_webhooks.a.endpoint = http://h/",
                "vmq_webhooks.a.topic_filter = a/+",
            ],
            "webhooks.a.topic_filter",
            "only applies to",
        ),
        (
            [
                "vmq_webhooks.a.hook = on_publish",
                "vmq_webhooks.a.endpoint = http://h/",
                "vmq_webhooks.a.topic_filter = a+/b",
            ],
            "webhooks.a.topic_filter",
            "misplaced '+'",
        ),
        (
            [
                "vmq_webhooks.a.hook = on_publish",
                "vmq_webhooks.a.endpoint = http://h/",
                "vmq_webhooks.a.response_timeout = soon",
            ],
            "webhooks.a.response_timeout",
            "bad value",
        ),
        (["vmq_webhooks.tls_version = sslv3"], "webhooks.tls_version", "bad value"),
        (["vmq_webhooks.a.verify_peeer = on"], "webhooks.a.verify_peeer", "unknown key"),
        (["vmq_webhooks.pool_max_connections = 0"], "webhooks.pool_max_connections", ">= 1"),
        (["vmq_webhooks.cache_sweep_interval = 0"], "webhooks.cache_sweep_interval", "> 0"),
    ],
)
def test_bad_config_names_file_line_and_key(
    tmp_path: Path, lines: list[str], key: str, reason: str
) -> None:
    error = config_error(tmp_path, "\n".join(lines) + "\n")
    assert error.key == key
    assert reason in error.reason
    assert error.file is not None and error.file.endswith("broker.conf")


def test_secret_key_password_is_marked_secret() -> None:
    secret = {key.pattern for key in schema() if key.secret}
    assert secret == {"keyfile_password", "*.keyfile_password"}


async def test_use_crls_on_is_accepted_with_a_warning(webhooks: Any, conf: Any) -> None:
    import structlog

    with structlog.testing.capture_logs() as logs:
        async with webhooks(conf("vmq_webhooks.use_crls = on")):
            pass
    assert [e["event"] for e in logs] == ["webhooks_use_crls_ignored"]


async def test_duplicate_hook_and_endpoint_is_a_config_error(webhooks: Any, conf: Any) -> None:
    text = conf(a="on_publish http://h.test/x", b="on_publish http://h.test/x")
    with pytest.raises(ConfigError, match="same hook and endpoint"):
        async with webhooks(text):
            pass


def test_connect_timeout_is_global_with_per_webhook_overrides(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        "vmq_webhooks.connect_timeout = 250\n"
        "vmq_webhooks.a.hook = auth_on_register\n"
        "vmq_webhooks.a.endpoint = http://127.0.0.1:1/a\n"
        "vmq_webhooks.b.hook = auth_on_publish\n"
        "vmq_webhooks.b.endpoint = http://127.0.0.1:1/b\n"
        "vmq_webhooks.b.connect_timeout = 1s\n",
    )
    assert settings.connect_timeout == 0.25
    assert [w.connect_timeout for w in settings.webhooks] == [0.25, 1.0]


def test_connect_timeout_is_unset_by_default(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, VERNEMQ_CONF)
    assert settings.connect_timeout is None
    assert [w.connect_timeout for w in settings.webhooks] == [None, None]


def test_connect_timeout_must_be_positive(tmp_path: Path) -> None:
    error = config_error(
        tmp_path,
        "vmq_webhooks.a.hook = auth_on_register\n"
        "vmq_webhooks.a.endpoint = http://127.0.0.1:1/a\n"
        "vmq_webhooks.a.connect_timeout = 0\n",
    )
    assert "webhooks.a.connect_timeout" in str(error)
    assert "must be > 0" in str(error)
