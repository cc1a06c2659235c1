"""Helpers for the config loader tests: real files in a temporary directory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from plugin_host.config import load_config
from plugin_host.settings import Config, ConfigError

WriteConfig = Callable[[str, str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """``write_config("broker.conf", text)`` -> the path of a file holding dedented ``text``."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_config: WriteConfig) -> Callable[[str, str], Config]:
    """``load("x.conf", text)`` -> the Config of that file."""

    def load_text(name: str, text: str) -> Config:
        return load_config(write_config(name, text))

    return load_text


@pytest.fixture
def config_error(write_config: WriteConfig) -> Callable[[str, str], str]:
    """``config_error("x.conf", text)`` -> ``str`` of the ConfigError loading it raises."""

    def error_of(name: str, text: str) -> str:
        path = write_config(name, text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        return str(info.value)

    return error_of
