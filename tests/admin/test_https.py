"""An https admin listener (trustme certificates) and the reload command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trustme

from plugin_host.config import load_config
from plugin_host.http import HTTPPool, HTTPRequestError, TLSOptions
from plugin_host.testing import run_broker


async def test_https_listener_with_the_cli_and_a_verifying_client(
    tmp_path: Path, cli: Any, api_key: str
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(str(tmp_path / "other.pem"))
    conf = tmp_path / "tls.conf"
    conf.write_text(
        "listener.tcp.default = 127.0.0.1:0\n"
        "listener.https.admin = 127.0.0.1:0\n"
        f"listener.https.admin.certfile = {tmp_path / 'server.pem'}\n"
        f"listener.https.admin.keyfile = {tmp_path / 'server.pem'}\n"
        f"admin.api_key = {api_key}\n"
        "allow_anonymous = on\n"
        "persistence = off\n"
    )
    async with run_broker(load_config(conf)) as running:
        url = running.info.admin.url()
        assert url.startswith("https://127.0.0.1:")
        status = await cli(
            "--url",
            url,
            "--api-key",
            api_key,
            "--cafile",
            str(tmp_path / "ca.pem"),
            "status",
            "--json",
        )
        untrusted = await cli(
            "--url",
            url,
            "--api-key",
            api_key,
            "--cafile",
            str(tmp_path / "other.pem"),
            "status",
            ok=False,
        )
        async with HTTPPool(size=1, tls=TLSOptions(cafile=tmp_path / "ca.pem")) as pool:
            health = await pool.request("GET", url + "/health")
        async with HTTPPool(size=1, tls=TLSOptions(cafile=tmp_path / "other.pem")) as pool:
            try:
                await pool.request("GET", url + "/health")
                raise AssertionError("an untrusted certificate was accepted")
            except HTTPRequestError as exc:
                assert exc.kind == "tls"
    assert json.loads(status.stdout)["node"] == "plugin-host"
    assert untrusted.exit_code == 1
    assert "cannot reach the broker" in untrusted.stderr
    assert health.status == 200


async def test_reload_runs_what_sighup_runs(admin_broker: Any, cli: Any) -> None:
    async with admin_broker() as admin:
        calls: list[str] = []
        admin.broker.reloads.register("probe", lambda: calls.append("reloaded") or "done")
        result = json.loads((await admin.cli("reload", "--json")).stdout)
        text = (await admin.cli("reload")).stdout
    assert calls == ["reloaded", "reloaded"]
    assert result["reloaded"]["probe"] == "done"
    assert "probe" in text


async def test_https_certificates_are_reloaded_for_new_connections_only(
    tmp_path: Path, api_key: str
) -> None:
    # What SIGHUP runs (broker.reload()) also reloads https listeners: new handshakes get the
    # new certificate, a keep-alive connection opened before goes on, a bad file keeps the
    # previous certificate.
    old_ca, new_ca = trustme.CA(), trustme.CA()
    server_pem = tmp_path / "server.pem"
    old_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    old_ca.cert_pem.write_to_path(str(tmp_path / "old.pem"))
    new_ca.cert_pem.write_to_path(str(tmp_path / "new.pem"))
    conf = tmp_path / "tls.conf"
    conf.write_text(
        "listener.tcp.default = 127.0.0.1:0\n"
        "listener.https.admin = 127.0.0.1:0\n"
        f"listener.https.admin.certfile = {server_pem}\n"
        f"listener.https.admin.keyfile = {server_pem}\n"
        f"admin.api_key = {api_key}\n"
        "allow_anonymous = on\n"
        "persistence = off\n"
    )
    async with (
        run_broker(load_config(conf)) as running,
        HTTPPool(size=1, tls=TLSOptions(cafile=tmp_path / "old.pem")) as before,
    ):
        url = running.info.admin.url() + "/health"
        assert (await before.request("GET", url)).status == 200  # a keep-alive connection

        new_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
        report = await running.broker.reload()
        assert report["http_listeners"] == {"https.admin": "reloaded"}
        assert running.info.admin.listeners[0].tls_reloads == 1

        async with HTTPPool(size=1, tls=TLSOptions(cafile=tmp_path / "new.pem")) as pool:
            assert (await pool.request("GET", url)).status == 200
        async with HTTPPool(size=1, tls=TLSOptions(cafile=tmp_path / "old.pem")) as pool:
            try:
                await pool.request("GET", url)
                raise AssertionError("the old certificate was still served")
            except HTTPRequestError as exc:
                assert exc.kind == "tls"
        # The connection made before the reload is still served.
        assert (await before.request("GET", url)).status == 200

        server_pem.write_text("half-written garbage")
        report = await running.broker.reload()
        assert report["http_listeners"]["https.admin"].startswith("kept previous certificates")
        async with HTTPPool(size=1, tls=TLSOptions(cafile=tmp_path / "new.pem")) as pool:
            assert (await pool.request("GET", url)).status == 200
