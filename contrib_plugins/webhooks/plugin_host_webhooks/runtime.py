"""The running webhooks plugin: registered endpoints, their HTTP pools, the cache, counters.

One :class:`Webhooks` object exists per plugin lifespan. It owns one keep-alive
:class:`~plugin_host.http.HTTPPool` per endpoint (per endpoint *and* TLS options, since
webhooks may override TLS), closed when the lifespan ends or the last webhook using it is
deregistered. The management methods (:meth:`Webhooks.register`, :meth:`~Webhooks.deregister`,
:meth:`~Webhooks.show`, :meth:`~Webhooks.cache_show`, :meth:`~Webhooks.cache_clear`) are what
``vmq-admin webhooks`` offers; the admin API calls them.

Calling semantics (spec 3.5): endpoints of one hook are called in registration order. For chain
hooks the first answer other than ``next`` decides; a failure (HTTP error, non-200, timeout,
connection or TLS failure, invalid JSON or modifiers) denies at once, logged with the endpoint
and the reason. Notification hooks call every endpoint; failures are logged and counted.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import structlog
import trio

from plugin_host import Deny
from plugin_host.hooks.specs import CHAIN_HOOKS, RESULT_OPTIONAL_HOOKS
from plugin_host.http import (
    HTTPPool,
    HTTPRequestError,
    TLSConfigError,
    TLSOptions,
    build_ssl_context,
)
from plugin_host.settings import ConfigError, PluginSection
from plugin_host_webhooks.cache import CACHEABLE_HOOKS, MISS, ResponseCache, max_age
from plugin_host_webhooks.config import (
    TLS_KEYS,
    WebhookConfig,
    WebhooksSettings,
    check_endpoint,
    check_topic_filter,
    tls_error,
)
from plugin_host_webhooks.topic_filter import TopicFilter
from plugin_host_webhooks.wire import (
    WEBHOOK_HOOKS,
    ResponseError,
    decode_response,
    dumps,
    encode_request,
)

_log = structlog.get_logger(__name__)

#: Seconds between two failure log lines of one (endpoint, hook); the rest are counted.
FAILURE_LOG_INTERVAL = 1.0

#: Deny reasons for transport failures (short, safe to show an MQTT 5 client).
_KIND_REASON = {
    "timeout": "timeout",
    "pool": "timeout",
    "connect": "connection_failed",
    "tls": "tls_error",
    "protocol": "connection_failed",
}


#: Request fields the cache key leaves out (spec 3.6).
_NOT_IN_CACHE_KEY = frozenset({"payload", "peer_port"})

#: What a failure means for the client, for the log line.
_OUTCOME = dict.fromkeys(RESULT_OPTIONAL_HOOKS, "unchanged")


class WebhookError(Exception):
    """A management call failed: ``code`` is ``already_registered``, ``not_found`` or
    ``invalid`` (as vmq-admin reports them), the message says why."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(slots=True)
class HookCounters:
    """Per-hook counters (the future metrics ``webhooks_<hook>_<counter>``).

    ``requests`` HTTP requests sent, ``errors`` failed calls (transport, bad responses and
    webhook denials), ``bytes_sent`` request body bytes, ``cancelled`` requests abandoned
    because the caller was cancelled (a client that went away during auth_on_register),
    ``timeouts`` requests that ran out of time, ``elapsed`` total seconds spent in requests.
    """

    requests: int = 0
    errors: int = 0
    bytes_sent: int = 0
    cancelled: int = 0
    timeouts: int = 0
    elapsed: float = 0.0


class Webhook:
    """One registered (hook, endpoint) with its options and the pool it uses."""

    __slots__ = (
        "base64payload",
        "config",
        "connect_timeout",
        "endpoint",
        "filter",
        "headers",
        "hook",
        "no_payload",
        "pool",
        "pool_key",
        "response_timeout",
    )

    def __init__(
        self, config: WebhookConfig, pool: HTTPPool, pool_key: tuple[str, TLSOptions]
    ) -> None:
        self.config = config
        self.hook = config.hook
        self.endpoint = config.endpoint
        self.base64payload = config.base64payload
        self.no_payload = config.no_payload
        self.response_timeout = config.response_timeout
        self.connect_timeout = config.connect_timeout
        self.filter = TopicFilter(config.topic_filter) if config.topic_filter else None
        self.headers = [("content-type", "application/json"), ("vernemq-hook", config.hook)]
        self.pool = pool
        self.pool_key = pool_key

    def row(self) -> dict[str, Any]:
        """The ``show`` row of this webhook."""
        return {
            "hook": self.hook,
            "endpoint": self.endpoint,
            "name": self.config.name,
            "base64payload": self.base64payload,
            "no_payload": self.no_payload,
            "response_timeout": self.response_timeout,
            "connect_timeout": self.connect_timeout,
            "topic_filter": self.config.topic_filter,
        }


class Webhooks:
    """Endpoints per hook, HTTP pools, the response cache and counters of one lifespan.

    ``host`` (optional) is the plugin's :class:`~plugin_host.hooks.api.Host`: its ``log`` is
    used and ``hooks_changed()`` is called when the set of hooks with endpoints changes.
    """

    def __init__(
        self,
        settings: WebhooksSettings,
        *,
        host: Any = None,
        clock: Any = None,
    ) -> None:
        self.settings = settings
        self._host = host
        self._clock = clock or trio.current_time
        self.log = getattr(host, "log", None) or _log
        self._hooks: dict[str, list[Webhook]] = {}
        self._active: frozenset[str] = frozenset()
        self._pools: dict[tuple[str, TLSOptions], tuple[HTTPPool, int]] = {}
        self._contexts: dict[TLSOptions, ssl.SSLContext] = {}
        self._plain_context: ssl.SSLContext | None = None
        self.cache = ResponseCache(settings.cache_max_entries, clock=self._clock)
        self.counters: dict[str, HookCounters] = {hook: HookCounters() for hook in WEBHOOK_HOOKS}
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._closed = False

    # ---- lifecycle

    async def __aenter__(self) -> Webhooks:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pool; the object answers ``next`` afterwards."""
        self._closed = True
        pools, self._pools = [pool for pool, _ in self._pools.values()], {}
        self._hooks.clear()
        self._active = frozenset()
        for pool in pools:
            await pool.aclose()

    def load(self, section: PluginSection | None = None) -> None:
        """Register the configured webhooks, in name order (at lifespan start).

        Raises ConfigError (pointing at ``section``'s file and line when given) for a TLS file
        that cannot be used or a duplicate (hook, endpoint).
        """
        if self.settings.use_crls:
            self.log.warning(
                "webhooks_use_crls_ignored",
                reason="CRL checking of webhook servers is not implemented; use_crls has no effect",
            )
        for config in self.settings.webhooks:
            if config.topic_filter and config.topic_filter.endswith("/"):
                self.log.warning(
                    "webhook_topic_filter_suspicious",
                    webhook=config.name,
                    topic_filter=config.topic_filter,
                    hint='in a .conf file a bare # starts a comment: write "a/#" in quotes',
                )
            if self._find(config.hook, config.endpoint) is not None:
                raise ConfigError(
                    f"webhook {config.name!r}: {config.hook} is already served by "
                    f"{config.endpoint} (another webhook has the same hook and endpoint)"
                )
            self._add(config, section)
        self._update_active(notify=False)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background work of the lifespan: the cache sweeper."""
        task_status.started()
        await self.cache.sweep_forever(self.settings.cache_sweep_interval)

    # ---- endpoints and pools

    def _find(self, hook: str, endpoint: str) -> Webhook | None:
        for webhook in self._hooks.get(hook, ()):
            if webhook.endpoint == endpoint:
                return webhook
        return None

    def _ssl_context(self, config: WebhookConfig, section: PluginSection | None) -> ssl.SSLContext:
        if not config.endpoint.lower().startswith("https:"):
            # Never used for TLS; a bare context avoids loading the system CAs for nothing.
            if self._plain_context is None:
                self._plain_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            return self._plain_context
        context = self._contexts.get(config.tls)
        if context is None:
            try:
                context = build_ssl_context(config.tls)
            except TLSConfigError as exc:
                raise tls_error(section, config, exc.option, exc.reason) from None
            self._contexts[config.tls] = context
        return context

    def _add(self, config: WebhookConfig, section: PluginSection | None) -> Webhook:
        https = config.endpoint.lower().startswith("https:")
        key = (config.endpoint, config.tls if https else TLSOptions())
        entry = self._pools.get(key)
        if entry is None:
            pool = HTTPPool(
                size=self.settings.pool_max_connections,
                idle_timeout=self.settings.pool_timeout,
                tls=key[1],
                ssl_context=self._ssl_context(config, section),
                timeout=config.response_timeout,
            )
        else:
            pool = entry[0]
        self._pools[key] = (pool, (entry[1] if entry else 0) + 1)
        webhook = Webhook(config, pool, key)
        self._hooks.setdefault(config.hook, []).append(webhook)
        return webhook

    async def _remove(self, webhook: Webhook) -> None:
        hooks = self._hooks[webhook.hook]
        hooks.remove(webhook)
        if not hooks:
            del self._hooks[webhook.hook]
        pool, users = self._pools[webhook.pool_key]
        if users > 1:
            self._pools[webhook.pool_key] = (pool, users - 1)
        else:
            del self._pools[webhook.pool_key]
            await pool.aclose()

    def _update_active(self, notify: bool = True) -> None:
        active = frozenset(self._hooks)
        if active != self._active:
            self._active = active
            if notify and self._host is not None:
                self._host.hooks_changed()

    def active_hooks(self) -> frozenset[str]:
        """Hooks with at least one endpoint (``plugin_host_active_hooks``)."""
        return self._active

    # ---- management API (vmq-admin webhooks ...)

    async def register(
        self,
        hook: str,
        endpoint: str,
        *,
        base64payload: bool = True,
        no_payload: bool = False,
        response_timeout: float = 5.0,
        topic_filter: str | None = None,
        name: str = "",
        connect_timeout: float | None = None,
        **tls: Any,
    ) -> dict[str, Any]:
        """Add an endpoint to ``hook`` (after the existing ones); returns its ``show`` row.

        Timeouts are in seconds; ``connect_timeout`` ``None`` takes the global setting.

        ``tls`` takes the per-webhook TLS keys of the config (``cafile``, ``certfile``,
        ``keyfile``, ``keyfile_password``, ``tls_version``, ``verify_peer``, ``depth``,
        ``use_system_cas``, ``server_name``); unset ones come from the global settings.
        Raises :class:`WebhookError` (``already_registered``, ``invalid``). Not persisted.
        """
        if self._closed:
            raise WebhookError("invalid", "the webhooks plugin is not running")
        if hook not in WEBHOOK_HOOKS:
            raise WebhookError("invalid", f"unknown hook {hook!r}")
        problem = check_endpoint(endpoint) or (
            check_topic_filter(hook, topic_filter) if topic_filter is not None else None
        )
        if problem:
            raise WebhookError("invalid", problem)
        unknown = set(tls) - set(TLS_KEYS)
        if unknown:
            raise WebhookError("invalid", f"unknown option(s): {', '.join(sorted(unknown))}")
        if response_timeout <= 0:
            raise WebhookError("invalid", "response_timeout must be > 0")
        if connect_timeout is None:
            connect_timeout = self.settings.connect_timeout
        elif connect_timeout <= 0:
            raise WebhookError("invalid", "connect_timeout must be > 0")
        if self._find(hook, endpoint) is not None:
            raise WebhookError("already_registered", f"{endpoint} is already registered for {hook}")
        overrides = {TLS_KEYS[k]: v for k, v in tls.items() if v is not None}
        merged = {f.name: getattr(self.settings.tls, f.name) for f in fields(TLSOptions)}
        merged.update(overrides)
        config = WebhookConfig(
            hook=hook,
            endpoint=endpoint,
            name=name,
            base64payload=base64payload,
            no_payload=no_payload,
            response_timeout=response_timeout,
            connect_timeout=connect_timeout,
            topic_filter=topic_filter,
            tls=TLSOptions(**merged),
        )
        try:
            webhook = self._add(config, None)
        except ConfigError as exc:
            raise WebhookError("invalid", str(exc)) from None
        self._update_active()
        self.log.info("webhook_registered", hook=hook, endpoint=endpoint)
        return webhook.row()

    async def deregister(self, hook: str, endpoint: str) -> None:
        """Remove the endpoint from ``hook``; raises WebhookError ``not_found``."""
        webhook = self._find(hook, endpoint)
        if webhook is None:
            raise WebhookError("not_found", f"{endpoint} is not registered for {hook}")
        await self._remove(webhook)
        # A later registration of the same pair must not answer from the old one's cache.
        self.cache.drop(endpoint, hook)
        self._update_active()
        self.log.info("webhook_deregistered", hook=hook, endpoint=endpoint)

    def show(self) -> list[dict[str, Any]]:
        """Every webhook, by hook name then registration order."""
        return [w.row() for hook in sorted(self._hooks) for w in self._hooks[hook]]

    def cache_show(self, *, reset: bool = False) -> list[dict[str, Any]]:
        """Cache counters per (endpoint, hook): hits, misses, entries; ``reset`` zeroes them."""
        return self.cache.show(reset=reset)

    def cache_clear(self) -> None:
        """Drop every cached response."""
        self.cache.clear()

    def stats(self) -> dict[str, dict[str, Any]]:
        """The counters of every hook that has been called."""
        return {
            hook: asdict(counters)
            for hook, counters in sorted(self.counters.items())
            if counters.requests or counters.errors or counters.cancelled
        }

    # ---- calling

    async def chain(self, hook: str, args: Mapping[str, Any]) -> Any:
        """Answer a chain hook: the first endpoint that does not say ``next`` decides."""
        for webhook in self._hooks.get(hook, ()):
            if webhook.filter is not None and not webhook.filter.matches(args["topic"]):
                continue
            result = await self._call(webhook, hook, args)
            if result is not None:
                return result
        return None

    async def notify(self, hook: str, args: Mapping[str, Any]) -> None:
        """Deliver a notification hook to every endpoint (failures are logged and counted)."""
        for webhook in self._hooks.get(hook, ()):
            if webhook.filter is not None and not webhook.filter.matches(args["topic"]):
                continue
            await self._call(webhook, hook, args)

    async def _call(self, webhook: Webhook, hook: str, args: Mapping[str, Any]) -> Any:
        body = encode_request(
            hook, args, base64payload=webhook.base64payload, no_payload=webhook.no_payload
        )
        cache_key = None
        if hook in CACHEABLE_HOOKS:
            fields_ = {k: v for k, v in body.items() if k not in _NOT_IN_CACHE_KEY}
            cache_key = (webhook.endpoint, hook, dumps(fields_).decode())
            cached = self.cache.get(cache_key)
            if cached is not MISS:
                return cached
        data = dumps(body)
        counters = self.counters[hook]
        counters.requests += 1
        counters.bytes_sent += len(data)
        start = trio.current_time()
        try:
            response = await webhook.pool.request(
                "POST",
                webhook.endpoint,
                body=data,
                headers=webhook.headers,
                timeout=webhook.response_timeout,
                connect_timeout=webhook.connect_timeout,
            )
        except trio.Cancelled:
            counters.cancelled += 1
            raise
        except HTTPRequestError as exc:
            counters.errors += 1
            if exc.kind in ("timeout", "pool"):
                counters.timeouts += 1
            self._failed(webhook, hook, exc.kind, str(exc))
            return Deny(_KIND_REASON[exc.kind]) if hook in CHAIN_HOOKS else None
        finally:
            counters.elapsed += trio.current_time() - start
        try:
            result = decode_response(
                hook, response.status, response.body, base64payload=webhook.base64payload
            )
        except ResponseError as exc:
            counters.errors += 1
            self._failed(webhook, hook, exc.reason, str(exc))
            return Deny(exc.reason) if hook in CHAIN_HOOKS else None
        if isinstance(result, Deny):
            counters.errors += 1
            self.log.debug(
                "webhook_denied", hook=hook, endpoint=webhook.endpoint, reason=result.reason
            )
        elif result is not None and cache_key is not None:
            seconds = max_age(response.header("cache-control"))
            if seconds:
                if isinstance(result, dict) and "payload" in result:
                    # The payload was computed for this message; the key ignores payloads.
                    cached = {k: v for k, v in result.items() if k != "payload"}
                    self.cache.put(cache_key, cached or True, seconds)
                else:
                    self.cache.put(cache_key, result, seconds)
        return result

    def _failed(self, webhook: Webhook, hook: str, kind: str, reason: str) -> None:
        """Log a failed call, at most once per FAILURE_LOG_INTERVAL per (endpoint, hook)."""
        key = (webhook.endpoint, hook)
        now = self._clock()
        state = self._failures.get(key)
        if state is not None and now - state[0] < FAILURE_LOG_INTERVAL:
            state[1] += 1
            return
        suppressed = int(state[1]) if state is not None else 0
        self._failures[key] = [now, 0]
        self.log.warning(
            "webhook_failed",
            hook=hook,
            endpoint=webhook.endpoint,
            kind=kind,
            reason=reason,
            outcome=_OUTCOME.get(hook, "deny" if hook in CHAIN_HOOKS else "ignored"),
            suppressed=suppressed,
        )
