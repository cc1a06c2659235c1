"""What the admin API can do, independent of HTTP: one method per ``plugin-host admin`` command.

:class:`AdminService` works on a running server (:class:`~plugin_host.server.ServerInfo`): the
broker's sessions, the plugin manager's table, the webhooks plugin's runtime management
methods, the diversity plugin's scripts, the listener manager. Every method returns JSON-ready
values (dicts, lists, strings, numbers) and raises :class:`AdminError` with an HTTP status and
a short error code when the request cannot be served; :mod:`plugin_host.admin.app` maps both
onto HTTP.

Plugins are found by name in the plugin manager: ``webhooks`` (its module's ``runtime()``
returns the running :class:`~plugin_host_webhooks.runtime.Webhooks`) and ``diversity`` (a
:class:`~plugin_host_diversity.plugin.DiversityPlugin` with ``scripts`` and ``reload()``);
requests may name another plugin (``plugin=...``) when such a plugin is installed under
another name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

import plugin_host

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.server import ServerInfo

__all__ = ["AdminError", "AdminService"]

log = structlog.get_logger(__name__)

#: Register options of ``webhooks register`` besides hook and endpoint (and their types).
WEBHOOK_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "base64payload": bool,
    "no_payload": bool,
    "response_timeout": (int, float),
    "topic_filter": str,
    "name": str,
    "cafile": str,
    "certfile": str,
    "keyfile": str,
    "keyfile_password": str,
    "tls_version": str,
    "verify_peer": bool,
    "depth": int,
    "use_system_cas": bool,
    "server_name": str,
}

#: WebhookError codes -> HTTP status.
_WEBHOOK_STATUS = {"already_registered": 409, "not_found": 404, "invalid": 400}


class AdminError(Exception):
    """A request the admin API refuses: ``status`` (HTTP), ``code`` (short, stable), message."""

    def __init__(
        self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        #: Extra response headers (``Allow`` of a 405, ``WWW-Authenticate`` of a 401).
        self.headers = list(headers or ())
        if status == 401:
            self.headers.append(("www-authenticate", "Bearer"))
        super().__init__(message)

    def as_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


def _session_dict(info: Any, broker: Broker) -> dict[str, Any]:
    out = dataclasses.asdict(info)
    out["subscriptions"] = [{"topic": t, "qos": q} for t, q in info.subscriptions]
    session = broker.sessions.get((info.mountpoint, info.client_id))
    if session is not None:
        out["dropped_messages"] = session.dropped
    return out


class AdminService:
    """The admin operations on one running server (see the module docstring)."""

    def __init__(self, info: ServerInfo) -> None:
        self.info = info

    @property
    def broker(self) -> Broker:
        broker = self.info.broker
        if broker is None:  # pragma: no cover - the server sets it before serving
            raise AdminError(503, "not_ready", "the broker is not running")
        return broker

    # ------------------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """Node name, version, uptime and the main counters."""
        from plugin_host.admin.metrics import snapshot

        broker = self.broker
        return {
            "node": broker.cfg.nodename,
            "version": plugin_host.__version__,
            **snapshot(broker),
        }

    # ------------------------------------------------------------------------------ sessions

    def sessions(
        self,
        *,
        client_id: str | None = None,
        mountpoint: str | None = None,
        online: bool | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Sessions (online and offline), sorted by mountpoint and client id, filtered."""
        broker = self.broker
        rows = []
        for info in sorted(broker.sessions_info(), key=lambda s: (s.mountpoint, s.client_id)):
            if client_id is not None and info.client_id != client_id:
                continue
            if mountpoint is not None and info.mountpoint != mountpoint:
                continue
            if online is not None and info.online != online:
                continue
            rows.append(_session_dict(info, broker))
            if limit is not None and len(rows) >= limit:
                break
        return rows

    def session(self, client_id: str, mountpoint: str = "") -> dict[str, Any]:
        info = self.broker.session_info(client_id, mountpoint)
        if info is None:
            raise AdminError(404, "not_found", f"no session {_sid(client_id, mountpoint)}")
        return _session_dict(info, self.broker)

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, cleanup: bool = False
    ) -> dict[str, Any]:
        """Disconnect a client (v5: DISCONNECT 0x98); ``cleanup`` also deletes its session."""
        found = await self.broker.disconnect(client_id, mountpoint, do_cleanup=cleanup)
        if not found:
            raise AdminError(404, "not_found", f"no session {_sid(client_id, mountpoint)}")
        log.info("admin_disconnect", client_id=client_id, mountpoint=mountpoint, cleanup=cleanup)
        return {
            "client_id": client_id,
            "mountpoint": mountpoint,
            "disconnected": True,
            "cleanup": cleanup,
        }

    # ------------------------------------------------------------------------------ plugins

    def plugins(self) -> list[dict[str, Any]]:
        """The plugin manager's table (``plugin-host plugins``), chain order first."""
        manager = self.info.plugins
        if manager is None:
            return []
        rows = []
        for row in manager.table():
            item = dataclasses.asdict(row)
            item["hooks"] = list(row.hooks)
            rows.append(item)
        return rows

    def _plugin(self, name: str) -> Any:
        manager = self.info.plugins
        if manager is None or name not in manager.names:
            raise AdminError(404, "plugin_not_enabled", f"plugin {name!r} is not enabled")
        return manager.plugin(name)

    # ------------------------------------------------------------------------------ webhooks

    def _webhooks(self, plugin: str) -> Any:
        obj = self._plugin(plugin)
        runtime = getattr(obj, "runtime", None)
        if not callable(runtime):
            raise AdminError(404, "plugin_not_enabled", f"plugin {plugin!r} has no webhooks")
        try:
            return runtime()
        except RuntimeError as exc:
            raise AdminError(409, "plugin_not_running", str(exc)) from None

    @staticmethod
    def _webhook_error(exc: Exception) -> AdminError:
        code = getattr(exc, "code", "invalid")
        return AdminError(_WEBHOOK_STATUS.get(code, 400), code, str(exc))

    def webhooks_show(self, plugin: str = "webhooks") -> list[dict[str, Any]]:
        """Every registered webhook, with its hook's request counters."""
        webhooks = self._webhooks(plugin)
        stats = webhooks.stats()
        rows = []
        for row in webhooks.show():
            item = dict(row)
            item["stats"] = stats.get(row["hook"], {})
            rows.append(item)
        return rows

    async def webhooks_register(
        self, body: Mapping[str, Any], plugin: str = "webhooks"
    ) -> dict[str, Any]:
        """Register ``body["endpoint"]`` for ``body["hook"]`` (options as in the config)."""
        hook = _required_str(body, "hook")
        endpoint = _required_str(body, "endpoint")
        options: dict[str, Any] = {}
        for key, value in body.items():
            if key in ("hook", "endpoint") or value is None:
                continue
            expected = WEBHOOK_OPTIONS.get(key)
            if expected is None:
                known = ", ".join(sorted(WEBHOOK_OPTIONS))
                raise AdminError(400, "invalid", f"unknown option {key!r} (known: {known})")
            if not isinstance(value, expected) or (
                isinstance(value, bool) and expected is not bool
            ):
                raise AdminError(400, "invalid", f"{key}: wrong type {type(value).__name__}")
            options[key] = value
        webhooks = self._webhooks(plugin)
        try:
            row: dict[str, Any] = await webhooks.register(hook, endpoint, **options)
        except Exception as exc:
            if type(exc).__name__ == "WebhookError":
                raise self._webhook_error(exc) from None
            raise
        return row

    async def webhooks_deregister(
        self, hook: str, endpoint: str, plugin: str = "webhooks"
    ) -> dict[str, Any]:
        webhooks = self._webhooks(plugin)
        try:
            await webhooks.deregister(hook, endpoint)
        except Exception as exc:
            if type(exc).__name__ == "WebhookError":
                raise self._webhook_error(exc) from None
            raise
        return {"hook": hook, "endpoint": endpoint, "deregistered": True}

    def webhooks_cache_show(
        self, *, reset: bool = False, plugin: str = "webhooks"
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._webhooks(plugin).cache_show(reset=reset)
        return rows

    def webhooks_cache_clear(self, plugin: str = "webhooks") -> dict[str, Any]:
        self._webhooks(plugin).cache_clear()
        return {"cleared": True}

    # ------------------------------------------------------------------------------ scripts

    def _scripts_plugin(self, plugin: str) -> Any:
        obj = self._plugin(plugin)
        if not callable(getattr(obj, "reload", None)) or not hasattr(obj, "scripts"):
            raise AdminError(404, "plugin_not_enabled", f"plugin {plugin!r} has no scripts")
        return obj

    def scripts_show(self, plugin: str = "diversity") -> list[dict[str, Any]]:
        """Loaded scripts in call order, with per-hook calls, errors and average time."""
        obj = self._scripts_plugin(plugin)
        rows = []
        for script in obj.scripts:
            stats = getattr(script, "stats", {}) or {}
            hooks = []
            for hook in sorted(script.hooks):
                s = stats.get(hook)
                calls = s.calls if s is not None else 0
                seconds = s.seconds if s is not None else 0.0
                hooks.append(
                    {
                        "hook": hook,
                        "calls": calls,
                        "errors": s.errors if s is not None else 0,
                        "avg_ms": round(seconds / calls * 1000, 3) if calls else None,
                    }
                )
            rows.append(
                {
                    "name": script.name,
                    "path": str(script.source.path),
                    "states": len(script.states),
                    "keep_state": script.keep_state,
                    "hooks": hooks,
                }
            )
        return rows

    async def scripts_reload(self, plugin: str = "diversity") -> dict[str, Any]:
        """Reload every script; a script that fails keeps its previous version (reported)."""
        obj = self._scripts_plugin(plugin)
        try:
            report: dict[str, str] = await obj.reload()
        except RuntimeError as exc:
            raise AdminError(409, "plugin_not_running", str(exc)) from None
        return {"plugin": plugin, "scripts": report}

    async def reload(self) -> dict[str, Any]:
        """What SIGHUP does: TLS certificates and the plugins' own reloads."""
        reload = getattr(self.broker, "reload", None)
        if not callable(reload):
            raise AdminError(501, "not_supported", "this broker has no reload")
        report: dict[str, Any] = await reload()
        return {"reloaded": report}

    # ------------------------------------------------------------------------------ listeners

    def _listener_manager(self) -> Any:
        manager = getattr(self.broker, "listeners", None)
        if manager is None:
            raise AdminError(501, "not_supported", "listener control is not available")
        return manager

    def listeners(self) -> list[dict[str, Any]]:
        """Every listener: the MQTT ones (state, connections ...) and the HTTP ones."""
        rows: list[dict[str, Any]] = []
        manager = getattr(self.broker, "listeners", None)
        if manager is not None:
            rows.extend(status.as_dict() for status in manager.show())
        else:
            for bound in self.info.listeners:
                rows.append(
                    {
                        "id": f"{bound.kind}.{bound.name}",
                        "kind": bound.kind,
                        "name": bound.name,
                        "state": "running",
                        "addresses": [f"{h}:{p}" for h, p in bound.addresses],
                        "connections": bound.active,
                    }
                )
        admin = getattr(self.info, "admin", None)
        if admin is not None:
            rows.extend(admin.http_status())
        return rows

    async def listener_stop(self, ref: str, *, kill_sessions: bool = False) -> dict[str, Any]:
        manager = self._listener_manager()
        try:
            status = await manager.stop(ref, kill_sessions=kill_sessions)
        except Exception as exc:
            raise _listener_error(exc) from None
        result: dict[str, Any] = status.as_dict()
        return result

    async def listener_start(self, ref: str) -> dict[str, Any]:
        manager = self._listener_manager()
        try:
            status = await manager.start(ref)
        except Exception as exc:
            raise _listener_error(exc) from None
        result: dict[str, Any] = status.as_dict()
        return result


def _listener_error(exc: Exception) -> Exception:
    if type(exc).__name__ != "ListenerError":
        return exc
    message = str(exc)
    if message.startswith("no listener"):
        return AdminError(404, "not_found", message)
    if "ambiguous" in message:
        return AdminError(400, "ambiguous", message)
    return AdminError(409, "listener_error", message)


def _sid(client_id: str, mountpoint: str) -> str:
    return f"{client_id!r}" + (f" (mountpoint {mountpoint!r})" if mountpoint else "")


def _required_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise AdminError(400, "invalid", f"{key!r} is required (a non-empty string)")
    return value
