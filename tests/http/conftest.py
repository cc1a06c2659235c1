"""Certificates for the HTTP client tests (trustme), written to files like a real deployment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from plugin_host.testing.http_server import encrypted_key_pem


@dataclass
class ClientFiles:
    """PEM files on disk: the CA that signs the servers, and a client certificate."""

    ca: trustme.CA
    cafile: Path
    certfile: Path
    keyfile: Path
    encrypted_keyfile: Path
    key_password: str


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> ClientFiles:
    client = ca.issue_cert("client@example.test", common_name="webhook-client")
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    certfile = tmp_path / "client.pem"
    client.cert_chain_pems[0].write_to_path(str(certfile))
    keyfile = tmp_path / "client.key"
    client.private_key_pem.write_to_path(str(keyfile))
    encrypted = tmp_path / "client-encrypted.key"
    encrypted.write_bytes(encrypted_key_pem(client, "s3cret"))
    return ClientFiles(ca, cafile, certfile, keyfile, encrypted, "s3cret")
