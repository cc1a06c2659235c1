"""TLS through HTTPPool: private CA, mutual TLS, verify off, wrong CA, SNI override, depth."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from plugin_host.http import (
    HTTPPool,
    HTTPRequestError,
    HTTPResponse,
    TLSConfigError,
    TLSOptions,
    build_ssl_context,
)
from plugin_host.testing.http_server import (
    open_http_server,
    self_signed_tls_context,
    server_tls_context,
)


async def _get(options: TLSOptions, url: str) -> HTTPResponse | HTTPRequestError:
    """One GET through a fresh pool: the response, or the error it raised."""
    async with HTTPPool(tls=options) as pool:
        try:
            return await pool.request("GET", url)
        except HTTPRequestError as error:
            return error


async def _tls_error(options: TLSOptions, url: str) -> str:
    error = await _get(options, url)
    assert isinstance(error, HTTPRequestError), error
    assert error.kind == "tls"
    return str(error)


async def test_private_ca_via_cafile(files: Any) -> None:
    async with open_http_server(tls=server_tls_context(files.ca)) as server:
        async with HTTPPool(tls=TLSOptions(cafile=files.cafile)) as pool:
            for _ in range(3):
                assert (await pool.request("POST", server.url("/"), body=b"{}")).status == 200
        assert server.connections_opened == 1  # keep-alive over TLS too
        assert server.sni_names == [None]  # an IP address is never sent as SNI
        response = await _get(TLSOptions(cafile=files.cafile), server.url("/", host="localhost"))
        assert isinstance(response, HTTPResponse) and response.status == 200
        assert server.sni_names[-1] == "localhost"


async def test_wrong_ca_fails_with_the_real_reason(files: Any, tmp_path: Path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with open_http_server(tls=server_tls_context(files.ca)) as server:
        reason = await _tls_error(TLSOptions(cafile=other), server.url("/"))
    assert reason == "certificate verify failed: unable to get local issuer certificate"
    assert server.requests == []


async def test_system_cas_do_not_trust_a_private_ca(files: Any) -> None:
    async with open_http_server(tls=server_tls_context(files.ca)) as server:
        reason = await _tls_error(TLSOptions(), server.url("/"))  # default: system CAs
    assert reason == "certificate verify failed: unable to get local issuer certificate"


async def test_cafile_plus_system_cas(files: Any) -> None:
    async with open_http_server(tls=server_tls_context(files.ca)) as server:
        response = await _get(TLSOptions(cafile=files.cafile, use_system_cas=True), server.url())
    assert isinstance(response, HTTPResponse) and response.status == 200


async def test_verify_off_accepts_a_self_signed_server() -> None:
    async with open_http_server(tls=self_signed_tls_context()) as server:
        reason = await _tls_error(TLSOptions(verify=True), server.url("/"))
        assert reason.startswith("certificate verify failed: self-signed certificate")
        response = await _get(TLSOptions(verify=False), server.url("/"))
        assert isinstance(response, HTTPResponse) and response.status == 200


async def test_mutual_tls_with_client_certificate(files: Any) -> None:
    tls = server_tls_context(files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        options = TLSOptions(cafile=files.cafile, certfile=files.certfile, keyfile=files.keyfile)
        response = await _get(options, server.url("/"))
        assert isinstance(response, HTTPResponse) and response.status == 200
        subject = dict(pair[0] for pair in server.requests[0].client_cert["subject"])
        assert subject["commonName"] == "webhook-client"


async def test_mutual_tls_with_password_protected_key(files: Any) -> None:
    tls = server_tls_context(files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        options = TLSOptions(
            cafile=files.cafile,
            certfile=files.certfile,
            keyfile=files.encrypted_keyfile,
            keyfile_password=files.key_password,
        )
        response = await _get(options, server.url("/"))
        assert isinstance(response, HTTPResponse) and response.status == 200
        assert server.requests[0].client_cert is not None


async def test_missing_client_certificate_is_a_tls_error(files: Any) -> None:
    tls = server_tls_context(files.ca, require_client_cert=True)
    async with open_http_server(tls=tls) as server:
        reason = await _tls_error(TLSOptions(cafile=files.cafile), server.url("/"))
    assert "certificate required" in reason
    assert server.requests == []


async def test_server_name_overrides_sni_and_hostname_check(files: Any) -> None:
    tls = server_tls_context(files.ca, "webhooks.internal.test")
    async with open_http_server(tls=tls) as server:
        reason = await _tls_error(TLSOptions(cafile=files.cafile), server.url("/"))
        assert "IP address mismatch" in reason
        options = TLSOptions(cafile=files.cafile, server_name="webhooks.internal.test")
        response = await _get(options, server.url("/"))
        assert isinstance(response, HTTPResponse) and response.status == 200
        assert server.sni_names[-1] == "webhooks.internal.test"


async def test_depth_limits_intermediate_cas(files: Any) -> None:
    child = files.ca.create_child_ca()
    async with open_http_server(tls=server_tls_context(child)) as server:
        for depth in (None, 1):
            response = await _get(TLSOptions(cafile=files.cafile, depth=depth), server.url("/"))
            assert isinstance(response, HTTPResponse) and response.status == 200
        reason = await _tls_error(TLSOptions(cafile=files.cafile, depth=0), server.url("/"))
        assert reason == (
            "certificate verify failed: chain has 1 intermediate CA(s), more than depth 0"
        )
        assert len(server.requests) == 2


async def test_minimum_tls_version(files: Any) -> None:
    tls = server_tls_context(files.ca)
    tls.maximum_version = ssl.TLSVersion.TLSv1_2
    async with open_http_server(tls=tls) as server:
        response = await _get(TLSOptions(cafile=files.cafile, tls_version="tlsv1.2"), server.url())
        assert isinstance(response, HTTPResponse) and response.status == 200
        options = TLSOptions(cafile=files.cafile, tls_version="TLSv1.3")
        assert "version" in (await _tls_error(options, server.url("/"))).lower()


async def test_plain_http_server_behind_https_url_is_a_tls_error(files: Any) -> None:
    async with open_http_server() as server:
        url = server.url("/").replace("http:", "https:")
        assert await _tls_error(TLSOptions(cafile=files.cafile), url)  # never an empty message


# ---- build_ssl_context: clear errors at start-up


def _error(options: TLSOptions) -> TLSConfigError:
    with pytest.raises(TLSConfigError) as info:
        build_ssl_context(options)
    return info.value


def test_missing_files_are_named(files: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    error = _error(TLSOptions(cafile=missing))
    assert error.option == "cafile"
    assert str(error) == f"cafile: file not found: {missing}"
    error = _error(TLSOptions(cafile=files.cafile, certfile=missing))
    assert error.option == "certfile"
    error = _error(TLSOptions(cafile=files.cafile, certfile=files.certfile, keyfile=missing))
    assert error.option == "keyfile"
    assert _error(TLSOptions(cafile=tmp_path)).reason.startswith("not a regular file")


def test_bad_cafile_content(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("this is not a certificate\n")
    error = _error(TLSOptions(cafile=bad))
    assert error.option == "cafile"
    assert "no usable PEM CA certificate" in error.reason


def test_encrypted_key_needs_the_right_password(files: Any) -> None:
    base = {"cafile": files.cafile, "certfile": files.certfile, "keyfile": files.encrypted_keyfile}
    error = _error(TLSOptions(**base))  # no password: fails instead of prompting
    assert error.option == "keyfile_password"
    assert "is encrypted" in error.reason
    error = _error(TLSOptions(**base, keyfile_password="wrong"))
    assert error.option == "keyfile_password"
    assert "wrong password" in error.reason
    assert build_ssl_context(TLSOptions(**base, keyfile_password=files.key_password))


def test_key_not_matching_certificate(files: Any, tmp_path: Path) -> None:
    other_key = tmp_path / "other.key"
    files.ca.issue_cert("x.test").private_key_pem.write_to_path(str(other_key))
    error = _error(TLSOptions(certfile=files.certfile, keyfile=other_key))
    assert error.option == "certfile"
    assert "does not match" in error.reason


def test_contradictory_or_unknown_options(files: Any) -> None:
    assert _error(TLSOptions(use_system_cas=False)).option == "use_system_cas"
    error = _error(TLSOptions(tls_version="sslv3"))
    assert error.option == "tls_version" and "tlsv1.2" in error.reason
    assert _error(TLSOptions(depth=-1)).option == "depth"
    assert _error(TLSOptions(keyfile=files.keyfile)).option == "certfile"
    # verify off needs no trust anchors at all
    assert build_ssl_context(TLSOptions(verify=False, use_system_cas=False))
    assert "s3cret" not in repr(TLSOptions(keyfile_password="s3cret"))  # never in logs
