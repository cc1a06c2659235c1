"""Certificates for the HTTP client tests (trustme), written to files like a real deployment."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from plugin_host.testing.http_server import TLSFiles, write_tls_files


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> TLSFiles:
    return write_tls_files(ca, tmp_path, common_name="webhook-client")
