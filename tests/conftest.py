"""Suite-wide test set-up."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``plugin-host serve`` without a config keeps its message store in the platform data dir
    (``$XDG_DATA_HOME/plugin-host``): point that at a temporary directory for the whole run, so
    tests (and the processes they start) never write into the user's directories, and two test
    runs on one machine never share (and lock) one store."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved
