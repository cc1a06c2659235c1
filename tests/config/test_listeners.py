"""``listener.*`` keys: kinds, addresses, option inheritance, TLS files."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from plugin_host.config import check_plugin_chains, parse_address
from plugin_host.settings import ConfigError


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A real CA, server certificate and key (trustme) as files next to the config."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_path, cert_path, key_path = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return ca_path, cert_path, key_path


def test_every_kind_and_address_form(load, tls_files) -> None:
    config = load(
        "l.conf",
        """
        listener.tcp.default = 127.0.0.1:1883
        listener.tcp.v6 = [::1]:0
        listener.tcp.any = 0.0.0.0:0
        listener.tcp.named = localhost:0
        listener.ws.default = 127.0.0.1:8080
        listener.http.metrics = 127.0.0.1:8888
        listener.ssl.default = 127.0.0.1:8883
        listener.wss.default = 127.0.0.1:8443
        listener.https.api = 127.0.0.1:8889
        listener.ssl.certfile = cert.pem
        listener.ssl.keyfile = key.pem
        listener.wss.certfile = cert.pem
        listener.wss.keyfile = key.pem
        listener.https.api.certfile = cert.pem
        listener.https.api.keyfile = key.pem
        """,
    )
    got = [(lc.kind, lc.name, lc.host, lc.port) for lc in config.listeners]
    assert got == [
        ("tcp", "default", "127.0.0.1", 1883),
        ("tcp", "v6", "::1", 0),
        ("tcp", "any", "0.0.0.0", 0),
        ("tcp", "named", "localhost", 0),
        ("ws", "default", "127.0.0.1", 8080),
        ("http", "metrics", "127.0.0.1", 8888),
        ("ssl", "default", "127.0.0.1", 8883),
        ("wss", "default", "127.0.0.1", 8443),
        ("https", "api", "127.0.0.1", 8889),
    ]
    _ca, cert, key = tls_files
    ssl = config.listeners[6]
    assert (ssl.certfile, ssl.keyfile) == (cert, key)
    assert config.listeners[1].address == "[::1]:0"
    assert config.listeners[0].origin.line == 1


def test_most_specific_option_wins(load) -> None:
    config = load(
        "o.conf",
        """
        listener.max_connections = 100
        listener.mountpoint = global
        listener.tcp.max_connections = 50
        listener.tcp.a = 127.0.0.1:0
        listener.tcp.b = 127.0.0.1:0
        listener.tcp.b.max_connections = infinity
        listener.tcp.b.allowed_protocol_versions = 4,5
        listener.ws.w = 127.0.0.1:0
        listener.ws.w.ws_path = /ws
        listener.ws.w.max_ws_frame_size = 64KB
        listener.tcp.a.auth_plugins = [vmq_diversity, vmq_webhooks]
        listener.tcp.a.max_connection_lifetime = 1h
        listener.tcp.a.proxy_protocol = on
        """,
    )
    a, b, w = config.listeners
    assert (a.max_connections, b.max_connections, w.max_connections) == (50, None, 100)
    assert a.mountpoint == b.mountpoint == w.mountpoint == "global"
    assert b.allowed_protocol_versions == frozenset({4, 5})
    assert a.allowed_protocol_versions == frozenset({3, 4, 5, 131})
    assert (w.ws_path, w.max_ws_frame_size) == ("/ws", 65536)
    assert a.auth_plugins == ("diversity", "webhooks")
    assert a.max_connection_lifetime == 3600.0
    assert a.proxy_protocol is True and b.proxy_protocol is False


def test_tls_options(load, tls_files) -> None:
    config = load(
        "t.conf",
        """
        listener.ssl.default = 127.0.0.1:0
        listener.ssl.cafile = ca.pem
        listener.ssl.certfile = cert.pem
        listener.ssl.keyfile = key.pem
        listener.ssl.default.require_certificate = on
        listener.ssl.default.use_identity_as_username = on
        listener.ssl.default.tls_version = tlsv1.3
        listener.ssl.default.depth = 3
        listener.ssl.default.keypasswd = hunter2
        listener.ssl.default.ciphers = ECDHE-RSA-AES256-GCM-SHA384
        """,
    )
    (ssl,) = config.listeners[:1]
    ca, _cert, _key = tls_files
    assert ssl.cafile == ca
    assert ssl.require_certificate and ssl.use_identity_as_username
    assert (ssl.tls_version, ssl.depth, ssl.keypasswd) == ("tlsv1.3", 3, "hunter2")
    assert ssl.ciphers == "ECDHE-RSA-AES256-GCM-SHA384"


def test_toml_listener_tables(load) -> None:
    config = load(
        "l.toml",
        """
        [listener]
        max_connections = 10

        [listener.tcp.default]
        address = "127.0.0.1:0"
        mountpoint = "m"

        [listener.tcp]
        other = "[::1]:0"
        """,
    )
    assert [
        (lc.name, lc.address, lc.mountpoint, lc.max_connections) for lc in config.listeners
    ] == [
        ("default", "127.0.0.1:0", "m", 10),
        ("other", "[::1]:0", "", 10),
    ]
    assert config.listeners[0].origin.line == 5


def test_only_an_http_listener_still_gets_the_default_mqtt_listener(load) -> None:
    config = load("h.conf", "listener.http.metrics = 127.0.0.1:0\n")
    assert [(lc.kind, lc.address) for lc in config.listeners] == [
        ("http", "127.0.0.1:0"),
        ("tcp", "127.0.0.1:1883"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1883", ("127.0.0.1", 1883)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::]:1883", ("::", 1883)),
        ("[::1]:65535", ("::1", 65535)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("1883", "expected IP:PORT"),
        ("127.0.0.1", "expected IP:PORT"),
        ("127.0.0.1:99999", "port must be 0..65535"),
        ("127.0.0.1:http", "port must be 0..65535"),
        ("::1:1883", "write IPv6 addresses in brackets"),
        ("[127.0.0.1]:1883", "is not an IPv6 address"),
        ("[::1]1883", "expected IP:PORT"),
        ("example.com:1883", "'example.com' is not an IPv4 address"),
        ("300.1.1.1:1883", "is not an IPv4 address"),
        ("/var/run/mqtt.sock", "unix sockets are not supported"),
    ],
)
def test_bad_addresses(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="bad listener address") as info:
        parse_address(text)
    assert reason in str(info.value)


def test_plugin_chains_must_name_enabled_plugins(load, tmp_path: Path) -> None:
    config = load(
        "chains.conf",
        """
        listener.tcp.a = 127.0.0.1:0
        listener.tcp.b = 127.0.0.1:0
        listener.tcp.authz_plugins = [vmq_webhooks]
        listener.tcp.b.auth_plugins = [vmq_diversity, bogus]
        """,
    )
    check_plugin_chains(config.listeners, ("diversity", "webhooks", "bogus"))  # all enabled
    with pytest.raises(ConfigError) as raised:
        check_plugin_chains(config.listeners, ("diversity", "webhooks"))
    error = raised.value
    assert (error.file, error.line, error.key) == (
        str(tmp_path / "chains.conf"),
        4,
        "listener.tcp.b.auth_plugins",
    )
    assert "bogus: not an enabled plugin (enabled: diversity, webhooks)" in error.reason
    with pytest.raises(ConfigError) as raised:
        check_plugin_chains(config.listeners, ("diversity",))  # inherited from listener.tcp
    assert (raised.value.line, raised.value.key) == (3, "listener.tcp.authz_plugins")
