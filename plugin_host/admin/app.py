"""The HTTP side of the admin API: a small ASGI application served by hypercorn.

Routes (JSON in and out unless said otherwise; see ``docs/admin.md``)::

    GET    /health                               200 / 503 (no key needed)
    GET    /metrics                              Prometheus text (no key needed)
    GET    /api/v1/status
    GET    /api/v1/sessions                      ?client_id= &mountpoint= &online= &limit=
    GET    /api/v1/sessions/{client_id}          ?mountpoint=
    POST   /api/v1/sessions/{client_id}/disconnect   {"mountpoint": "", "cleanup": false}
    GET    /api/v1/plugins
    GET    /api/v1/webhooks                      ?plugin=
    POST   /api/v1/webhooks                      {"hook": ..., "endpoint": ..., options}
    DELETE /api/v1/webhooks                      ?hook= &endpoint=
    GET    /api/v1/webhooks/cache                ?reset=true
    DELETE /api/v1/webhooks/cache
    GET    /api/v1/scripts                       ?plugin=
    POST   /api/v1/scripts/reload                ?plugin=
    POST   /api/v1/reload
    GET    /api/v1/listeners
    POST   /api/v1/listeners/{id}/stop           {"kill_sessions": false}
    POST   /api/v1/listeners/{id}/start

``/api/...`` needs the key of ``admin.api_key`` in ``Authorization: Bearer <key>`` or
``X-API-Key: <key>`` (compared in constant time, never logged); without a configured key the
admin API answers 403 ``admin_api_disabled`` and only ``/health`` and ``/metrics`` work.
Errors are ``{"error": code, "message": text}`` with 400 (bad input), 401 (no or wrong key),
404 (unknown path, session, webhook, listener, plugin), 405, 409 (already registered, plugin not
running), 413, 500.

Path segments are taken from the raw (still percent-encoded) path, so a client id containing
``/`` is addressed as ``%2F``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import structlog

from plugin_host.admin.metrics import CONTENT_TYPE, render
from plugin_host.admin.service import AdminError, AdminService

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from plugin_host.server import ServerInfo

__all__ = ["MAX_BODY", "AdminApp"]

log = structlog.get_logger(__name__)

#: Largest request body accepted (bytes).
MAX_BODY = 1024 * 1024

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class _Request:
    __slots__ = ("body", "headers", "method", "query", "segments")

    def __init__(
        self,
        method: str,
        segments: list[str],
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        self.method = method
        self.segments = segments
        self.query = query
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        try:
            value = json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AdminError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise AdminError(400, "invalid_json", "the body must be a JSON object")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.query.get(name)
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in _TRUE or value == "":
            return True
        if value in _FALSE:
            return False
        raise AdminError(400, "invalid", f"{name}: expected true or false, got {raw!r}")

    def text(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, default)

    def required(self, name: str) -> str:
        value = self.query.get(name)
        if not value:
            raise AdminError(400, "invalid", f"query parameter {name!r} is required")
        return value


class _Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or []


def _json(status: int, value: Any, headers: list[tuple[bytes, bytes]] | None = None) -> _Response:
    body = json.dumps(value, separators=(",", ":"), default=str).encode() + b"\n"
    return _Response(status, body, headers=headers)


class AdminApp:
    """The ASGI application of one broker's HTTP listeners (see the module docstring).

    ``api_key`` ``None`` disables ``/api/...``; ``registry`` is the broker's own
    :class:`prometheus_client.CollectorRegistry`.
    """

    def __init__(self, info: ServerInfo, registry: CollectorRegistry, api_key: str | None) -> None:
        self.info = info
        self.service = AdminService(info)
        self.registry = registry
        self._key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        # Anything else (websocket) is refused by not accepting it.

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.split(b"?", 1)[0].decode("latin-1")
        segments = [unquote(s) for s in path.split("/") if s]
        try:
            body = await _read_body(receive)
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            request = _Request(method, segments, query, headers, body)
            response = await self._dispatch(request)
        except AdminError as exc:
            headers_out = [(k.encode(), v.encode()) for k, v in exc.headers]
            response = _json(exc.status, exc.as_dict(), headers_out)
        except Exception as exc:
            log.error("admin_request_failed", method=method, path=path, exc_info=exc)
            response = _json(
                500, {"error": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            )
        level = log.debug if method == "GET" and response.status < 400 else log.info
        level("admin_request", method=method, path=path, status=response.status)
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type.encode()),
                    (b"content-length", str(len(response.body)).encode()),
                    (b"cache-control", b"no-store"),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    # ------------------------------------------------------------------------------ routing

    async def _dispatch(self, request: _Request) -> _Response:
        segments = request.segments
        if segments == ["health"]:
            _allow(request, "GET")
            return self._health()
        if segments == ["metrics"]:
            _allow(request, "GET")
            return _Response(200, render(self.registry), CONTENT_TYPE)
        if segments[:2] != ["api", "v1"]:
            raise AdminError(404, "not_found", f"no such path: /{'/'.join(segments)}")
        self._authorise(request)
        return await self._api(request, segments[2:])

    def _authorise(self, request: _Request) -> None:
        if self._key is None:
            raise AdminError(
                403,
                "admin_api_disabled",
                "the admin API is disabled: set admin.api_key in the broker's configuration",
            )
        given: str | None = None
        auth = request.headers.get("authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer":
                given = token.strip()
        if given is None:
            given = request.headers.get("x-api-key")
        if given is None:
            raise AdminError(401, "unauthorized", "missing API key (Authorization: Bearer ...)")
        if not hmac.compare_digest(given.encode(), self._key):
            raise AdminError(401, "unauthorized", "wrong API key")

    def _health(self) -> _Response:
        info = self.info
        listeners: dict[str, str] = {}
        manager = getattr(info.broker, "listeners", None)
        if manager is not None:
            for status in manager.show():
                listeners[status.id] = "up" if status.state == "running" else status.state
        else:
            for bound in info.listeners:
                state = getattr(bound, "state", "running")
                listeners[f"{bound.kind}.{bound.name}"] = "up" if state == "running" else state
        stopping = info.shutdown_requested.is_set()
        healthy = not stopping and all(state == "up" for state in listeners.values())
        body = {
            "status": "ok" if healthy else ("stopping" if stopping else "degraded"),
            "listeners": listeners,
        }
        return _json(200 if healthy else 503, body)

    async def _api(self, request: _Request, path: list[str]) -> _Response:
        service = self.service
        method = request.method
        resource = path[0] if path else ""
        rest = path[1:]
        if resource == "status" and not rest:
            _allow(request, "GET")
            return _json(200, service.status())
        if resource == "sessions":
            return await self._sessions(request, rest)
        if resource == "plugins" and not rest:
            _allow(request, "GET")
            return _json(200, service.plugins())
        if resource == "webhooks":
            return await self._webhooks(request, rest)
        if resource == "scripts":
            plugin = request.text("plugin") or "diversity"
            if not rest:
                _allow(request, "GET")
                return _json(200, service.scripts_show(plugin))
            if rest == ["reload"]:
                _allow(request, "POST")
                return _json(200, await service.scripts_reload(plugin))
        if resource == "reload" and not rest:
            _allow(request, "POST")
            return _json(200, await service.reload())
        if resource == "listeners":
            if not rest:
                _allow(request, "GET")
                return _json(200, service.listeners())
            if len(rest) == 2 and rest[1] in ("start", "stop"):
                _allow(request, "POST")
                if rest[1] == "start":
                    return _json(200, await service.listener_start(rest[0]))
                body = request.json()
                kill = body.get("kill_sessions", False)
                if not isinstance(kill, bool):
                    raise AdminError(400, "invalid", "kill_sessions must be true or false")
                return _json(200, await service.listener_stop(rest[0], kill_sessions=kill))
        raise AdminError(404, "not_found", f"no such path: /api/v1/{'/'.join(path)} ({method})")

    async def _sessions(self, request: _Request, rest: list[str]) -> _Response:
        service = self.service
        if not rest:
            _allow(request, "GET")
            online = request.flag("online") if "online" in request.query else None
            limit_raw = request.text("limit")
            limit = None
            if limit_raw is not None:
                if not limit_raw.isdigit():
                    raise AdminError(400, "invalid", "limit must be a non-negative integer")
                limit = int(limit_raw)
            rows = service.sessions(
                client_id=request.text("client_id"),
                mountpoint=request.text("mountpoint"),
                online=online,
                limit=limit,
            )
            return _json(200, rows)
        client_id = rest[0]
        if len(rest) == 1:
            _allow(request, "GET")
            return _json(200, service.session(client_id, request.text("mountpoint") or ""))
        if rest[1:] == ["disconnect"]:
            _allow(request, "POST")
            body = request.json()
            mountpoint = body.get("mountpoint", request.text("mountpoint") or "")
            cleanup = body.get("cleanup", request.flag("cleanup"))
            if not isinstance(mountpoint, str) or not isinstance(cleanup, bool):
                raise AdminError(400, "invalid", "mountpoint must be a string, cleanup a boolean")
            return _json(200, await service.disconnect(client_id, mountpoint, cleanup=cleanup))
        raise AdminError(404, "not_found", "no such path")

    async def _webhooks(self, request: _Request, rest: list[str]) -> _Response:
        service = self.service
        plugin = request.text("plugin") or "webhooks"
        if not rest:
            _allow(request, "GET", "POST", "DELETE")
            if request.method == "GET":
                return _json(200, service.webhooks_show(plugin))
            if request.method == "POST":
                return _json(201, await service.webhooks_register(request.json(), plugin))
            body = request.json()
            hook = body.get("hook") or request.required("hook")
            endpoint = body.get("endpoint") or request.required("endpoint")
            return _json(200, await service.webhooks_deregister(hook, endpoint, plugin))
        if rest == ["cache"]:
            _allow(request, "GET", "DELETE")
            if request.method == "GET":
                reset = request.flag("reset")
                return _json(200, service.webhooks_cache_show(reset=reset, plugin=plugin))
            return _json(200, service.webhooks_cache_clear(plugin))
        raise AdminError(404, "not_found", "no such path")


def _allow(request: _Request, *methods: str) -> None:
    if request.method not in methods:
        raise AdminError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here (allowed: {', '.join(methods)})",
            [("allow", ", ".join(methods))],
        )


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise AdminError(413, "too_large", f"request body larger than {MAX_BODY} bytes")
        if not message.get("more_body", False):
            break
    return bytes(body)


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to set up: the broker owns every resource; answer the protocol politely.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
