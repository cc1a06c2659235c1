"""The plugin's config section: ``diversity.*`` (VerneMQ's ``vmq_diversity.*`` is an alias).

The host validates the section against :func:`schema` and hands it typed to the lifespan;
:func:`parse` still coerces raw strings (a section built by hand in a test, or ``.conf``
values when no schema was applied) and reports bad values with ``file:line`` via
:meth:`PluginSection.error`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from plugin_host.settings import Key, PluginSection
from plugin_host_diversity.lua_http import TLSDefaults
from plugin_host_diversity.runtime import Limits

__all__ = ["DiversityConfig", "ScriptSource", "parse", "schema"]

MB = 1024 * 1024


def schema() -> list[Key]:
    """Keys of the ``diversity`` section (``plugin_host_config_schema``).

    Defaults are written like config values (``max_call_time`` 1000 = 1000 ms); the loader
    converts them. ``*`` patterns get no default, so that ``<name>.file`` does not make the
    loader invent a ``<name>.enabled`` (and the reverse).
    """
    return [
        Key("script_dir", "path", doc="Every *.lua file in it is loaded, in name order; it is "
            "also the directory require() searches."),
        Key("*.file", "path", doc="An extra script, loaded after script_dir (names in order)."),
        Key("nr_lua_states", "int", 1, doc="Lua states per script (a script's num_states "
            "global wins)."),
        Key("keep_state", "bool", False, doc="Keep globals between calls (a script's keep_state "
            "global wins). Off: every call starts from the post-load globals, and a state can "
            "run several calls at once."),
        Key("max_memory", "size", 64 * MB, doc="Memory one Lua state may use (0 = unlimited)."),
        Key("max_instructions", "int", 10_000_000, doc="Lua instructions one call may execute "
            "(0 = unlimited)."),
        Key("max_call_time", "duration_ms", 1000, doc="Lua execution time one call may use, "
            "waits for I/O excluded (0 = unlimited)."),
        Key("http.cafile", "path", doc="CA bundle for http pools that set no cafile."),
        Key("http.certfile", "path", doc="Client certificate for http pools that set none."),
        Key("http.keyfile", "path", doc="Key of http.certfile."),
        Key("http.keyfile_password", "str", secret=True, doc="Password of http.keyfile."),
        Key("bcrypt.default_log_rounds", "int", 12, doc="Cost of bcrypt.gen_salt()."),
        Key("bcrypt.pool_size", "int", 2, doc="Threads hashing bcrypt passwords."),
        Key("reload_on_sighup", "bool", True, doc="Reload the scripts on SIGHUP."),
        Key("*.enabled", "bool", doc="VerneMQ's auth_<db>.enabled: the database modules "
            "are not available, so only 'off' is accepted."),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScriptSource:
    """A script to load: its display name and file."""

    name: str
    path: Path


@dataclass(slots=True)
class DiversityConfig:
    script_dir: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)
    nr_lua_states: int = 1
    keep_state: bool = False
    limits: Limits = field(default_factory=Limits)
    tls: TLSDefaults = field(default_factory=TLSDefaults)
    bcrypt_rounds: int = 12
    bcrypt_threads: int = 2
    reload_on_sighup: bool = True

    def scripts(self) -> list[ScriptSource]:
        """The scripts in load order: script_dir's ``*.lua`` by name, then ``<name>.file``."""
        out: list[ScriptSource] = []
        if self.script_dir is not None and self.script_dir.is_dir():
            for path in sorted(self.script_dir.glob("*.lua")):
                if path.is_file():
                    out.append(ScriptSource(path.stem, path))
        for name in sorted(self.files):
            out.append(ScriptSource(name, self.files[name]))
        return out


_TRUE = {"on", "true", "yes", "1", "enabled"}
_FALSE = {"off", "false", "no", "0", "disabled"}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _bool(section: PluginSection, key: str, default: bool) -> bool:
    value = section.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise section.error(key, f"expected on/off, got {value!r}")


def _int(section: PluginSection, key: str, default: int, low: int, high: int | None = None) -> int:
    value = section.get(key, default)
    try:
        number = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise section.error(key, f"expected an integer {bound}, got {value!r}")
    return number


def _size(section: PluginSection, key: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise section.error(key, f"expected a size like 64MB, got {value!r}")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * {"": 1, "k": 1024, "m": MB, "g": 1024 * MB}[unit]


def _duration(section: PluginSection, key: str, default: float) -> float:
    # Typed (validated) sections hold seconds; raw strings may carry a unit (bare = ms).
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise section.error(key, f"must not be negative, got {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise section.error(key, f"expected a duration like 500ms or 1s, got {value!r}")
    return float(match.group(1)) * _UNITS[(match.group(2) or "ms").lower()]


def _path(section: PluginSection, key: str) -> Path | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    return Path(value).expanduser()


def parse(section: PluginSection) -> DiversityConfig:
    """Build the :class:`DiversityConfig`; raises :class:`ConfigError` for bad values."""
    known = {"script_dir", "nr_lua_states", "keep_state", "max_memory", "max_instructions",
             "max_call_time", "http.cafile", "http.certfile", "http.keyfile",
             "http.keyfile_password", "bcrypt.default_log_rounds", "bcrypt.pool_size",
             "reload_on_sighup"}  # fmt: skip
    files: dict[str, Path] = {}
    for key in section.values:
        if key in known:
            continue
        name, _, rest = key.partition(".")
        if rest == "file" and name:
            path = _path(section, key)
            if path is None:
                raise section.error(key, "expected a file name")
            files[name] = path
        elif rest == "enabled" and name.startswith("auth_"):
            if _bool(section, key, False):
                raise section.error(
                    key,
                    "the bundled database auth scripts need the database modules (mysql, "
                    "postgres, mongodb, redis, memcached), which this plugin does not provide; "
                    "use http from a script instead",
                )
        elif rest.startswith(("ssl", "host", "port", "user", "password", "database", "pool")) or (
            name in ("postgres", "cockroachdb", "mysql", "mysql2", "mongodb", "redis", "memcache")
        ):
            raise section.error(key, "database modules are not provided by this plugin")
        else:
            raise section.error(key, "unknown key")
    max_memory = _size(section, "max_memory", 64 * MB)
    limits = Limits(
        max_memory=max_memory or None,
        max_instructions=_int(section, "max_instructions", 10_000_000, 0),
        max_time=_duration(section, "max_call_time", 1.0),
    )
    tls = TLSDefaults(
        cafile=_path(section, "http.cafile"),
        certfile=_path(section, "http.certfile"),
        keyfile=_path(section, "http.keyfile"),
        keyfile_password=section.get("http.keyfile_password") or None,
    )
    script_dir = _path(section, "script_dir")
    if script_dir is not None and not script_dir.is_dir():
        raise section.error("script_dir", f"not a directory: {script_dir}")
    return DiversityConfig(
        script_dir=script_dir,
        files=files,
        nr_lua_states=_int(section, "nr_lua_states", 1, 1, 1000),
        keep_state=_bool(section, "keep_state", False),
        limits=limits,
        tls=tls,
        bcrypt_rounds=_int(section, "bcrypt.default_log_rounds", 12, 4, 31),
        bcrypt_threads=_int(section, "bcrypt.pool_size", 2, 1, 64),
        reload_on_sighup=_bool(section, "reload_on_sighup", True),
    )
