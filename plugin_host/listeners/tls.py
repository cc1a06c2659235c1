"""TLS for ``ssl`` and ``wss`` listeners: the server context, its reload, the handshake.

:class:`ServerTLS` holds the current :class:`ssl.SSLContext` of one listener. ``reload()``
builds a new context from the same files (certificate, key, CA, CRL) and swaps it in: the
handshakes that start afterwards use it, connections already established keep theirs (an
``SSLObject`` keeps a reference to the context it was made from), so nobody is dropped. A
reload that fails (a half-written key, a wrong password) keeps the old context and raises.

:meth:`ServerTLS.handshake` runs in the connection's own task (never in the accept loop), so a
slow or hostile client only costs its own task; the caller bounds it with a deadline. A failed
handshake raises :class:`TLSHandshakeError` carrying OpenSSL's reason.

Option mapping (VerneMQ names, spec section 5):

* ``tls_version``: the lowest version offered. TLS 1.0/1.1 are not offered whatever it says
  (they are deprecated, RFC 8996): ``tlsv1``/``tlsv1.1`` mean TLS 1.2.
* ``cafile``: the CAs client certificates must chain to. With it the server asks for a client
  certificate; ``require_certificate = on`` refuses a client without one.
* ``crlfile``: PEM CRLs; the client certificate is checked against its issuer's CRL
  (OpenSSL ``VERIFY_CRL_CHECK_LEAF``: the issuer's CRL must be in the file).
* ``depth``: at most this many intermediate CAs between the client certificate and the trusted
  root (VerneMQ/Erlang meaning). Python's ``ssl`` has no verify-depth setting, so the verified
  chain is counted right after the handshake.
* ``ciphers``: an OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are not configurable).
* ``use_identity_as_username``: the certificate's subject CN becomes the MQTT username.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

# The same file checks and OpenSSL error wording as the HTTPS client side.
from plugin_host.http import (
    TLSConfigError,
    _KeyPasswordMissing,
    _no_password,
    _readable_file,
    _ssl_reason,
)
from plugin_host.settings import ConfigError, ListenerConfig

log = structlog.get_logger(__name__)

__all__ = [
    "PeerCertificate",
    "ServerTLS",
    "TLSHandshakeError",
    "build_server_context",
    "reload_certificates",
]

_VERSIONS = {
    "tlsv1": ssl.TLSVersion.TLSv1_2,
    "tlsv1.1": ssl.TLSVersion.TLSv1_2,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}


class TLSHandshakeError(Exception):
    """The TLS handshake failed; ``reason`` is OpenSSL's (or ours, for ``depth``).

    ``peer_closed``: the client just went away (a port probe, a balancer's TCP health check).
    """

    def __init__(self, reason: str, *, peer_closed: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.peer_closed = peer_closed


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The client certificate of a TLS connection: DER bytes and its subject's common name."""

    der: bytes
    common_name: str | None


def _error(lc: ListenerConfig, option: str, reason: str) -> ConfigError:
    return ConfigError(
        reason,
        key=f"listener.{lc.kind}.{lc.name}.{option}",
        file=lc.origin.file,
        line=lc.origin.line,
    )


def build_server_context(lc: ListenerConfig) -> ssl.SSLContext:
    """A server :class:`ssl.SSLContext` for listener ``lc``; ConfigError naming the option.

    Reads files synchronously (start-up, or a worker thread on reload).
    """
    if lc.certfile is None or lc.keyfile is None:
        raise _error(lc, "certfile", "a TLS listener needs certfile and keyfile")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS.get(lc.tls_version or "tlsv1.2", ssl.TLSVersion.TLSv1_2)
    # Clients may not renegotiate (a CPU-exhaustion vector in TLS 1.2); no compression (CRIME).
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    if lc.ciphers:
        try:
            ctx.set_ciphers(lc.ciphers)
        except ssl.SSLError:
            raise _error(lc, "ciphers", f"no usable cipher in {lc.ciphers!r}") from None
    try:
        certfile = _readable_file("certfile", lc.certfile)
        keyfile = _readable_file("keyfile", lc.keyfile)
    except TLSConfigError as exc:
        raise _error(lc, exc.option, exc.reason) from None
    password: Any = lc.keypasswd if lc.keypasswd else _no_password
    try:
        ctx.load_cert_chain(certfile, keyfile, password=password)
    except _KeyPasswordMissing:
        raise _error(lc, "keypasswd", f"the key in {keyfile} is encrypted: set keypasswd") from None
    except ssl.SSLError as exc:
        reason = _ssl_reason(exc)
        if lc.keypasswd and ("bad decrypt" in reason or "PEM lib" in reason):
            raise _error(lc, "keypasswd", f"cannot decrypt {keyfile}: wrong password") from None
        raise _error(
            lc,
            "certfile",
            f"cannot load certificate {certfile} with key {keyfile}: {reason}"
            " (not PEM, or the key does not match the certificate)",
        ) from None
    if lc.cafile is None:
        for option in ("require_certificate", "use_identity_as_username"):
            if getattr(lc, option):
                raise _error(lc, option, "needs cafile (the CAs client certificates chain to)")
        if lc.crlfile is not None:
            raise _error(lc, "crlfile", "needs cafile (CRLs check client certificates)")
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    _load_verify(lc, ctx, "cafile", lc.cafile)
    if lc.crlfile is not None:
        _load_verify(lc, ctx, "crlfile", lc.crlfile)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = ssl.CERT_REQUIRED if lc.require_certificate else ssl.CERT_OPTIONAL
    return ctx


def _load_verify(lc: ListenerConfig, ctx: ssl.SSLContext, option: str, path: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=_readable_file(option, path))
    except TLSConfigError as exc:
        raise _error(lc, option, exc.reason) from None
    except ssl.SSLError as exc:
        raise _error(lc, option, f"no usable PEM data in {path}: {_ssl_reason(exc)}") from None


class ServerTLS:
    """The TLS side of one listener (see the module docstring)."""

    __slots__ = ("config", "context", "reloads")

    def __init__(self, config: ListenerConfig) -> None:
        self.config = config
        self.context = build_server_context(config)
        self.reloads = 0
        requested = config.tls_version
        if requested in ("tlsv1", "tlsv1.1"):
            log.warning(
                "tls_version_raised",
                listener=config.name,
                configured=requested,
                used="tlsv1.2",
                reason="TLS 1.0/1.1 are deprecated (RFC 8996)",
            )

    async def reload(self) -> None:
        """Re-read the certificate, key, CA and CRL files; ConfigError keeps the old context."""
        self.context = await trio.to_thread.run_sync(build_server_context, self.config)
        self.reloads += 1

    async def handshake(self, transport: trio.abc.Stream) -> trio.SSLStream[Any]:
        """Run the server handshake over ``transport``; TLSHandshakeError when it fails."""
        stream = trio.SSLStream(transport, self.context, server_side=True, https_compatible=True)
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            reason, peer_closed = _handshake_reason(exc)
            raise TLSHandshakeError(reason, peer_closed=peer_closed) from None
        depth = self.config.depth
        if self.context.verify_mode != ssl.CERT_NONE:
            intermediates = _intermediates(stream)
            if intermediates is not None and intermediates > depth:
                raise TLSHandshakeError(
                    f"certificate verify failed: chain has {intermediates} intermediate CA(s), "
                    f"more than depth {depth}"
                )
        return stream


def peer_certificate(stream: trio.SSLStream[Any]) -> PeerCertificate | None:
    """The verified client certificate of a completed handshake (None if it sent none)."""
    der = stream.getpeercert(binary_form=True)
    if not der:
        return None
    return PeerCertificate(der=der, common_name=_common_name(stream.getpeercert()))


def _common_name(cert: Any) -> str | None:
    # getpeercert() gives the subject as a tuple of RDNs, each a tuple of (name, value) pairs;
    # with several CNs the most specific (last) one wins, as in OpenSSL's own tools.
    common_name = None
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                common_name = value
    return common_name


def _intermediates(stream: trio.SSLStream[Any]) -> int | None:
    """Intermediate CAs in the verified client chain (None: no client certificate)."""
    ssl_object = stream._ssl_object  # trio keeps the ssl.SSLObject there; nothing forwards it
    # Public on Python >= 3.13; the same method of the private _sslobj before that.
    get_chain = getattr(ssl_object, "get_verified_chain", None)
    if get_chain is None:
        get_chain = ssl_object._sslobj.get_verified_chain  # type: ignore[attr-defined]
    chain = get_chain()
    if not chain:
        return None
    return max(len(chain) - 2, 0)  # leaf ... intermediates ... trusted root


def _handshake_reason(exc: BaseException) -> tuple[str, bool]:
    """OpenSSL's reason for a failed handshake, and whether the client simply went away."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):
        if isinstance(cause, ssl.SSLEOFError) or cause.reason == "UNEXPECTED_EOF_WHILE_READING":
            return "the client closed the connection during the handshake", True
        return _ssl_reason(cause), False
    if isinstance(cause, OSError):
        return cause.strerror or str(cause), True
    return str(exc) or "the connection broke during the handshake", True


async def reload_certificates(
    listeners: Iterable[tuple[str, str, Callable[[], Awaitable[None]]]],
) -> dict[str, str]:
    """Reload TLS listeners one by one: ``(listener id, name, reload)`` each, where ``reload()``
    re-reads the files and raises ConfigError to keep the previous ones. Returns
    ``{listener id: "reloaded" | "kept previous certificates: <reason>"}``, logging
    ``tls_reloaded`` / ``tls_reload_failed`` (the SIGHUP report of MQTT and https listeners).
    """
    report: dict[str, str] = {}
    for lid, name, reload in listeners:
        try:
            await reload()
        except ConfigError as exc:
            report[lid] = f"kept previous certificates: {exc}"
            log.error("tls_reload_failed", listener=name, error=str(exc))
        else:
            report[lid] = "reloaded"
            log.info("tls_reloaded", listener=name)
    return report
