"""The Python side of the Lua modules, shared by every state of one plugin instance.

Synchronous functions (``json``, ``kv``, ``log``, ``crypto``, ``obf``, ``auth_cache``,
``bcrypt.gen_salt``) are called directly from Lua and return ``(ok, value...)``: the prelude
turns ``ok = false`` into a Lua error at the script line that called the module. They never
raise into Lua (a Python exception crossing lupa would carry a Python traceback).

Operations (``http.*``, ``bcrypt.hashpw``, ``require``/``dofile``, ``vmq_api.*``) are what a
coroutine yields; :class:`~plugin_host_diversity.runtime.LuaState` awaits them in the calling
task. They raise :class:`~plugin_host_diversity.runtime.OpError` for a Lua error.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import bcrypt as bcrypt_lib
import structlog
import trio

from plugin_host_diversity.auth_cache import ACLError, AuthCache
from plugin_host_diversity.convert import ConversionError, from_lua, text, to_lua, type_name
from plugin_host_diversity.kv import KVError, KVStore
from plugin_host_diversity.lua_http import HTTPRequestError, LuaHTTP, PoolOptionError
from plugin_host_diversity.obf import Obfuscator
from plugin_host_diversity.runtime import LuaState, OpError

__all__ = ["PluginServices"]

log = structlog.get_logger(__name__)

#: crypto.hash algorithm names (Erlang's crypto names, as VerneMQ scripts use them).
_HASHES = {
    "md4": "md4",
    "md5": "md5",
    "sha": "sha1",
    "sha1": "sha1",
    "sha224": "sha224",
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
    "sha3_224": "sha3_224",
    "sha3_256": "sha3_256",
    "sha3_384": "sha3_384",
    "sha3_512": "sha3_512",
    "blake2b": "blake2b",
    "blake2s": "blake2s",
}

_LOG_LEVELS = {b"debug": "debug", b"info": "info", b"warning": "warning", b"error": "error"}

_MAX_SCRIPT_BYTES = 16 * 1024 * 1024


class _LuaFailure(Exception):
    """Internal: a synchronous module function refuses its arguments."""


def _safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a module function: ``(True, result...)`` or ``(False, message)``, never raise."""

    def wrapper(*args: Any) -> Any:
        try:
            result = fn(*args)
        except (_LuaFailure, ConversionError, KVError, ACLError, ValueError) as exc:
            return (False, str(exc).encode("utf-8", "replace"))
        except Exception as exc:  # a bug here must not escape into Lua as a Python object
            log.exception("lua_module_bug", function=getattr(fn, "__name__", "?"))
            return (False, f"internal error in module function: {exc!r}".encode())
        if isinstance(result, tuple):
            return (True, *result)
        return (True, result)

    return wrapper


def _str_arg(value: Any, what: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    try:
        return text(value, what)
    except ConversionError as exc:
        raise _LuaFailure(str(exc)) from None


def _bytes_arg(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value).encode()
    raise _LuaFailure(f"{what} must be a string, got {type_name(value)}")


class PluginServices:
    """Module implementations of one plugin instance (its kv tables, cache, pools ...)."""

    def __init__(
        self,
        *,
        host: Any,
        kv: KVStore,
        cache: AuthCache,
        obf: Obfuscator,
        http: LuaHTTP,
        bcrypt_rounds: int,
        limiter: trio.CapacityLimiter,
        script_dir: Path | None,
        on_cache_used: Callable[[], None],
    ) -> None:
        self.host = host
        self.kv = kv
        self.cache = cache
        self.obf = obf
        self.http = http
        self.bcrypt_rounds = bcrypt_rounds
        self.limiter = limiter
        self.script_dir = script_dir
        self._on_cache_used = on_cache_used
        # Worker threads that may have been abandoned by a cancelled caller (see
        # _bcrypt_hashpw): counted so that the lifespan can wait for the last one.
        self._threads_lock = threading.Lock()
        self._threads_running = 0
        self._threads_idle = threading.Event()
        self._threads_idle.set()
        self._operations: dict[bytes, Callable[[LuaState, tuple[Any, ...]], Awaitable[Any]]] = {
            b"bcrypt_hashpw": self._bcrypt_hashpw,
            b"http_ensure_pool": self._http_ensure_pool,
            b"http_request": self._http_request,
            b"require": self._require,
            b"read_file": self._read_file,
            b"disconnect_by_subscriber_id": self._disconnect,
            b"reauthorize_subscriptions": self._reauthorize,
        }

    def _thread_started(self) -> None:
        with self._threads_lock:
            self._threads_running += 1
            self._threads_idle.clear()

    def _thread_done(self) -> None:
        with self._threads_lock:
            self._threads_running -= 1
            if self._threads_running == 0:
                self._threads_idle.set()

    async def wait_for_threads(self) -> None:
        """Wait until no worker thread of this plugin is running (lifespan exit)."""
        if not self._threads_idle.is_set():
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._threads_idle.wait)

    # ------------------------------------------------------------------------------------
    # Synchronous functions (H table of each state)
    # ------------------------------------------------------------------------------------

    def functions(self, state: LuaState) -> dict[bytes, Callable[..., Any]]:
        return {
            b"log": partial(self._log, state),
            b"json_encode": _safe(partial(self._json_encode, state)),
            b"json_decode": _safe(partial(self._json_decode, state)),
            b"kv": _safe(partial(self._kv, state)),
            b"crypto_hash": _safe(self._crypto_hash),
            b"obf": _safe(self._obf),
            b"bcrypt_gen_salt": _safe(self._bcrypt_gen_salt),
            b"cache": _safe(partial(self._cache, state)),
        }

    def operation(self, op: bytes) -> Callable[[LuaState, tuple[Any, ...]], Awaitable[Any]]:
        try:
            return self._operations[op]
        except KeyError:
            raise OpError(f"unknown operation {op!r}") from None

    @staticmethod
    def _log(state: LuaState, level: bytes, message: bytes) -> None:
        method = _LOG_LEVELS.get(level, "info")
        getattr(state.log, method)(
            "lua_log", instance=state.instance_id, message=message.decode("utf-8", "replace")
        )

    @staticmethod
    def _json_encode(state: LuaState, value: Any) -> Any:
        # VerneMQ: a value that cannot be encoded gives nil, not an error.
        try:
            plain = _json_keys(from_lua(value, strings="str"))
            return json.dumps(
                plain, separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False
            ).encode("utf-8")
        except (ConversionError, ValueError, TypeError, RecursionError):
            return None

    @staticmethod
    def _json_decode(state: LuaState, data: Any) -> Any:
        if not isinstance(data, bytes):
            raise _LuaFailure(f"json.decode: string expected, got {type_name(data)}")
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            return None
        return to_lua(state.lua, value)

    def _kv(self, state: LuaState, op: bytes, *args: Any) -> Any:
        kv = self.kv
        if op == b"ensure_table":
            opts = from_lua(args[0]) if args and args[0] is not None else {}
            if not isinstance(opts, dict):
                raise _LuaFailure("kv.ensure_table: table of options expected")
            name = _str_arg(opts.get(b"name", b"simple_kv"), "kv.ensure_table: name")
            kind = _str_arg(opts.get(b"type", b"set"), "kv.ensure_table: type")
            return kv.ensure_table(name, kind)
        if not args:
            raise _LuaFailure(f"kv.{op.decode()}: table name expected")
        name = _str_arg(args[0], f"kv.{op.decode()}: table name")
        if op in (b"insert", b"insert_new"):
            objects = from_lua(args[1]) if len(args) > 1 else None
            if not isinstance(objects, dict) or not objects:
                raise _LuaFailure(f"kv.{op.decode()}: a non-empty table of key = value expected")
            pairs = [(_kv_key(k), v) for k, v in objects.items()]
            return kv.insert(name, pairs) if op == b"insert" else kv.insert_new(name, pairs)
        if op == b"lookup":
            values = kv.lookup(name, _kv_key(args[1] if len(args) > 1 else None))
            return to_lua(state.lua, values)
        if op == b"delete":
            return kv.delete(name, _kv_key(args[1] if len(args) > 1 else None))
        if op == b"delete_all":
            return kv.delete_all(name)
        raise _LuaFailure(f"kv: unknown function {op!r}")

    @staticmethod
    def _crypto_hash(alg: Any, data: Any) -> Any:
        name = _HASHES.get(_str_arg(alg, "crypto.hash: algorithm"))
        if name is None:
            raise _LuaFailure(
                f"crypto.hash: unknown algorithm {alg!r} (known: {', '.join(sorted(_HASHES))})"
            )
        payload = _bytes_arg(data, "crypto.hash: data")
        try:
            return hashlib.new(name, payload).digest()
        except ValueError:  # md4 without legacy OpenSSL provider
            raise _LuaFailure(f"crypto.hash: {name} is not available here") from None

    def _obf(self, op: bytes, value: Any) -> Any:
        data = _bytes_arg(value, f"obf.{op.decode()}")
        return self.obf.encrypt(data) if op == b"encrypt" else self.obf.decrypt(data)

    def _bcrypt_gen_salt(self, rounds: Any = None) -> Any:
        if rounds is None:
            rounds = self.bcrypt_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 4 <= rounds <= 31:
            raise _LuaFailure("bcrypt.gen_salt: rounds must be an integer from 4 to 31")
        return bcrypt_lib.gensalt(rounds)

    def _cache(self, state: LuaState, op: bytes, *args: Any) -> Any:
        args = (*args, None, None, None, None, None, None)
        if op == b"insert":
            mountpoint = _str_arg(args[0], "auth_cache.insert: mountpoint")
            client_id = _str_arg(args[1], "auth_cache.insert: client_id")
            username = None if args[2] is None else _str_arg(args[2], "auth_cache.insert: username")
            publish, subscribe = (_acl_list(a, i) for a, i in ((args[3], 4), (args[4], 5)))
            self.cache.insert(mountpoint, client_id, username, publish, subscribe)
            self._on_cache_used()
            return True
        if op == b"match_publish":
            mountpoint = _str_arg(args[0], "auth_cache.match_publish: mountpoint")
            client_id = _str_arg(args[1], "auth_cache.match_publish: client_id")
            topic = _str_arg(args[2], "auth_cache.match_publish: topic")
            qos = _qos(args[3])
            payload = _bytes_arg(args[4], "auth_cache.match_publish: payload")
            if not isinstance(args[5], bool):
                raise _LuaFailure("auth_cache.match_publish: retain must be a boolean")
            found = self.cache.match_publish(
                mountpoint, client_id, topic, qos, len(payload), args[5]
            )
            return _cache_answer(state, found)
        if op == b"match_subscribe":
            mountpoint = _str_arg(args[0], "auth_cache.match_subscribe: mountpoint")
            client_id = _str_arg(args[1], "auth_cache.match_subscribe: client_id")
            topic = _str_arg(args[2], "auth_cache.match_subscribe: topic")
            found = self.cache.match_subscribe(mountpoint, client_id, topic, _qos(args[3]))
            return _cache_answer(state, found)
        raise _LuaFailure(f"auth_cache: unknown function {op!r}")

    # ------------------------------------------------------------------------------------
    # Operations (awaited while the calling coroutine is suspended)
    # ------------------------------------------------------------------------------------

    async def _bcrypt_hashpw(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        password = _op_bytes(args[0] if args else None, "bcrypt.hashpw: password")
        salt = _op_bytes(args[1] if len(args) > 1 else None, "bcrypt.hashpw: salt")

        def work() -> bytes:
            try:
                return bcrypt_lib.hashpw(password, salt)
            finally:
                self._thread_done()

        self._thread_started()
        try:
            # abandon_on_cancel: a cancelled caller does not wait for the hash to finish. The
            # abandoned thread is still owned: the lifespan waits for it (wait_for_threads), as
            # a thread still hashing at interpreter exit aborts the process.
            digest = await trio.to_thread.run_sync(
                work, limiter=self.limiter, abandon_on_cancel=True
            )
        except ValueError as exc:
            raise OpError(f"bcrypt.hashpw: invalid salt or hash ({exc})") from None
        return (digest,)

    async def _http_ensure_pool(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        try:
            plain = from_lua(args[0])
            if not isinstance(plain, dict):
                raise PoolOptionError("a table of options is expected")
            pool_id = await self.http.ensure_pool(plain, state.base_dir)
        except (PoolOptionError, ConversionError) as exc:
            raise OpError(f"http.ensure_pool: {exc}") from None
        return (pool_id.encode(),)

    async def _http_request(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        method, pool_arg, url_arg, body_arg, headers_arg, insecure = (*args, *(None,) * 6)[:6]
        what = f"http.{method.decode().lower()}"
        try:
            pool_id = "pool_http" if pool_arg is None else text(pool_arg, f"{what}: pool_id")
            url = text(url_arg, f"{what}: url")
            body, headers = _request_body(body_arg, headers_arg, what)
        except ConversionError as exc:
            raise OpError(str(exc)) from None
        try:
            response = await self.http.request(
                pool_id, method.decode(), url, body, headers, insecure=bool(insecure)
            )
        except PoolOptionError as exc:
            raise OpError(f"{what}: {exc}") from None
        except HTTPRequestError as exc:
            state.log.warning(
                "lua_http_request_failed",
                pool=pool_id,
                url=url,
                kind=exc.kind,
                reason=exc.message,
                insecure_retry=bool(insecure),
            )
            tls_error = exc.message.encode() if exc.kind == "tls" and not insecure else None
            return (False, None, None, tls_error)
        if insecure:
            state.log.warning("lua_http_tls_error_allowed", pool=pool_id, url=url)
        headers_table: dict[str, str] = {}
        for name, value in response.headers:
            previous = headers_table.get(name)
            headers_table[name] = value if previous is None else f"{previous}, {value}"
        return (response.status, to_lua(state.lua, headers_table), response.body, None)

    def _roots(self, state: LuaState) -> list[Path]:
        roots = [p for p in (self.script_dir, state.base_dir) if p is not None]
        return [Path(os.path.realpath(r)) for r in roots]

    async def _require(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        name = _op_text(args[0], "require: module name")
        templates = _op_text(args[1], "package.path")
        roots = self._roots(state)
        relative = name.replace(".", "/")

        def find() -> tuple[bytes, bytes] | list[str]:
            tried: list[str] = []
            for template in templates.split(";"):
                if not template:
                    continue
                candidate = template.replace("?", relative)
                found = _inside(candidate, roots)
                if found is None:
                    tried.append(f"no file '{candidate}' (outside the script directory)")
                    continue
                if found[0].is_file():
                    return _read(found[0]), found[1].encode()
                tried.append(f"no file '{candidate}'")
            return tried

        result = await trio.to_thread.run_sync(find, limiter=self.limiter)
        if isinstance(result, list):
            raise OpError(f"module '{name}' not found:\n\t" + "\n\t".join(result))
        return result

    async def _read_file(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        filename = _op_text(args[0], "loadfile: file name")
        roots = self._roots(state)
        if state.base_dir is not None and not os.path.isabs(filename):
            filename = str(state.base_dir / filename)

        def read() -> tuple[bytes, bytes]:
            found = _inside(filename, roots)
            if found is None:
                raise OpError(f"cannot open {filename} (outside the script directory)")
            if not found[0].is_file():
                raise OpError(f"cannot open {filename} (no such file)")
            return _read(found[0]), found[1].encode()

        return await trio.to_thread.run_sync(read, limiter=self.limiter)

    async def _disconnect(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        mountpoint, client_id = _subscriber_id(args[0] if args else None)
        opts = from_lua(args[1]) if len(args) > 1 and args[1] is not None else {}
        do_cleanup = bool(isinstance(opts, dict) and opts.get(b"do_cleanup") is True)
        if self.host is None:
            raise OpError("vmq_api: no broker is attached to this plugin")
        found = await self.host.disconnect(client_id, mountpoint, do_cleanup=do_cleanup)
        return (b"ok" if found else b"not_found",)

    async def _reauthorize(self, state: LuaState, args: tuple[Any, ...]) -> Any:
        username = None if not args or args[0] is None else _op_text(args[0], "username")
        mountpoint, client_id = _subscriber_id(args[1] if len(args) > 1 else None)
        method = getattr(self.host, "reauthorize_subscriptions", None)
        if method is None:
            raise OpError("vmq_api.reauthorize_subscriptions is not supported by this broker")
        await method(client_id, mountpoint, username)
        return (b"ok",)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _json_keys(value: Any) -> Any:
    """JSON object keys must be strings (Lua tables may have number keys)."""
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(v) for v in value]
    return value


def _kv_key(value: Any) -> Any:
    if isinstance(value, bytes | int | float | bool):
        return value
    raise _LuaFailure(f"kv: keys must be strings, numbers or booleans, got {type_name(value)}")


def _qos(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise _LuaFailure("auth_cache: qos must be 0, 1 or 2")
    return int(value)


def _acl_list(value: Any, position: int) -> list[Any]:
    if value is None:
        return []
    plain = from_lua(value)
    if plain == {}:
        return []
    if not isinstance(plain, list):
        raise _LuaFailure(f"auth_cache.insert: argument #{position} must be an array of ACLs")
    return plain


def _cache_answer(state: LuaState, found: Any) -> Any:
    if found is None or found is False:
        return False
    if found is True:
        return True
    return to_lua(state.lua, found)


def _op_bytes(value: Any, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    raise OpError(f"{what} must be a string, got {type_name(value)}")


def _op_text(value: Any, what: str) -> str:
    try:
        return text(value, what)
    except ConversionError as exc:
        raise OpError(str(exc)) from None


def _subscriber_id(value: Any) -> tuple[str, str]:
    plain = from_lua(value) if value is not None else None
    if not isinstance(plain, dict) or b"client_id" not in plain:
        raise OpError("vmq_api: subscriber id {mountpoint=, client_id=} expected")
    try:
        return (
            text(plain.get(b"mountpoint", b""), "mountpoint"),
            text(plain[b"client_id"], "client_id"),
        )
    except ConversionError as exc:
        raise OpError(f"vmq_api: {exc}") from None


def _request_body(body: Any, headers: Any, what: str) -> tuple[bytes | None, list[tuple[str, str]]]:
    header_list: list[tuple[str, str]] = []
    if headers is not None:
        plain = from_lua(headers)
        if plain == {}:
            plain = {}
        if not isinstance(plain, dict):
            raise ConversionError(f"{what}: headers must be a table of name = value")
        for name, value in plain.items():
            header_list.append((text(name, f"{what}: header name"), _header_value(value, what)))
    if body is None:
        return None, header_list
    if isinstance(body, bytes):
        return body, header_list
    if isinstance(body, int | float) and not isinstance(body, bool):
        return str(body).encode(), header_list
    plain_body = from_lua(body)
    if plain_body == {}:
        plain_body = {}
    if not isinstance(plain_body, dict):
        raise ConversionError(f"{what}: body must be a string or a table of name = value")
    form = [(k, _form_value(v, what)) for k, v in plain_body.items()]
    if not any(name.lower() == "content-type" for name, _ in header_list):
        header_list.append(("content-type", "application/x-www-form-urlencoded"))
    return urlencode(form).encode("ascii"), header_list


def _header_value(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        return text(value, f"{what}: header value")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ConversionError(f"{what}: header values must be strings")


def _form_value(value: Any, what: str) -> Any:
    if isinstance(value, bytes | str):
        return value
    if isinstance(value, int | float | bool):
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise ConversionError(f"{what}: form values must be strings or numbers")


def _inside(filename: str, roots: list[Path]) -> tuple[Path, str] | None:
    """The real path of ``filename`` and its name relative to the root holding it, if any."""
    real = Path(os.path.realpath(filename))
    for root in roots:
        if real == root or root in real.parents:
            return real, real.relative_to(root).as_posix()
    return None


def _read(path: Path) -> bytes:
    if path.stat().st_size > _MAX_SCRIPT_BYTES:
        raise OpError(f"{path} is larger than {_MAX_SCRIPT_BYTES} bytes")
    return path.read_bytes()
