"""The one internal HTTP client interface: keep-alive pools, TLS options, one error type.

Plugins that call HTTP services (the webhooks plugin, the Lua ``http`` module) use this module
and nothing else, so TLS handling, error messages, timeouts and stale-connection recovery are
the same everywhere. The surface is deliberately small::

    tls = TLSOptions(cafile="ca.pem", certfile="client.pem", keyfile="client.key")
    async with HTTPPool(size=100, idle_timeout=60.0, tls=tls) as pool:
        response = await pool.request(
            "POST", "https://auth.local/hook", body=b"{}",
            headers=[("content-type", "application/json")], timeout=5.0,
        )
        response.status, response.header("cache-control"), response.body

* :class:`TLSOptions` / :func:`build_ssl_context`: CA file, system CAs, client certificate
  (password-protected keys included), verify on/off, SNI/hostname override, minimum TLS
  version, chain depth. Bad files fail at once with :class:`TLSConfigError` naming the option.
* :class:`HTTPPool`: one HTTP/1.1 keep-alive connection pool bounded to ``size`` connections;
  idle connections are dropped after ``idle_timeout``. ``request`` reads the whole response.
  Two deadlines: ``timeout`` bounds the whole request; ``connect_timeout`` (optional) bounds
  opening a new connection (the TCP connect, and the TLS handshake, each), so an unreachable
  server fails fast while a slow answer still has the whole ``timeout``.
* :class:`HTTPRequestError`: the only exception ``request`` raises (besides cancellation), with
  ``kind`` in ``{"timeout", "connect", "tls", "protocol", "pool"}`` and a message that says
  what really happened (for a TLS verification failure, OpenSSL's verify message).
* :class:`PoolSet`: a registry of named pools closed together at the end of a plugin lifespan.

Ownership: pools hold sockets, so they are opened inside a plugin's lifespan
(``async with HTTPPool(...)`` or a :class:`PoolSet` whose ``aclose`` runs at lifespan exit).
Pools start no background task and no thread: idle-expiry and dead-connection checks happen
when the next request asks for a connection.

Why httpx2 (through its transport layer) and not ``asks``: asks 3.0.0 pins anyio 3, which fails
to import on trio >= 0.24 (``trio.MultiError`` was removed), and it sends ``Connection: close``
unless told otherwise, which defeats keep-alive. httpx2 is the maintained httpx fork; its
connection core (httpcore2) has a native trio backend. We use ``httpx2.AsyncHTTPTransport``
rather than ``httpx2.AsyncClient``: the client would add a shared cookie jar (one webhook
response could then change what every later request sends), redirect handling and proxy
settings from the environment, none of which a webhook or a Lua script asked for.

httpx2 is imported lazily (on the first pool) because it costs ~70 ms to import and most
broker deployments never make an HTTP request.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import trio

if TYPE_CHECKING:  # pragma: no cover
    import httpx2

__all__ = [
    "HTTPPool",
    "HTTPRequestError",
    "HTTPResponse",
    "PoolSet",
    "TLSConfigError",
    "TLSOptions",
    "build_ssl_context",
]

ErrorKind = Literal["timeout", "connect", "tls", "protocol", "pool"]

#: Accepted spellings of ``tls_version`` (VerneMQ writes ``tlsv1.2``).
_TLS_VERSIONS: dict[str, ssl.TLSVersion] = {
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.0": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}

_SSL_SUFFIX = re.compile(r"\s*\(_ssl\.c:\d+\)$")


# --------------------------------------------------------------------------------------------
# TLS


class TLSConfigError(ValueError):
    """A TLS option is unusable (missing file, bad key password, unknown version ...).

    ``option`` names the :class:`TLSOptions` field at fault (``"cafile"``, ``"keyfile"`` ...)
    so a caller can point at its own config key.
    """

    def __init__(self, option: str, reason: str) -> None:
        self.option = option
        self.reason = reason
        super().__init__(f"{option}: {reason}")


@dataclass(frozen=True, slots=True)
class TLSOptions:
    """How an HTTPS pool verifies servers and presents itself.

    * ``cafile``: PEM bundle of trusted CAs (added to the system CAs if ``use_system_cas``).
    * ``certfile`` / ``keyfile`` / ``keyfile_password``: client certificate for mutual TLS;
      ``keyfile`` defaults to ``certfile`` (both in one PEM). An encrypted key needs the
      password; without one loading fails instead of prompting on the terminal.
    * ``verify``: check the server certificate and host name (off = accept anything; only for
      tests and closed networks).
    * ``server_name``: the name sent as SNI and checked against the certificate instead of the
      URL's host (e.g. when the URL uses an IP address).
    * ``use_system_cas``: trust the platform CA store; ``None`` = on when no ``cafile`` is set.
    * ``tls_version``: the *minimum* version offered (``"tlsv1.2"`` default; newer versions
      are negotiated when both sides support them).
    * ``depth``: the most intermediate CAs allowed between the server certificate and the
      trust anchor (OpenSSL/Erlang meaning); ``None`` = OpenSSL's default (100).
    """

    cafile: str | Path | None = None
    certfile: str | Path | None = None
    keyfile: str | Path | None = None
    keyfile_password: str | None = field(default=None, repr=False)
    verify: bool = True
    server_name: str | None = None
    use_system_cas: bool | None = None
    tls_version: str | None = "tlsv1.2"
    depth: int | None = None


class _KeyPasswordMissing(Exception):
    pass


def _no_password() -> bytes:
    # Called by OpenSSL only when the key is encrypted. Without this callback OpenSSL would
    # prompt for the pass phrase on the controlling terminal and hang the broker.
    raise _KeyPasswordMissing


def _readable_file(option: str, value: str | Path) -> str:
    path = os.fspath(value)
    if not os.path.exists(path):
        raise TLSConfigError(option, f"file not found: {path}")
    if not os.path.isfile(path):
        raise TLSConfigError(option, f"not a regular file: {path}")
    if not os.access(path, os.R_OK):
        raise TLSConfigError(option, f"file not readable: {path}")
    return path


def _ssl_reason(exc: ssl.SSLError) -> str:
    """A one-line reason for an OpenSSL error, without the ``(_ssl.c:1234)`` noise."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    text = _SSL_SUFFIX.sub("", text)
    if not text or text == "None":
        text = exc.reason or type(exc).__name__
    return text


def build_ssl_context(options: TLSOptions) -> ssl.SSLContext:
    """Build a client :class:`ssl.SSLContext` from ``options``.

    Raises :class:`TLSConfigError` with the option and a precise reason when a file is
    missing or unusable, the key password is wrong or missing, or the options contradict each
    other (verify on but nothing trusted). Reads files synchronously: call it at start-up.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if options.tls_version:
        version = _TLS_VERSIONS.get(options.tls_version.strip().lower().replace("v1_", "v1."))
        if version is None:
            choices = ", ".join(sorted(_TLS_VERSIONS))
            raise TLSConfigError(
                "tls_version", f"unknown TLS version {options.tls_version!r} (use one of {choices})"
            )
        ctx.minimum_version = version
    if options.depth is not None and options.depth < 0:
        raise TLSConfigError("depth", f"must be >= 0, got {options.depth}")

    if options.verify:
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        use_system = options.use_system_cas
        if use_system is None:
            use_system = options.cafile is None
        if not use_system and options.cafile is None:
            raise TLSConfigError(
                "use_system_cas",
                "server verification is on but nothing is trusted: set cafile or use_system_cas",
            )
        if use_system:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if options.cafile is not None:
            cafile = _readable_file("cafile", options.cafile)
            try:
                ctx.load_verify_locations(cafile=cafile)
            except ssl.SSLError as exc:
                raise TLSConfigError(
                    "cafile", f"no usable PEM CA certificate in {cafile}: {_ssl_reason(exc)}"
                ) from None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    if options.certfile is not None or options.keyfile is not None:
        if options.certfile is None:
            raise TLSConfigError("certfile", "keyfile is set but certfile is not")
        certfile = _readable_file("certfile", options.certfile)
        keyfile = _readable_file("keyfile", options.keyfile) if options.keyfile else None
        password: Any = options.keyfile_password if options.keyfile_password else _no_password
        try:
            ctx.load_cert_chain(certfile, keyfile, password=password)
        except _KeyPasswordMissing:
            raise TLSConfigError(
                "keyfile_password", f"the key in {keyfile or certfile} is encrypted: set it"
            ) from None
        except ssl.SSLError as exc:
            reason = _ssl_reason(exc)
            if options.keyfile_password and ("bad decrypt" in reason or "PEM lib" in reason):
                raise TLSConfigError(
                    "keyfile_password", f"cannot decrypt {keyfile or certfile}: wrong password"
                ) from None
            raise TLSConfigError(
                "certfile",
                f"cannot load client certificate {certfile} with key {keyfile or certfile}: "
                f"{reason} (not PEM, or the key does not match the certificate)",
            ) from None
    return ctx


# --------------------------------------------------------------------------------------------
# Requests


class HTTPRequestError(Exception):
    """A request failed; ``kind`` says how, ``str(error)`` says exactly why.

    * ``"timeout"``: no complete response before the deadline (connecting, sending or waiting).
    * ``"pool"``: no pool connection became free before the deadline, or the pool is closed.
    * ``"connect"``: the TCP connection could not be made (refused, unreachable, DNS).
    * ``"tls"``: TLS handshake or certificate verification failed (OpenSSL's reason given).
    * ``"protocol"``: invalid URL, the server broke the connection or HTTP, response too big.
    """

    def __init__(self, kind: ErrorKind, message: str, *, url: str = "") -> None:
        self.kind: ErrorKind = kind
        self.message = message
        self.url = url
        super().__init__(message)


@dataclass(slots=True)
class HTTPResponse:
    """A complete response: ``headers`` keep order and duplicates, names lower-cased."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


class _Attempt:
    """Per-request progress, fed by httpcore2's ``trace`` extension.

    It tells which phase a timeout hit (waiting for the pool vs. talking to the server),
    whether the request went out on a reused keep-alive connection (the only case we retry),
    and it enforces ``depth`` right after the TLS handshake.
    """

    __slots__ = ("depth", "new_connection", "phase", "response_started")

    def __init__(self, depth: int | None) -> None:
        self.phase = "pool"
        self.new_connection = False
        self.response_started = False
        self.depth = depth

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            self.phase = "connect"
            self.new_connection = True
        elif event == "connection.start_tls.started":
            self.phase = "tls"
        elif event == "connection.start_tls.complete" and self.depth is not None:
            await self._check_depth(info.get("return_value"))
        elif event == "http11.send_request_headers.started":
            self.phase = "send"
        elif event == "http11.receive_response_headers.started":
            self.phase = "wait"
        elif event == "http11.receive_response_headers.complete":
            self.phase = "read"
            self.response_started = True

    async def _check_depth(self, stream: Any) -> None:
        # Python's ssl module has no verify-depth setting, so count the verified chain.
        assert self.depth is not None
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        if ssl_object is None:
            return
        # Public on Python >= 3.13; the same method of the private _sslobj before that.
        get_chain = getattr(ssl_object, "get_verified_chain", None)
        if get_chain is None:
            get_chain = ssl_object._sslobj.get_verified_chain
        chain = get_chain()
        intermediates = max(len(chain) - 2, 0)
        if intermediates > self.depth:
            await stream.aclose()
            raise _DepthExceeded(
                f"certificate verify failed: chain has {intermediates} intermediate CA(s), "
                f"more than depth {self.depth}"
            )


class _DepthExceeded(Exception):
    pass


_PHASE_TEXT = {
    "connect": "while connecting",
    "tls": "during the TLS handshake",
    "send": "while sending the request",
    "wait": "waiting for the response",
    "read": "while reading the response",
}


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _connect_reason(exc: BaseException) -> str:
    os_error = _find_cause(exc, OSError)
    if not isinstance(os_error, OSError) or isinstance(os_error, ssl.SSLError):
        return str(exc) or type(exc).__name__
    # trio raises one OSError "all attempts to connect to H:P failed" from a group holding
    # the real error of each address tried: report those.
    group = os_error.__cause__
    if isinstance(group, BaseExceptionGroup):
        reasons = [str(e.strerror or e) for e in group.exceptions if isinstance(e, OSError)]
        if reasons:
            return f"{os_error}: {'; '.join(dict.fromkeys(reasons))}"
    return str(os_error.strerror or os_error) or type(os_error).__name__


def _broken_reason(exc: BaseException) -> str:
    """Why an established connection broke (httpcore often leaves the message empty)."""
    text = str(exc)
    if text and text != type(exc).__name__:
        return text
    os_error = _find_cause(exc, OSError)
    if isinstance(os_error, OSError) and not isinstance(os_error, ssl.SSLError):
        return str(os_error.strerror or os_error)
    return "the server closed or reset the connection"


class HTTPPool:
    """One HTTP/1.1 keep-alive connection pool (any origin; webhooks use one per endpoint).

    ``size`` bounds the open connections: a request that finds them all busy waits for one
    (that wait counts against its timeout and ends as kind ``"pool"``). ``idle_timeout``
    (seconds, ``None`` = forever) closes connections unused that long. ``tls`` is a
    :class:`TLSOptions` (its ``server_name`` becomes the SNI/hostname of every request) or a
    ready :class:`ssl.SSLContext`; ``None`` = system CAs with verification. ``ssl_context``
    may carry the context already built from ``tls`` by :func:`build_ssl_context`, so that
    pools with the same options share one (loading the system CAs takes ~40 ms). ``timeout`` is
    the default per-request deadline in seconds (``None`` = none). ``connect_timeout`` is the
    default bound in seconds on opening a new connection: the TCP connect and the TLS handshake
    are each given at most that long (``None``, the default: only ``timeout`` bounds them;
    either way the whole request stays within ``timeout``). Bodies larger than
    ``max_response_size`` bytes are refused (kind ``"protocol"``).

    Use it as an async context manager, or call :meth:`aclose`. A request made on a
    keep-alive connection that the server closed is repeated once on a fresh connection
    (never a request that may have been answered: only when no response byte arrived).
    """

    def __init__(
        self,
        *,
        size: int = 100,
        idle_timeout: float | None = 60.0,
        tls: TLSOptions | ssl.SSLContext | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float | None = 5.0,
        max_response_size: int = 16 * 1024 * 1024,
        connect_timeout: float | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        _check_timeout("connect_timeout", connect_timeout)
        import httpx2  # lazy: see the module docstring

        self._httpx2 = httpx2
        self.size = size
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_response_size = max_response_size
        if isinstance(tls, ssl.SSLContext):
            ssl_context = tls
            self._server_name: str | None = None
            self._depth: int | None = None
        else:
            options = tls or TLSOptions()
            if ssl_context is None:
                ssl_context = build_ssl_context(options)
            self._server_name = options.server_name
            self._depth = options.depth
        self._transport = httpx2.AsyncHTTPTransport(
            verify=ssl_context,
            trust_env=False,
            http1=True,
            http2=False,
            limits=httpx2.Limits(
                max_connections=size, max_keepalive_connections=size, keepalive_expiry=idle_timeout
            ),
            retries=0,
        )
        self._urls: dict[str, httpx2.URL] = {}
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection; later requests fail with kind ``"pool"``."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._transport.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def open_connections(self) -> int:
        """Connections currently held by the pool (busy or idle)."""
        pool = getattr(self._transport, "_pool", None)
        return len(pool.connections) if pool is not None else 0

    def _url(self, url: str) -> httpx2.URL:
        parsed = self._urls.get(url)
        if parsed is None:
            try:
                parsed = self._httpx2.URL(url)
            except self._httpx2.InvalidURL as exc:
                raise HTTPRequestError("protocol", f"invalid URL {url!r}: {exc}", url=url) from None
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise HTTPRequestError(
                    "protocol", f"invalid URL {url!r}: need http:// or https:// and a host", url=url
                )
            if len(self._urls) > 1024:  # a script building URLs per call must not grow this
                self._urls.clear()
            self._urls[url] = parsed
        return parsed

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
        # A per-request timeout is the interface (webhooks' response_timeout, Lua's options):
        # callers should not each wrap trio.fail_after and lose the phase it expired in.
        timeout: float | None = None,  # noqa: ASYNC109
        connect_timeout: float | None = None,
    ) -> HTTPResponse:
        """Send one request and return the whole response (any status).

        ``timeout`` (seconds) bounds everything: waiting for a pooled connection, connecting,
        TLS, sending and reading; ``None`` uses the pool's default. ``connect_timeout``
        (seconds) bounds the TCP connect and the TLS handshake of a new connection, each;
        ``None`` uses the pool's default. Raises :class:`HTTPRequestError` (a connect timeout
        is kind ``"timeout"``); cancellation propagates (the connection is then closed).
        """
        if self._closed:
            raise HTTPRequestError("pool", "the HTTP pool is closed", url=url)
        parsed = self._url(url)
        if timeout is None:
            timeout = self.timeout
        if connect_timeout is None:
            connect_timeout = self.connect_timeout
        else:
            _check_timeout("connect_timeout", connect_timeout)
        header_list: list[tuple[str, str]] = (
            list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())
        )
        deadline = trio.current_time() + timeout if timeout is not None else float("inf")
        try:
            return await self._attempt(
                method, parsed, url, body, header_list, deadline, timeout, connect_timeout
            )
        except _RetryOnFreshConnection:
            # The server closed an idle keep-alive connection just as we used it; nothing was
            # answered, so sending once more on a new connection is safe.
            return await self._attempt(
                method,
                parsed,
                url,
                body,
                header_list,
                deadline,
                timeout,
                connect_timeout,
                retry=False,
            )

    async def _attempt(
        self,
        method: str,
        parsed: httpx2.URL,
        url: str,
        body: bytes | None,
        headers: list[tuple[str, str]],
        deadline: float,
        timeout: float | None,  # noqa: ASYNC109 (only for the message; deadline rules)
        connect_timeout: float | None,
        *,
        retry: bool = True,
    ) -> HTTPResponse:
        httpx2 = self._httpx2
        attempt = _Attempt(self._depth)
        extensions: dict[str, Any] = {"trace": attempt}
        if self._server_name:
            extensions["sni_hostname"] = self._server_name
        if connect_timeout is not None:
            # httpcore2 gives the TCP connect and the TLS handshake this long each; read,
            # write and pool waits stay unbounded there (our deadline covers them).
            extensions["timeout"] = {"connect": connect_timeout}
        try:
            request = httpx2.Request(
                method, parsed, headers=headers, content=body, extensions=extensions
            )
        except (ValueError, UnicodeError) as exc:  # e.g. a header value with a newline
            raise HTTPRequestError("protocol", f"invalid request: {exc}", url=url) from None
        try:
            with trio.move_on_at(deadline) as scope:
                response = await self._transport.handle_async_request(request)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.stream:  # type: ignore[union-attr]
                        size += len(chunk)
                        if size > self.max_response_size:
                            raise HTTPRequestError(
                                "protocol",
                                f"response body larger than {self.max_response_size} bytes",
                                url=url,
                            )
                        chunks.append(chunk)
                finally:
                    await response.aclose()
                return HTTPResponse(
                    status=response.status_code,
                    headers=[
                        (k.decode("latin-1").lower(), v.decode("latin-1"))
                        for k, v in response.headers.raw
                    ],
                    body=b"".join(chunks),
                )
        except HTTPRequestError:
            raise
        except _DepthExceeded as exc:
            raise HTTPRequestError("tls", str(exc), url=url) from None
        except httpx2.ConnectTimeout as exc:
            if connect_timeout is None:  # pragma: no cover - httpcore2 had no connect bound
                raise self._classify(exc, attempt, url, retry) from None
            phase = "during the TLS handshake" if attempt.phase == "tls" else "while connecting"
            raise HTTPRequestError(
                "timeout", f"connect timed out after {connect_timeout:g}s {phase}", url=url
            ) from None
        except httpx2.TransportError as exc:
            raise self._classify(exc, attempt, url, retry) from None
        assert scope.cancelled_caught
        if attempt.phase == "pool":
            raise HTTPRequestError(
                "pool",
                f"no free connection in the pool (size {self.size}) within {timeout:g}s",
                url=url,
            )
        raise HTTPRequestError(
            "timeout", f"timed out after {timeout:g}s {_PHASE_TEXT[attempt.phase]}", url=url
        )

    def _classify(
        self, exc: BaseException, attempt: _Attempt, url: str, retry: bool
    ) -> BaseException:
        httpx2 = self._httpx2
        ssl_error = _find_cause(exc, ssl.SSLError)
        if isinstance(ssl_error, ssl.SSLError):
            return HTTPRequestError("tls", _ssl_reason(ssl_error), url=url)
        if attempt.phase == "tls":
            return HTTPRequestError("tls", f"TLS handshake failed: {_connect_reason(exc)}", url=url)
        if isinstance(exc, httpx2.UnsupportedProtocol):
            return HTTPRequestError("protocol", str(exc), url=url)
        if isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout):
            return HTTPRequestError("connect", _connect_reason(exc), url=url)
        if (
            retry
            and not attempt.new_connection
            and not attempt.response_started
            and isinstance(exc, httpx2.RemoteProtocolError | httpx2.ReadError | httpx2.WriteError)
        ):
            return _RetryOnFreshConnection()
        reason = _broken_reason(exc)
        phase = _PHASE_TEXT.get(attempt.phase)
        return HTTPRequestError("protocol", f"{reason} ({phase})" if phase else reason, url=url)


class _RetryOnFreshConnection(Exception):
    pass


def _check_timeout(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0 seconds or None, got {value!r}")


class PoolSet:
    """Named pools with one owner: ``aclose`` (or leaving ``async with``) closes them all.

    Open it in a plugin lifespan; add pools as configuration or scripts ask for them.
    """

    def __init__(self) -> None:
        self._pools: dict[str, HTTPPool] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def add(self, name: str, pool: HTTPPool) -> HTTPPool:
        """Register ``pool`` under ``name``; a name is taken once (ValueError otherwise)."""
        if name in self._pools:
            raise ValueError(f"an HTTP pool named {name!r} already exists")
        self._pools[name] = pool
        return pool

    def get(self, name: str) -> HTTPPool | None:
        return self._pools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._pools

    def __iter__(self) -> Any:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    async def remove(self, name: str) -> None:
        """Close and forget one pool (no error when unknown)."""
        pool = self._pools.pop(name, None)
        if pool is not None:
            await pool.aclose()

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
