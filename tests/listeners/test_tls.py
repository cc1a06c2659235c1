"""``listener.ssl.<name>``: real TLS with trustme certificates, paho and the project's client.

Server-only TLS, required client certificates (none, or one from another CA: refused and
logged once with OpenSSL's reason), ``use_identity_as_username`` reaching an auth hook,
``client_cert`` forwarded to a Python hookimpl and to a webhook, CRL, depth, TLS version, the
handshake running in the connection's task with a deadline, and bad TLS settings at start-up.
"""

from __future__ import annotations

import base64
import ssl
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import trio
import trustme

from plugin_host.config import load_config
from plugin_host.settings import ConfigError, ListenerConfig
from plugin_host.testing import ConnectionRefused, open_client, run_broker
from plugin_host.testing.http_server import Request, Response, encrypted_key_pem, open_http_server

WAIT = 10


FAILED = "tls_handshake_failed"


async def _roundtrip(client: Any, topic: str = "tls/t") -> None:
    assert await client.subscribe(topic, qos=1) == [1]
    await client.publish(topic, b"over tls", qos=1)
    assert (await client.receive()).payload == b"over tls"


async def test_server_only_tls_with_the_project_client(pki) -> None:
    async with run_broker(listeners=[pki.listener()]) as broker:
        ctx = pki.client_context()
        async with open_client(broker.address, client_id="c", ssl_context=ctx) as client:
            await _roundtrip(client)
            assert isinstance(client.stream, trio.SSLStream)
            assert client.stream.version() in ("TLSv1.2", "TLSv1.3")
        # No client certificate is asked for without cafile.
        assert broker.broker.listeners.show()[0].type == "mqtts"


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
async def test_server_only_tls_with_paho(pki, paho, protocol) -> None:
    async with run_broker(listeners=[pki.listener()]) as broker:
        client = paho(broker.address, "p", protocol=protocol, tls=pki.client_context())
        assert await client.connect() == 0
        await client.subscribe("tls/paho", 1)
        await client.publish("tls/paho", b"paho over tls", 1)
        assert (await client.receive()).payload == b"paho over tls"
        await client.disconnect()


async def test_client_that_does_not_trust_the_server(pki, paho, logs) -> None:
    other = trustme.CA()
    async with run_broker(listeners=[pki.listener()]) as broker:
        client = paho(broker.address, "x", tls=pki.client_context(trust=other))
        assert not await client.try_connect()
        (failure,) = await logs.wait_for(FAILED)  # the server hears the client's alert
        assert "unknown ca" in failure["reason"].lower()
        assert broker.broker.listeners.show()[0].handshake_failures == 1


async def test_required_client_certificate(pki, paho, logs) -> None:
    listener = pki.listener(client_auth=True, require_certificate=True)
    other_ca = trustme.CA()
    async with run_broker(listeners=[listener]) as broker:
        address = broker.address
        good = pki.client_context(pki.client("alice"))
        async with open_client(address, client_id="alice", ssl_context=good) as client:
            await _roundtrip(client)
        # Without a certificate.
        assert not await paho(address, "none", tls=pki.client_context()).try_connect()
        await logs.wait_for(FAILED, 1)
        # With one from another CA.
        stranger = pki.client_context(pki.client("eve", ca=other_ca))
        assert not await paho(address, "eve", tls=stranger).try_connect()
        await logs.wait_for(FAILED, 2)
        # The project's client too (TLS 1.3 reports the refusal after its own handshake).
        with pytest.raises((ConnectionRefused, trio.BrokenResourceError)):
            async with open_client(address, client_id="n", ssl_context=pki.client_context()):
                pass
        failures = await logs.wait_for(FAILED, 3)
        assert len(failures) == 3, failures  # once per refused client
        assert broker.broker.listeners.show()[0].handshake_failures == 3
        reasons = [f["reason"] for f in failures]
        assert "peer did not return a certificate" in reasons[0]
        assert reasons[1].startswith("certificate verify failed")
        assert all(f["peer"].startswith("127.0.0.1:") and f["listener"] == "tls" for f in failures)
        # Nothing else happened: no connection, no session, the listener still serves.
        assert not broker.broker.sessions or set(broker.broker.sessions) == {("", "alice")}
        async with open_client(address, client_id="alice2", ssl_context=good) as client:
            await _roundtrip(client)


async def test_use_identity_as_username_reaches_auth_on_register(pki, recorder) -> None:
    listener = pki.listener(client_auth=True, use_identity_as_username=True)
    async with run_broker(listeners=[listener], plugins={"rec": recorder}) as broker:
        ctx = pki.client_context(pki.client("device-42"))
        # The CONNECT user name is replaced by the certificate's CN before authentication.
        async with open_client(
            broker.address, client_id="d", username="mallory", password=b"pw", ssl_context=ctx
        ):
            pass
        async with open_client(broker.address, client_id="d5", protocol=5, ssl_context=ctx):
            pass
        # A client without a certificate keeps its own user name (require_certificate is off).
        async with open_client(
            broker.address, client_id="n", username="nocert", ssl_context=pki.client_context()
        ):
            pass
    assert recorder.last("d")["username"] == "device-42"
    assert recorder.last("d")["password"] == b"pw"
    assert recorder.last("d5")["username"] == "device-42"
    assert recorder.last("n")["username"] == "nocert"


@pytest.mark.parametrize("forward", [True, False])
async def test_client_cert_forwarded_to_a_python_hook(pki, recorder, forward) -> None:
    listener = pki.listener(client_auth=True, forward_connection_opts=forward)
    alice = pki.client("alice")
    async with run_broker(listeners=[listener], plugins={"rec": recorder}) as broker:
        async with open_client(
            broker.address, client_id="a", ssl_context=pki.client_context(alice)
        ):
            pass
        port = broker.address[1]
    args = recorder.last("a")
    if forward:
        assert args["client_cert"] == pki.der(alice)
        assert (args["listener_addr"], args["listener_port"]) == ("127.0.0.1", port)
        assert args["listener_type"] == "mqtts"
    else:
        assert args["client_cert"] is None and args["listener_type"] is None


async def test_client_cert_forwarded_to_a_webhook(pki, paho, tmp_path) -> None:
    from plugin_host_webhooks.plugin import WebhooksPlugin

    async def handler(request: Request) -> Response:
        return Response.json({"result": "ok"})

    alice = pki.client("alice")
    async with open_http_server(handler) as server:
        path = tmp_path / "broker.conf"
        path.write_text(
            "listener.ssl.secure = 127.0.0.1:0\n"
            f"listener.ssl.secure.certfile = {pki.certfile}\n"
            f"listener.ssl.secure.keyfile = {pki.keyfile}\n"
            f"listener.ssl.secure.cafile = {pki.cafile}\n"
            "listener.ssl.secure.require_certificate = on\n"
            "listener.ssl.secure.forward_connection_opts = on\n"
            "webhooks.reg.hook = auth_on_register\n"
            f"webhooks.reg.endpoint = {server.url('/reg')}\n"
        )
        async with run_broker(load_config(path), plugins={"webhooks": WebhooksPlugin()}) as b:
            client = paho(b.address, "hooked", tls=pki.client_context(alice))
            assert await client.connect() == 0
            await client.disconnect()
    body = server.requests[0].json()
    assert base64.b64decode(body["client_cert"]) == pki.der(alice)
    assert body["listener_type"] == "mqtts"
    assert body["listener_port"] == b.address[1]


async def test_crl_refuses_a_revoked_certificate(pki, paho, logs) -> None:
    revoked, fine = pki.client("revoked"), pki.client("fine")
    crl = pki.write_crl(pki.dir / "crl.pem", revoked)
    listener = pki.listener(client_auth=True, require_certificate=True, crlfile=crl)
    async with run_broker(listeners=[listener]) as broker:
        ctx = pki.client_context(fine)
        async with open_client(broker.address, client_id="fine", ssl_context=ctx) as client:
            await _roundtrip(client)
        client = paho(broker.address, "r", tls=pki.client_context(revoked))
        assert not await client.try_connect()
        (failure,) = await logs.wait_for(FAILED)
        assert "revoked" in failure["reason"]


@pytest.mark.parametrize("depth, accepted", [(0, False), (1, True)])
async def test_depth_limits_intermediate_cas(pki, paho, logs, depth, accepted) -> None:
    intermediate = pki.ca.create_child_ca()
    leaf = intermediate.issue_cert("chained.clients.test", common_name="chained")
    listener = pki.listener(client_auth=True, require_certificate=True, depth=depth)
    async with run_broker(listeners=[listener]) as broker:
        client = paho(broker.address, "chained", tls=pki.client_context(leaf))
        assert await client.try_connect() is accepted
        if not accepted:
            (failure,) = await logs.wait_for(FAILED)
            assert "1 intermediate CA(s), more than depth 0" in failure["reason"]


async def test_tls_version_is_the_minimum_offered(pki, paho, logs) -> None:
    async with run_broker(listeners=[pki.listener(tls_version="tlsv1.3")]) as broker:
        old = pki.client_context()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        assert not await paho(broker.address, "old", tls=old).try_connect()
        (failure,) = await logs.wait_for(FAILED)
        assert "unsupported protocol" in failure["reason"]
        new = pki.client_context()
        async with open_client(broker.address, client_id="new", ssl_context=new) as client:
            assert client.stream.version() == "TLSv1.3"


async def test_handshake_runs_in_the_connection_task_with_a_deadline(pki, logs) -> None:
    """A client that never sends its ClientHello holds nobody up and is cut at the deadline."""
    async with run_broker(listeners=[pki.listener()], mqtt_connect_timeout=1.0) as broker:
        silent = await trio.open_tcp_stream(*broker.address)
        ctx = pki.client_context()
        with trio.fail_after(WAIT):
            async with open_client(broker.address, client_id="ok", ssl_context=ctx) as c:
                await _roundtrip(c)
            assert await silent.receive_some(10) == b""  # closed by the server
        await silent.aclose()
        (failure,) = await logs.wait_for(FAILED)
        assert failure["reason"] == "timeout after 1 s"


async def test_encrypted_key_with_keypasswd(pki) -> None:
    pki.keyfile.write_bytes(encrypted_key_pem(pki.server, "s3cret"))
    async with run_broker(listeners=[pki.listener(keypasswd="s3cret")]) as broker:
        ctx = pki.client_context()
        async with open_client(broker.address, client_id="k", ssl_context=ctx) as client:
            await _roundtrip(client)


async def _start_up_error(listener: ListenerConfig) -> ConfigError:
    """The ConfigError that stops a broker with ``listener`` from starting."""
    errors: list[ConfigError] = []
    try:
        async with run_broker(listeners=[listener]):
            pass
    except* ConfigError as group:  # run_broker's nursery may wrap it
        errors.extend(e for e in group.exceptions if isinstance(e, ConfigError))
    assert len(errors) == 1, "the broker started"
    return errors[0]


@pytest.mark.parametrize(
    "options, key, reason",
    [
        ({"keypasswd": "wrong"}, "keypasswd", "wrong password"),
        ({}, "keypasswd", "is encrypted: set keypasswd"),
        ({"ciphers": "NOT-A-CIPHER"}, "ciphers", "no usable cipher"),
        ({"require_certificate": True}, "require_certificate", "needs cafile"),
    ],
)
async def test_bad_tls_settings_fail_start_up(pki, options, key, reason) -> None:
    pki.keyfile.write_bytes(encrypted_key_pem(pki.server, "s3cret"))
    if "keypasswd" not in options and key != "keypasswd":
        options = {**options, "keypasswd": "s3cret"}
    error = await _start_up_error(pki.listener(**options))
    assert error.key == f"listener.ssl.tls.{key}"
    assert reason in error.reason
    assert "s3cret" not in str(error)  # never the password


async def test_key_not_matching_the_certificate(pki) -> None:
    other = pki.ca.issue_cert("other.test")
    other.private_key_pem.write_to_path(str(pki.keyfile))
    error = await _start_up_error(pki.listener())
    assert error.key == "listener.ssl.tls.certfile"
    assert "key does not match" in error.reason


async def test_tls_listener_next_to_a_plain_one(pki) -> None:
    plain = ListenerConfig(kind="tcp", name="plain", host="127.0.0.1", port=0)
    async with run_broker(listeners=[plain, pki.listener()]) as broker:
        ctx = pki.client_context()
        async with (
            open_client(broker.listener_address("plain"), client_id="p") as p,
            open_client(broker.listener_address("tls"), client_id="t", ssl_context=ctx) as t,
        ):
            assert await p.subscribe("mixed", qos=1) == [1]
            await t.publish("mixed", b"tls to tcp", qos=1)
            assert (await p.receive()).payload == b"tls to tcp"


async def test_a_client_that_just_goes_away_is_routine(pki, logs) -> None:
    """A TCP probe (a balancer's health check) is logged at info, real failures at warning."""
    async with run_broker(listeners=[pki.listener()]) as broker:
        probe = await trio.open_tcp_stream(*broker.address)
        await probe.aclose()
        (line,) = await logs.wait_for(FAILED)
        assert line["log_level"] == "info"
        assert line["reason"] == "the client closed the connection during the handshake"
        garbage = await trio.open_tcp_stream(*broker.address)
        await garbage.send_all(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")  # MQTT, not TLS
        _, line = await logs.wait_for(FAILED, 2)
        assert line["log_level"] == "warning" and "WRONG_VERSION_NUMBER" in line["reason"]
        await garbage.aclose()
