"""HTTPS webhooks with real TLS (trustme): private CA, mutual TLS, verify_peer off, failing
closed on a wrong CA with the real reason in the log, per-webhook TLS overriding global."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
import trustme

from plugin_host import Deny
from plugin_host.settings import ConfigError
from plugin_host.testing.http_server import (
    open_http_server,
    self_signed_tls_context,
    server_tls_context,
)


def failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "webhook_failed"]


async def test_private_ca_via_cafile(
    webhooks: Any, conf: Any, tls_files: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server(tls=server_tls_context(tls_files.ca)) as server:
        text = conf(
            f"vmq_webhooks.cafile = {tls_files.cafile}", a=f"auth_on_register {server.url('/')}"
        )
        async with webhooks(text):
            for _ in range(3):
                assert await plugin.auth_on_register(**args.register) is True
        assert server.connections_opened == 1  # one TLS handshake, then keep-alive


async def test_mutual_tls_with_a_password_protected_key(
    webhooks: Any,
    conf: Any,
    tls_files: Any,
    args: Any,
    plugin: Any,
) -> None:
    tls = server_tls_context(tls_files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        text = conf(
            f"vmq_webhooks.cafile = {tls_files.cafile}",
            f"vmq_webhooks.certfile = {tls_files.certfile}",
            f"vmq_webhooks.keyfile = {tls_files.encrypted_keyfile}",
            f"vmq_webhooks.keyfile_password = {tls_files.key_password}",
            a=f"auth_on_register {server.url('/')}",
        )
        async with webhooks(text):
            assert await plugin.auth_on_register(**args.register) is True
        subject = dict(pair[0] for pair in server.requests[0].client_cert["subject"])
        assert subject["commonName"] == "webhooks-client"


async def test_mutual_tls_with_a_plain_key(
    webhooks: Any, conf: Any, tls_files: Any, args: Any, plugin: Any
) -> None:
    tls = server_tls_context(tls_files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        text = conf(
            f"vmq_webhooks.cafile = {tls_files.cafile}",
            f"vmq_webhooks.certfile = {tls_files.certfile}",
            f"vmq_webhooks.keyfile = {tls_files.keyfile}",
            a=f"auth_on_register {server.url('/')}",
        )
        async with webhooks(text):
            assert await plugin.auth_on_register(**args.register) is True


async def test_server_requiring_a_client_certificate_fails_closed(
    webhooks: Any,
    conf: Any,
    tls_files: Any,
    args: Any,
    plugin: Any,
) -> None:
    tls = server_tls_context(tls_files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        text = conf(
            f"vmq_webhooks.cafile = {tls_files.cafile}", a=f"auth_on_register {server.url('/')}"
        )
        async with webhooks(text):
            with structlog.testing.capture_logs() as logs:
                assert await plugin.auth_on_register(**args.register) == Deny("tls_error")
        [line] = failures(logs)
        assert line["kind"] == "tls"
        assert "certificate required" in line["reason"]


async def test_verify_peer_off_accepts_a_self_signed_server(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server(tls=self_signed_tls_context()) as server:
        url = server.url("/")
        async with webhooks(conf(a=f"auth_on_register {url}")):
            with structlog.testing.capture_logs() as logs:
                assert await plugin.auth_on_register(**args.register) == Deny("tls_error")
            assert failures(logs)[0]["reason"].startswith(
                "certificate verify failed: self-signed certificate"
            )
        text = conf("vmq_webhooks.verify_peer = off", a=f"auth_on_register {url}")
        async with webhooks(text):
            assert await plugin.auth_on_register(**args.register) is True


async def test_wrong_ca_fails_closed_with_a_clear_log_line(
    webhooks: Any,
    conf: Any,
    tls_files: Any,
    tmp_path: Path,
    args: Any,
    plugin: Any,
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    async with open_http_server(tls=server_tls_context(tls_files.ca)) as server:
        text = conf(f"vmq_webhooks.cafile = {other_ca}", a=f"auth_on_register {server.url('/a')}")
        async with webhooks(text) as runtime:
            with structlog.testing.capture_logs() as logs:
                assert await plugin.auth_on_register(**args.register) == Deny("tls_error")
            assert runtime.counters["auth_on_register"].errors == 1
        assert server.requests == []
    [line] = failures(logs)
    assert line["log_level"] == "warning"
    assert line["endpoint"] == server.url("/a")
    assert line["hook"] == "auth_on_register"
    assert line["kind"] == "tls"
    assert line["outcome"] == "deny"
    assert line["reason"] == "certificate verify failed: unable to get local issuer certificate"


async def test_per_webhook_tls_overrides_the_global_settings(
    webhooks: Any,
    conf: Any,
    tls_files: Any,
    tmp_path: Path,
    args: Any,
    plugin: Any,
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    tls = server_tls_context(tls_files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        text = conf(
            # Global: the wrong CA and no client certificate.
            f"vmq_webhooks.cafile = {other_ca}",
            # Webhook "good" brings its own CA and client certificate.
            f"vmq_webhooks.good.cafile = {tls_files.cafile}",
            f"vmq_webhooks.good.certfile = {tls_files.certfile}",
            f"vmq_webhooks.good.keyfile = {tls_files.keyfile}",
            good=f"auth_on_register {server.url('/good')}",
            plain=f"auth_on_publish {server.url('/plain')}",
        )
        async with webhooks(text):
            assert await plugin.auth_on_register(**args.register) is True
            with structlog.testing.capture_logs() as logs:
                message = {k: args.register[k] for k in ("username", "mountpoint", "client_id")}
                result = await plugin.auth_on_publish(
                    **message, qos=0, topic="t", payload=b"", retain=False
                )
            assert result == Deny("tls_error")
            # (this server sends its root too, so OpenSSL words it "self-signed ... in chain")
            assert failures(logs)[0]["reason"].startswith("certificate verify failed: ")
        assert [r.path for r in server.requests] == ["/good"]


async def test_server_name_for_sni_and_hostname_check(
    webhooks: Any,
    conf: Any,
    tls_files: Any,
    args: Any,
    plugin: Any,
) -> None:
    tls = server_tls_context(tls_files.ca, "auth.internal.test")
    async with open_http_server(tls=tls) as server:
        text = conf(
            f"vmq_webhooks.cafile = {tls_files.cafile}",
            "vmq_webhooks.b.server_name = auth.internal.test",
            a=f"auth_on_register {server.url('/a')}",
            b=f"auth_on_publish {server.url('/b')}",
        )
        async with webhooks(text):
            with structlog.testing.capture_logs() as logs:
                assert await plugin.auth_on_register(**args.register) == Deny("tls_error")
            assert "IP address mismatch" in failures(logs)[0]["reason"]
            result = await plugin.auth_on_publish(
                username="u",
                mountpoint="",
                client_id="c",
                qos=0,
                topic="t",
                payload=b"",
                retain=False,
            )
            assert result is True
        assert server.sni_names[-1] == "auth.internal.test"


async def test_use_system_cas_off_without_cafile_is_a_config_error(
    webhooks: Any, conf: Any
) -> None:
    text = conf("vmq_webhooks.use_system_cas = off", a="auth_on_register https://127.0.0.1:1/")
    with pytest.raises(ConfigError) as info:
        async with webhooks(text):
            pass
    assert "use_system_cas" in str(info.value)
    assert "nothing is trusted" in str(info.value)


async def test_unusable_tls_files_stop_start_up_at_the_right_key(
    webhooks: Any, conf: Any, tls_files: Any, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    text = conf(f"vmq_webhooks.a.cafile = {missing}", a="auth_on_register https://127.0.0.1:1/")
    with pytest.raises(ConfigError) as info:
        async with webhooks(text):
            pass
    error = info.value
    assert error.key == "webhooks.a.cafile"
    assert error.line == 1
    assert error.file is not None and error.file.endswith(".conf")
    assert f"file not found: {missing}" in error.reason

    text = conf(
        f"vmq_webhooks.certfile = {tls_files.certfile}",
        f"vmq_webhooks.keyfile = {tls_files.encrypted_keyfile}",
        "vmq_webhooks.keyfile_password = wrong",
        a="auth_on_register https://127.0.0.1:1/",
    )
    with pytest.raises(ConfigError) as info:
        async with webhooks(text):
            pass
    assert info.value.key == "webhooks.keyfile_password"
    assert "wrong password" in info.value.reason
    assert "wrong" not in info.value.reason.replace("wrong password", "")  # never the secret
