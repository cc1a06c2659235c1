"""The pools behind the Lua ``http`` module, with the HTTPS options VerneMQ lacks (#1561).

``http.ensure_pool{pool_id=, size=, cafile=, certfile=, keyfile=, keyfile_password=,
verify=, server_name=, use_system_cas=, timeout_ms=, connect_timeout_ms=, on_tls_error=}``
creates a keep-alive pool through the host's one HTTP client (:mod:`plugin_host.http`).
Pools that set neither ``cafile`` nor a client certificate take the plugin-wide defaults
``diversity.http.cafile`` / ``certfile`` / ``keyfile`` / ``keyfile_password``.

Pools are named and shared by every script and state of the plugin instance (as in VerneMQ).
``ensure_pool`` with the options a pool already has does nothing; with other options (a
reloaded script) the pool is replaced and the old one is closed once its requests are done.
``on_tls_error`` stays in Lua (see the prelude): on a TLS failure the script's callback may
allow that one request again without certificate verification, through a second,
non-verifying pool created on first use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio

from plugin_host.http import HTTPPool, HTTPRequestError, HTTPResponse, TLSConfigError, TLSOptions

__all__ = [
    "DEFAULT_POOL",
    "POOL_OPTIONS",
    "HTTPRequestError",
    "LuaHTTP",
    "PoolOptionError",
    "PoolOptions",
    "TLSDefaults",
]

DEFAULT_POOL = "pool_http"
DEFAULT_SIZE = 10
DEFAULT_TIMEOUT = 5.0

POOL_OPTIONS = (
    "pool_id",
    "size",
    "cafile",
    "certfile",
    "keyfile",
    "keyfile_password",
    "verify",
    "server_name",
    "use_system_cas",
    "timeout_ms",
    "connect_timeout_ms",
    "on_tls_error",
)


class PoolOptionError(ValueError):
    """A bad ``http.ensure_pool`` option (raised as a Lua error in the script)."""


@dataclass(frozen=True, slots=True)
class TLSDefaults:
    """``diversity.http.*``: used by pools that set no CA / client certificate of their own."""

    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    keyfile_password: str | None = None


@dataclass(frozen=True, slots=True)
class PoolOptions:
    pool_id: str = DEFAULT_POOL
    size: int = DEFAULT_SIZE
    tls: TLSOptions = field(default_factory=TLSOptions)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float | None = None


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise PoolOptionError(f"{name} is not valid UTF-8") from None
    if not isinstance(value, str) or not value:
        raise PoolOptionError(f"{name} must be a non-empty string")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise PoolOptionError(f"{name} must be true or false")
    return value


def _millis(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PoolOptionError(f"{name} must be a number of milliseconds")
    if value <= 0:
        raise PoolOptionError(f"{name} must be > 0, got {value}")
    return value / 1000.0


def parse_pool_options(
    plain: dict[Any, Any], defaults: TLSDefaults, base_dir: Path | None
) -> PoolOptions:
    """Check the option table of ``http.ensure_pool`` and build :class:`PoolOptions`.

    Relative file names are taken relative to ``base_dir`` (the script's directory).
    """
    values: dict[str, Any] = {}
    for raw_key, value in plain.items():
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        if key not in POOL_OPTIONS:
            raise PoolOptionError(
                f"unknown option {key!r} (known: {', '.join(sorted(POOL_OPTIONS))})"
            )
        values[key] = value

    def path(name: str) -> Path | None:
        if name not in values:
            return None
        file = Path(_text(values[name], name))
        return file if file.is_absolute() or base_dir is None else base_dir / file

    pool_id = _text(values["pool_id"], "pool_id") if "pool_id" in values else DEFAULT_POOL
    size = values.get("size", DEFAULT_SIZE)
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 10_000:
        raise PoolOptionError(f"size must be an integer from 1 to 10000, got {size!r}")
    cafile, certfile, keyfile = path("cafile"), path("certfile"), path("keyfile")
    password = (
        _text(values["keyfile_password"], "keyfile_password")
        if ("keyfile_password" in values)
        else None
    )
    if cafile is None:
        cafile = defaults.cafile
    if certfile is None and keyfile is None:
        certfile, keyfile = defaults.certfile, defaults.keyfile
        password = password or defaults.keyfile_password
    tls = TLSOptions(
        cafile=cafile,
        certfile=certfile,
        keyfile=keyfile,
        keyfile_password=password,
        verify=_flag(values["verify"], "verify") if "verify" in values else True,
        server_name=_text(values["server_name"], "server_name")
        if "server_name" in values
        else None,
        use_system_cas=(
            _flag(values["use_system_cas"], "use_system_cas")
            if "use_system_cas" in values
            else None
        ),
    )
    timeout = (
        _millis(values["timeout_ms"], "timeout_ms") if "timeout_ms" in values else DEFAULT_TIMEOUT
    )
    connect = (
        _millis(values["connect_timeout_ms"], "connect_timeout_ms")
        if "connect_timeout_ms" in values
        else None
    )
    if connect is not None and connect > timeout:
        raise PoolOptionError("connect_timeout_ms must not be longer than timeout_ms")
    return PoolOptions(
        pool_id=pool_id, size=size, tls=tls, timeout=timeout, connect_timeout=connect
    )


def _check_files(tls: TLSOptions) -> None:
    for name in ("cafile", "certfile", "keyfile"):
        file = getattr(tls, name)
        if file is not None and not os.path.isfile(file):
            raise PoolOptionError(f"{name}: file not found: {file}")


class _Pool:
    __slots__ = ("http", "inflight", "insecure", "options", "retired")

    def __init__(self, options: PoolOptions, http: HTTPPool) -> None:
        self.options = options
        self.http = http
        self.insecure: HTTPPool | None = None
        self.inflight = 0
        self.retired = False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.http.aclose()
            if self.insecure is not None:
                await self.insecure.aclose()


def _new_pool(options: PoolOptions, tls: TLSOptions) -> HTTPPool:
    # Builds the SSL context (reads certificate files): run in a worker thread.
    # timeout_ms bounds each request as a whole (pool wait, connect, TLS, send, read);
    # connect_timeout_ms bounds the TCP connect and the TLS handshake of a new connection.
    return HTTPPool(
        size=options.size,
        tls=tls,
        timeout=options.timeout,
        connect_timeout=options.connect_timeout,
    )


class LuaHTTP:
    """The named pools of one plugin instance (closed at the end of its lifespan)."""

    def __init__(self, defaults: TLSDefaults, limiter: trio.CapacityLimiter) -> None:
        self.defaults = defaults
        self._limiter = limiter
        self._pools: dict[str, _Pool] = {}
        self._retired: set[_Pool] = set()
        self._lock = trio.Lock()
        self._closed = False

    def pool(self, pool_id: str) -> _Pool | None:
        return self._pools.get(pool_id)

    async def ensure_pool(self, plain: dict[Any, Any], base_dir: Path | None) -> str:
        """Create (or keep, or replace) a pool; returns its id. Raises PoolOptionError."""
        options = parse_pool_options(plain, self.defaults, base_dir)
        async with self._lock:
            if self._closed:
                raise PoolOptionError("the plugin is shutting down")
            current = self._pools.get(options.pool_id)
            if current is not None and current.options == options:
                return options.pool_id
            _check_files(options.tls)
            try:
                http = await trio.to_thread.run_sync(
                    _new_pool, options, options.tls, limiter=self._limiter
                )
            except TLSConfigError as exc:
                raise PoolOptionError(f"{exc.option}: {exc.reason}") from None
            self._pools[options.pool_id] = _Pool(options, http)
            if current is not None:
                await self._retire(current)
            return options.pool_id

    async def _retire(self, pool: _Pool) -> None:
        pool.retired = True
        if pool.inflight == 0:
            await pool.aclose()
        else:
            self._retired.add(pool)

    async def request(
        self,
        pool_id: str,
        method: str,
        url: str,
        body: bytes | None,
        headers: list[tuple[str, str]],
        *,
        insecure: bool = False,
    ) -> HTTPResponse:
        """One request on pool ``pool_id``; raises HTTPRequestError or PoolOptionError."""
        pool = self._pools.get(pool_id)
        if pool is None:
            raise PoolOptionError(f"unknown pool {pool_id!r} (call http.ensure_pool first)")
        pool.inflight += 1
        try:
            client = pool.http
            if insecure:
                if pool.insecure is None:
                    unverified = replace(pool.options.tls, verify=False)
                    pool.insecure = await trio.to_thread.run_sync(
                        _new_pool, pool.options, unverified, limiter=self._limiter
                    )
                client = pool.insecure
            return await client.request(method, url, body=body, headers=headers)
        finally:
            pool.inflight -= 1
            if pool.retired and pool.inflight == 0 and pool in self._retired:
                self._retired.discard(pool)
                await pool.aclose()

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            pools = [*self._pools.values(), *self._retired]
            self._pools.clear()
            self._retired.clear()
        for pool in pools:
            await pool.aclose()
