"""``render_config``: readable, secrets masked, and loadable again."""

from __future__ import annotations

from pathlib import Path

import trustme

from plugin_host.config import load_config, render_config
from plugin_host.settings import Key


def _tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))


CONF = """
allow_anonymous = on
retry_interval = 1500ms
hook_timeout = 2s
max_last_will_delay = 1d
persistent_client_expiration = 2w
admin.api_key = super-secret-api-key
listener.max_connections = 10
listener.tcp.default = 127.0.0.1:0
listener.tcp.default.mountpoint = "has # hash"
listener.ssl.default = [::1]:0
listener.ssl.certfile = cert.pem
listener.ssl.keyfile = key.pem
listener.ssl.default.keypasswd = tls-key-password
plugins.vmq_webhooks = on
plugins.vmq_webhooks.priority = 2
plugins.vmq_webhooks.on_error = next
vmq_webhooks.w1.hook = auth_on_register
vmq_webhooks.w1.endpoint = http://127.0.0.1/x
vmq_webhooks.keyfile_password = webhook-key-password
vmq_diversity.mysecret = diversity-secret
vmq_diversity.custom = visible-value
vmq_diversity.opaque = plain-but-secret-by-schema
plugins_dir = plugins
persistence.dir = data
"""

SECRETS = (
    "super-secret-api-key",
    "tls-key-password",
    "webhook-key-password",
    "diversity-secret",
    "plain-but-secret-by-schema",
)


def test_render_masks_secrets(load, tmp_path: Path) -> None:
    _tls(tmp_path)
    config = load("r.conf", CONF)
    text = render_config(config, schemas={"diversity": [Key("opaque", secret=True)]})
    for secret in SECRETS:
        assert secret not in text
    assert "admin.api_key = ***" in text
    assert "listener.ssl.default.keypasswd = ***" in text
    assert "webhooks.keyfile_password = ***" in text
    assert "diversity.mysecret = ***" in text
    assert "diversity.opaque = ***" in text
    assert "diversity.custom = visible-value" in text
    assert "listener.tcp.default = 127.0.0.1:0" in text
    assert "listener.ssl.default = [::1]:0" in text
    assert 'listener.tcp.default.mountpoint = "has # hash"' in text
    assert "plugins.webhooks.priority = 2" in text
    assert "retry_interval = 1500ms" in text
    assert "hook_timeout = 2000" in text
    assert "max_last_will_delay = 1d" in text
    assert "persistent_client_expiration = 2w" in text
    assert f"# source: {tmp_path / 'r.conf'}" in text


def test_rendered_config_loads_back_the_same(load, tmp_path: Path) -> None:
    _tls(tmp_path)
    original = load("r.conf", CONF)
    rendered = render_config(original).replace("***", "masked")
    again = load_config(_write(tmp_path / "again.conf", rendered))
    assert again.broker == original.broker
    assert again.persistence == original.persistence
    assert again.plugins_dirs == original.plugins_dirs
    assert [_strip(lc) for lc in again.listeners] == [
        _strip(lc, keypasswd="masked" if lc.keypasswd else None) for lc in original.listeners
    ]
    assert {n: (p.enabled, p.priority, p.on_error) for n, p in again.plugins.items()} == {
        n: (p.enabled, p.priority, p.on_error) for n, p in original.plugins.items()
    }
    assert again.sections["webhooks"].values["w1.endpoint"] == "http://127.0.0.1/x"


def test_render_defaults() -> None:
    text = render_config(load_config(None))
    assert "# source: built-in defaults" in text
    assert "listener.tcp.default = 127.0.0.1:1883" in text
    assert "allow_anonymous = on" in text
    assert "max_inflight_messages = 20" in text
    assert "# admin.api_key = (not set)" in text


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _strip(listener, **changes):
    from dataclasses import replace

    from plugin_host.settings import Origin

    return replace(listener, origin=Origin(), **changes)
