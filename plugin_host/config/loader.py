"""``load_config``: a config file (or none) plus command-line overrides -> a validated Config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from plugin_host.config.builder import Builder
from plugin_host.config.conf_file import read_conf
from plugin_host.config.entries import Entry
from plugin_host.config.toml_file import read_toml
from plugin_host.settings import Config, ConfigError


@dataclass(slots=True)
class ConfigOverrides:
    """Command-line settings that win over the file.

    * ``listen``: ``HOST:PORT`` addresses (``--listen``, repeatable). They **replace** every
      ``listener.tcp.*`` listener of the file (other kinds stay); global and ``listener.tcp.*``
      options of the file still apply to them. They are named ``listen1``, ``listen2``, ...
    * ``allow_anonymous``: ``--allow-anonymous`` / ``--no-allow-anonymous``; None = as configured.
    * ``plugins_dirs``: ``--plugins-dir`` (repeatable), searched after the file's ``plugins_dir``.
    * ``log_level`` / ``log_format``: ``--log-level`` / ``--log-format``; None = as configured.
    """

    listen: Sequence[str] = ()
    allow_anonymous: bool | None = None
    plugins_dirs: Sequence[Path] = ()
    log_level: str | None = None
    log_format: str | None = None


def read_file(path: Path) -> list[Entry]:
    """The entries of a ``.toml`` or ``.conf`` file (UTF-8, an optional BOM, any line ends)."""
    file = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".conf"):
        raise ConfigError(
            f"unsupported config file type {suffix or '(none)'!r}: use a .toml or .conf file",
            file=file,
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    text = text.replace("\r\n", "\n")
    return read_toml(text, file) if suffix == ".toml" else read_conf(text, file)


def load_config(path: Path | None, *, overrides: ConfigOverrides | None = None) -> Config:
    """Read ``path`` (``.toml`` or ``.conf``), apply ``overrides``, return the validated Config.

    Without a file: the defaults, one listener ``tcp.default`` on ``127.0.0.1:1883`` and
    ``allow_anonymous = on`` (a working local broker). A file without any MQTT listener gets the
    same default listener; ``allow_anonymous`` then stays as configured (default off).

    Keys that are accepted but have no effect (VerneMQ-only settings) are collected in
    ``Config.warnings``; the caller logs them once logging is configured. Raises
    :class:`ConfigError` (``file:line: key: reason``) for an unreadable file, a syntax error,
    an unknown key, a bad value, a duplicate key (also through an alias spelling) or a bad
    listener address. Plugin sections are kept raw: see :func:`apply_schema`.
    """
    overrides = overrides or ConfigOverrides()
    config = Config()
    builder = Builder(config)
    if path is None:
        config.broker.allow_anonymous = True
    else:
        config.source = path
        for entry in read_file(path):
            builder.add(entry)
    config.listeners = builder.listeners.build(overrides.listen)

    if overrides.allow_anonymous is not None:
        config.broker.allow_anonymous = overrides.allow_anonymous
    config.plugins_dirs.extend(Path(p) for p in overrides.plugins_dirs)
    if overrides.log_level is not None:
        level = overrides.log_level.lower()
        level = "warning" if level == "warn" else level
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"unknown log level {overrides.log_level!r}", key="--log-level")
        config.log.level = level  # type: ignore[assignment]
    if overrides.log_format is not None:
        if overrides.log_format not in ("auto", "console", "json"):
            raise ConfigError(f"unknown log format {overrides.log_format!r}", key="--log-format")
        config.log.format = overrides.log_format  # type: ignore[assignment]
    return config


def log_warnings(config: Config) -> None:
    """Log each collected :class:`ConfigWarning` once (after logging is configured)."""
    log = structlog.get_logger(__name__)
    for warning in config.warnings:
        where = f"{warning.file}:{warning.line}" if warning.file and warning.line else warning.file
        log.warning("config_key_ignored", key=warning.key, where=where, reason=warning.reason)
