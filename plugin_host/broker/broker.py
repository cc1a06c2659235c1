"""The Broker: sessions, router, timers, hooks and counters in one object.

It is also the :class:`plugin_host.hooks.api.Host` plugins receive: ``publish``,
``disconnect``, ``sessions``/``session``, ``log``, ``config``, ``hooks_changed``.

Session lifecycle (MQTT 3.1.4, 3.1.2.4/3.1.2.11; spec 2.11):

* :meth:`register` (CONNECT accepted): an existing connection of the same subscriber id is
  taken over (closed with v5 0x8E); clean start discards the old session; otherwise it resumes.
* :meth:`attach` (right after CONNACK): the connection becomes the session's; pending will
  timers are cancelled, unacknowledged messages are re-sent with DUP, the queue drains.
* :meth:`connection_closed`: the will is published (now or after its delay), the session
  expires after its interval, ends at once when not persistent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog
import trio

from plugin_host.broker import hookargs
from plugin_host.broker.message import Message
from plugin_host.broker.props import from_hook
from plugin_host.broker.router import Router
from plugin_host.broker.session import Session
from plugin_host.broker.timers import TimerWheel
from plugin_host.hooks.api import HookDispatch, NoHooks, SessionInfo, positional_caller
from plugin_host.mqtt import validate_topic_name
from plugin_host.mqtt.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from plugin_host.reload import ReloadCallback, ReloadRegistry

if TYPE_CHECKING:
    from plugin_host.broker.connection import Connection
    from plugin_host.broker.store import SessionStore
    from plugin_host.broker.trie import SubOptions
    from plugin_host.listeners.manager import ListenerManager
    from plugin_host.listeners.tcp import BoundListener, ConnectionInfo
    from plugin_host.settings import Config

log = structlog.get_logger(__name__)

RC_SESSION_TAKEN_OVER = 0x8E
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_ADMINISTRATIVE_ACTION = 0x98
#: How long shutdown waits for connections to flush their DISCONNECT and close.
SHUTDOWN_DRAIN_TIMEOUT = 5.0
#: Every packet class (the keys of ``Counters.packets_received``).
PACKET_CLASSES: tuple[type[Packet], ...] = (
    Connect,
    Connack,
    Publish,
    Puback,
    Pubrec,
    Pubrel,
    Pubcomp,
    Subscribe,
    Suback,
    Unsubscribe,
    Unsuback,
    Pingreq,
    Pingresp,
    Disconnect,
    Auth,
)
#: How often expired retained messages are swept.
RETAINED_SWEEP_INTERVAL = 60.0


class Counters:
    """Broker-wide counters (read by metrics and $SYS at scrape time: plain numbers only).

    ``packets_received`` is keyed by packet class (counted as the reader handles them);
    ``packets_sent`` is indexed by packet type number and counts what is buffered for sending
    except first deliveries of PUBLISH, which ``publishes_sent`` counts per QoS (as
    ``publishes_received`` does for incoming PUBLISH). QoS 0 deliveries of open connections
    are counted in ``Connection.delivered`` and added here when the connection ends.
    ``bytes_sent_by_type`` / ``bytes_received_by_type`` (indexed by packet type number) are
    wire bytes of whole packets: sent ones counted as they are buffered (QoS 0 deliveries of
    open connections in ``Connection.delivered_bytes``), received ones by each connection's
    parser (``parser.bytes_by_type``); both are added here when the connection ends, so
    ``admin.metrics.traffic_by_type`` adds the open connections' figures.
    ``connects_refused_by`` is keyed by the (MQTT 5) CONNACK reason code.
    """

    __slots__ = (
        "auth_cancelled",
        "bytes_received",
        "bytes_received_by_type",
        "bytes_sent",
        "bytes_sent_by_type",
        "connects",
        "connects_refused",
        "connects_refused_by",
        "dropped",
        "messages_routed",
        "packets_received",
        "packets_sent",
        "protocol_errors",
        "publishes_denied",
        "publishes_received",
        "publishes_sent",
        "started_at",
        "subscribes_denied",
        "takeovers",
    )

    def __init__(self) -> None:
        self.auth_cancelled = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.bytes_received_by_type = [0] * 16
        self.bytes_sent_by_type = [0] * 16
        self.connects = 0
        self.connects_refused = 0
        self.connects_refused_by: dict[int, int] = {}
        self.messages_routed = 0
        self.packets_received: dict[type[Packet], int] = dict.fromkeys(PACKET_CLASSES, 0)
        self.packets_sent = [0] * 16
        self.protocol_errors = 0
        self.publishes_denied = 0
        self.publishes_received = [0, 0, 0]
        self.publishes_sent = [0, 0, 0]
        self.started_at = time.monotonic()
        self.subscribes_denied = 0
        self.takeovers = 0
        #: Dropped messages by reason: buffer_full, queue_full, expired, max_packet_size_exceeded.
        self.dropped: dict[str, int] = {}

    @property
    def messages_received(self) -> int:
        """PUBLISH packets received from clients (every QoS)."""
        return sum(self.publishes_received)

    def as_dict(self) -> dict[str, Any]:
        out = {
            name: getattr(self, name)
            for name in self.__slots__
            if name not in ("dropped", "packets_received", "started_at")
        }
        for name in (
            "bytes_received_by_type",
            "bytes_sent_by_type",
            "connects_refused_by",
            "packets_sent",
            "publishes_received",
            "publishes_sent",
        ):
            out[name] = out[name].copy()
        out["messages_received"] = self.messages_received
        out["dropped"] = dict(self.dropped)
        out["packets_received"] = {
            cls.packet_type.name.lower(): n for cls, n in self.packets_received.items()
        }
        return out


class Broker:
    """The routing core; see the module docstring."""

    def __init__(self, config: Config, hooks: HookDispatch | None = None) -> None:
        self.config = config
        self.cfg = config.broker
        self.hooks: HookDispatch = hooks if hooks is not None else NoHooks()
        self.router = Router(self.cfg.shared_subscription_policy)
        self.sessions: dict[tuple[str, str], Session] = {}
        self.connections: set[Connection] = set()
        self._connections_gone = trio.Event()
        self.timers = TimerWheel()
        self.counters = Counters()
        #: Connections a QoS 0 delivery found past their high-water mark, for the publishing
        #: reader to wait on (backpressure, see ``plugin_host.broker.connection``).
        self.congested: set[Connection] = set()
        self.shutting_down = False
        self._log = structlog.get_logger("plugin_host.host")
        #: A durable store observing every state change (None: memory only).
        self.store: SessionStore | None = None
        #: The MQTT listeners, set by the server: ``listeners.show()/start(id)/stop(id)``.
        self.listeners: ListenerManager | None = None
        #: What ``reload()`` (SIGHUP, admin API) runs: TLS certificates, plugins' reloads.
        self.reloads = ReloadRegistry()
        # Per-batch snapshot (see tick()): a monotonic clock and, indexed by "is MQTT 5",
        # whether the per-message hooks are implemented.
        self.clock = time.monotonic()
        self.deliver_hooked = (False, False)
        self.publish_hooked = (False, False)
        self.published_hooked = (False, False)
        self.publish_auth: tuple[Callable[..., Any], Callable[..., Any]] = (
            positional_caller(self.hooks.auth, "auth_on_publish"),
            positional_caller(self.hooks.auth, "auth_on_publish_m5"),
        )
        self.publish_props = True
        self._hooks_seen: tuple[Any, Any] = (None, None)
        self.tick()

    def tick(self) -> float:
        """Refresh the snapshot the per-message path reads (once per read batch, timer...).

        The hot path must not ask the dispatcher per message and per delivery. A change of the
        active hooks (a plugin's ``hooks_changed()``) therefore takes effect for a client from
        its next read batch (and at once for everything else: timers, subscribes, the
        writers, which ask the dispatcher directly).
        """
        self.clock = now = time.monotonic()
        hooks = self.hooks
        # The dispatcher's generation says whether anything below could have changed.
        generation = getattr(hooks, "generation", None)
        if generation is not None and self._hooks_seen == (hooks, generation):
            return now
        impl = hooks.implemented
        self.deliver_hooked = (impl("on_deliver"), impl("on_deliver_m5"))
        self.publish_hooked = (impl("auth_on_publish"), impl("auth_on_publish_m5"))
        self.published_hooked = (impl("on_publish"), impl("on_publish_m5"))
        # The auth_on_publish chains' entry points, taking the arguments positionally (the
        # dispatcher's compiled ones; else ``auth_now`` or plain ``auth`` with an args dict),
        # and whether the MQTT 5 chain reads the properties (else they are not converted).
        auth_caller = getattr(hooks, "auth_caller", None)
        if auth_caller is None:
            auth = getattr(hooks, "auth_now", None) or hooks.auth
            self.publish_auth = (
                positional_caller(auth, "auth_on_publish"),
                positional_caller(auth, "auth_on_publish_m5"),
            )
        else:
            self.publish_auth = (auth_caller("auth_on_publish"), auth_caller("auth_on_publish_m5"))
        arguments = getattr(hooks, "arguments", None)
        self.publish_props = arguments is None or "properties" in arguments("auth_on_publish_m5")
        self._hooks_seen = (hooks, generation)
        return now

    # ------------------------------------------------------------------------------ running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker's own tasks (timers); until cancelled."""
        self.timers.call_later(RETAINED_SWEEP_INTERVAL, self._sweep_retained)
        task_status.started()
        await self.timers.run()

    def attach_store(self, store: SessionStore) -> None:
        """Attach a durable store (before serving): it observes every state change."""
        self.store = store
        self.router.on_retained_change = store.retained_changed
        for mountpoint, retained in self.router.retained.items():
            retained.on_change = lambda topic, message, mp=mountpoint: store.retained_changed(
                mp, topic, message
            )

    def set_hooks(self, hooks: HookDispatch) -> None:
        """Install the plugin dispatcher (before serving)."""
        self.hooks = hooks
        self.tick()

    async def handle_connection(
        self, stream: trio.abc.Stream, listener: BoundListener, info: ConnectionInfo | None = None
    ) -> None:
        """Listener callback: serve one client connection (``info``: what TLS/PROXY learnt)."""
        from plugin_host.broker.connection import Connection

        if self.shutting_down:
            await trio.aclose_forcefully(stream)
            return
        await Connection(self, stream, listener, info).run()

    async def reload(self) -> dict[str, Any]:
        """Reload what can be reloaded (what SIGHUP does): ``{part: outcome}``."""
        return await self.reloads.run()

    async def shutdown(self) -> None:
        """Close every connection (v5 DISCONNECT 0x8B) and wait until they are gone."""
        self.shutting_down = True
        for conn in list(self.connections):
            conn.close(RC_SERVER_SHUTTING_DOWN, "server shutting down")
        with trio.move_on_after(SHUTDOWN_DRAIN_TIMEOUT + 1):
            while self.connections:
                await self._connections_gone.wait()
                self._connections_gone = trio.Event()

    @staticmethod
    def now() -> float:
        return time.monotonic()

    # ------------------------------------------------------------------------------ sessions

    def register(
        self, conn: Connection, mountpoint: str, client_id: str, clean_start: bool
    ) -> tuple[Session, bool]:
        """Find or create the session for an accepted CONNECT; returns (session, present)."""
        sid = (mountpoint, client_id)
        session = self.sessions.get(sid)
        if session is not None:
            old = session.conn
            if old is not None and old is not conn:
                self.counters.takeovers += 1
                log.info("session_takeover", client_id=client_id, mountpoint=mountpoint)
                if self.cfg.suppress_lwt_on_session_takeover:
                    old.will = None
                old.close(RC_SESSION_TAKEN_OVER, "session taken over")
                self._detach(old, takeover=True)
            if clean_start:
                self._end_session(session)
                session = None
        present = session is not None
        if session is None:
            session = Session(self, mountpoint, client_id)
            self.sessions[sid] = session
            # (the store hears about it from set_expiry(), right after registration)
        elif session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        return session, present

    def attach(self, conn: Connection, session: Session, present: bool) -> None:
        """Make ``conn`` the session's connection (after CONNACK was buffered)."""
        session.conn = conn
        if session.will_timer is not None:
            # Reconnected within the will delay: the will is not sent (MQTT 5 3.1.3.2.2).
            session.will_timer.cancel()
            session.will_timer = None
        if session.expiry_timer is not None:
            session.expiry_timer.cancel()
            session.expiry_timer = None
        if self.store is not None and session.persistent:
            self.store.session_saved(session)  # online: no expiry deadline, no will waiting
        if present and session.inflight:
            conn.resend_inflight(session)
        if session.queue:
            conn.wake()
        if self.hooks.implemented("on_client_wakeup"):
            self.hooks.notify("on_client_wakeup", hookargs.sid(session))

    def connection_closed(self, conn: Connection) -> None:
        """The connection task ended (any reason)."""
        self._detach(conn)

    def connection_removed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        counters = self.counters
        counters.publishes_sent[0] += conn.delivered
        counters.bytes_sent_by_type[3] += conn.delivered_bytes
        received = counters.bytes_received_by_type
        for kind, size in enumerate(conn.parser.bytes_by_type):
            received[kind] += size
        if not self.connections:
            self._connections_gone.set()

    def _detach(self, conn: Connection, takeover: bool = False) -> None:
        session = conn.session
        if session is None or session.conn is not conn:
            return
        session.conn = None
        will = conn.will
        conn.will = None
        if will is not None and conn.end_kind != "normal":
            self._start_will(session, will, conn)
        if session.retry_timer is not None:
            session.retry_timer.cancel()
            session.retry_timer = None
        if takeover:
            return
        hooks = self.hooks
        if session.persistent:
            if session.expiry_interval is not None:
                session.expiry_timer = self.timers.call_later(
                    session.expiry_interval, self._expire, session
                )
            if self.store is not None:
                self.store.session_saved(session)  # its expiry deadline, a delayed will
            if hooks.implemented("on_client_offline"):
                hooks.notify("on_client_offline", hookargs.sid(session))
        else:
            self._end_session(session)
            if hooks.implemented("on_client_gone"):
                hooks.notify("on_client_gone", hookargs.sid(session))

    def _start_will(self, session: Session, will: Any, conn: Connection) -> None:
        delay = will.delay
        if session.expiry_interval is not None:
            delay = min(delay, session.expiry_interval)
        args = (will, conn.username, conn.client_id, conn.v5)
        if delay <= 0:
            self._publish_will(*args)
        else:
            if session.will_timer is not None:
                session.will_timer.cancel()
            session.will_timer = self.timers.call_later(delay, self._will_due, session, args)

    def _will_due(self, session: Session, args: tuple[Any, ...]) -> None:
        session.will_timer = None
        if self.store is not None and self.sessions.get(session.sid) is session:
            self.store.session_saved(session)  # the will is no longer waiting
        self._publish_will(*args)

    def expire_later(self, session: Session, delay: float) -> None:
        """Start the expiry timer of an offline session (sessions restored from a store)."""
        session.expiry_timer = self.timers.call_later(max(0.0, delay), self._expire, session)

    def will_later(
        self,
        session: Session,
        will: Any,
        username: str | None,
        client_id: str,
        v5: bool,
        delay: float,
    ) -> None:
        """Publish ``will`` (``.message``, ``.expiry``) after ``delay`` unless the session
        reconnects first (a delayed will restored from a store)."""
        args = (will, username, client_id, v5)
        session.will_timer = self.timers.call_later(max(0.0, delay), self._will_due, session, args)

    def _publish_will(self, will: Any, username: str | None, client_id: str, v5: bool) -> None:
        self.tick()
        message: Message = will.message
        if will.expiry is not None:
            message.expires_at = time.monotonic() + will.expiry
        log.debug("will_published", client_id=client_id, topic=message.topic)
        self.publish(message)
        hook = "on_publish_m5" if v5 else "on_publish"
        if self.hooks.implemented(hook):
            self.hooks.notify(
                hook, hookargs.published(message, username, client_id, v5, time.monotonic())
            )

    def _expire(self, session: Session) -> None:
        session.expiry_timer = None
        if session.conn is not None or self.sessions.get(session.sid) is not session:
            return
        log.info("session_expired", client_id=session.client_id, mountpoint=session.mountpoint)
        self._end_session(session)
        if self.hooks.implemented("on_session_expired"):
            self.hooks.notify("on_session_expired", hookargs.sid(session))

    def _end_session(self, session: Session) -> None:
        """Delete a session: subscriptions, queue, timers (a pending will is sent now)."""
        deleted = self.sessions.get(session.sid) is session
        if deleted:
            del self.sessions[session.sid]
        will_timer = session.will_timer
        if will_timer is not None and not will_timer.cancelled:
            session.will_timer = None
            will_timer.cancel()
            self._will_due(session, will_timer.args[1])
        session.cancel_timers()
        had_subs = bool(session.subscriptions)
        session.clear_subscriptions()
        dropped = len(session.queue)
        session.discard_messages()
        if dropped:
            log.debug("session_messages_discarded", client_id=session.client_id, count=dropped)
        if deleted and self.store is not None:
            self.store.session_deleted(session)
        if had_subs and self.hooks.implemented("on_topic_unsubscribed"):
            self.hooks.notify(
                "on_topic_unsubscribed",
                {"mountpoint": session.mountpoint, "client_id": session.client_id, "topics": None},
            )

    # ------------------------------------------------------------------------------ messages

    def publish(self, message: Message, conn: Connection | None = None) -> int:
        """Route a message (retained store first); fires on_publish for client publishes."""
        if message.retain:
            self.router.retain(message)
        count = self.router.route(message)
        self.counters.messages_routed += count
        if conn is not None and self.published_hooked[conn.v5]:
            self.hooks.notify(
                "on_publish_m5" if conn.v5 else "on_publish",
                hookargs.published(message, conn.username, conn.client_id, conn.v5, self.clock),
            )
        return count

    def send_retained(self, session: Session, opts: SubOptions) -> None:
        """Deliver the retained messages matching a new subscription (retain flag set)."""
        store = self.router.retained.get(session.mountpoint)
        if store is None or not len(store):
            return
        sub_ids = (opts.sub_id,) if opts.sub_id is not None else ()
        for message in store.match(opts.topic_filter, time.monotonic()):
            session.deliver(message, opts.qos, sub_ids, True)

    def message_dropped(self, session: Session | None, message: Message, reason: str) -> None:
        dropped = self.counters.dropped
        dropped[reason] = dropped.get(reason, 0) + 1
        if session is not None:
            session.dropped += 1
        if self.hooks.implemented("on_message_drop"):
            self.hooks.notify("on_message_drop", hookargs.message_drop(session, message, reason))

    def offline_message(self, session: Session, message: Message, qos: int) -> None:
        if self.hooks.implemented("on_offline_message"):
            self.hooks.notify("on_offline_message", hookargs.offline_message(session, message, qos))

    def retry_due(self, session: Session) -> None:
        """v3 retry: re-send messages unacknowledged for ``retry_interval`` (with DUP)."""
        self.tick()
        session.retry_timer = None
        conn = session.conn
        interval = session.retry_interval
        if conn is None or not session.inflight or interval <= 0:
            return
        now = time.monotonic()
        earliest = conn.resend_inflight(session, older_than=now - interval + 0.001)
        if session.inflight and earliest < math.inf:
            session.retry_timer = self.timers.call_later(
                max(0.0, earliest + interval - now), self.retry_due, session
            )

    def _sweep_retained(self) -> None:
        now = time.monotonic()
        for store in self.router.retained.values():
            store.sweep(now)
        self.timers.call_later(RETAINED_SWEEP_INTERVAL, self._sweep_retained)

    # ------------------------------------------------------------------------------ Host API

    @property
    def log(self) -> Any:
        """A structlog logger for plugins (the plugin manager binds the plugin name)."""
        return self._log

    async def host_publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
        mountpoint: str = "",
    ) -> None:
        """Host.publish: route a message as if a client had published it."""
        validate_topic_name(topic)
        self.tick()
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos!r}")
        props: dict[str, Any] = {}
        if properties:
            hook_keys = {k: v for k, v in properties.items() if k.startswith("p_")}
            props = from_hook(hook_keys)
            props.update({k: v for k, v in properties.items() if not k.startswith("p_")})
        expires_at = None
        if "message_expiry_interval" in props:
            expires_at = time.monotonic() + props.pop("message_expiry_interval")
        props.pop("topic_alias", None)
        props.pop("subscription_identifier", None)
        message = Message(topic, bytes(payload), qos, retain, props or None, expires_at, mountpoint)
        self.publish(message)
        hook = "on_publish_m5" if props else "on_publish"
        if self.hooks.implemented(hook):
            self.hooks.notify(
                hook, hookargs.published(message, None, "", bool(props), time.monotonic())
            )
        await trio.lowlevel.checkpoint()

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, do_cleanup: bool = False
    ) -> bool:
        """Host.disconnect: close a client (v5 0x98); ``do_cleanup`` deletes its session."""
        session = self.sessions.get((mountpoint, client_id))
        if session is None:
            return False
        conn = session.conn
        if conn is not None:
            conn.close(RC_ADMINISTRATIVE_ACTION, "administrative action")
            self._detach(conn)
        if do_cleanup and self.sessions.get(session.sid) is session:
            self._end_session(session)
        await trio.lowlevel.checkpoint()
        return True

    async def reauthorize_subscriptions(
        self, client_id: str, mountpoint: str = "", username: str | None = None
    ) -> list[str]:
        """Host.reauthorize_subscriptions: ask auth_on_subscribe(_m5) again, as ``username``
        (the session's when ``None``), for every subscription of a session, one filter at a
        time; those refused now are removed (VerneMQ's ``vmq_reg:reauthorize_subscriptions``).

        A filter is refused when the chain denies it (or is exhausted) or answers with a
        rejection QoS (0x80 and above) for it; an allowed filter is kept as it is. Returns the
        removed filters (``on_topic_unsubscribed`` fires for them). Nothing happens for an
        unknown session or when no plugin answers the hook. The chain is that of the
        listener the client is connected through (its ``authz_plugins``); every plugin for
        an offline session.
        """
        session = self.sessions.get((mountpoint, client_id))
        if session is None:
            return []
        v5 = session.protocol_level == 5
        hook = "auth_on_subscribe_m5" if v5 else "auth_on_subscribe"
        if not self.hooks.implemented(hook):
            return []
        if username is None:
            username = session.username
        chain = session.conn.authz_chain if session.conn is not None else None
        removed: list[str] = []
        for full_filter, opts in list(session.subscriptions.items()):
            entry = (full_filter, opts.qos, opts.no_local, opts.rap, opts.retain_handling)
            args: dict[str, Any] = {
                "username": username,
                "mountpoint": mountpoint,
                "client_id": client_id,
                "topics": [hookargs.topic_entry(entry, v5)],
            }
            if v5:
                args["properties"] = {}
            if chain is None:
                outcome = await self.hooks.auth(hook, args)
            else:
                outcome = await self.hooks.auth(hook, args, chain)
            topics = outcome.topics
            if topics is None and outcome.modifiers:
                topics = outcome.modifiers.get("topics")
            refused = not outcome.allowed or (
                topics is not None and not any(0 <= t[1] <= 2 for t in topics)
            )
            # (the session may have changed while the chain ran: only remove what was asked)
            if refused and session.subscriptions.get(full_filter) is opts:
                session.remove_subscription(full_filter)
                removed.append(full_filter)
        if removed:
            log.info(
                "subscriptions_reauthorized",
                client_id=client_id,
                mountpoint=mountpoint,
                removed=removed,
            )
            if self.hooks.implemented("on_topic_unsubscribed"):
                self.hooks.notify(
                    "on_topic_unsubscribed",
                    {"mountpoint": mountpoint, "client_id": client_id, "topics": removed},
                )
        return removed

    def sessions_info(self) -> Sequence[SessionInfo]:
        return [self._info(s) for s in self.sessions.values()]

    def session_info(self, client_id: str, mountpoint: str = "") -> SessionInfo | None:
        session = self.sessions.get((mountpoint, client_id))
        return None if session is None else self._info(session)

    def _info(self, session: Session) -> SessionInfo:
        peer = session.peer
        expiry = session.expiry_interval
        return SessionInfo(
            client_id=session.client_id,
            mountpoint=session.mountpoint,
            username=session.username,
            online=session.online,
            protocol_level=session.protocol_level,
            clean_session=not session.persistent,
            peer_addr=peer[0] if peer else None,
            peer_port=peer[1] if peer else None,
            subscriptions=[(f, o.qos) for f, o in session.subscriptions.items()],
            queued_messages=len(session.queue),
            inflight_messages=len(session.inflight),
            expiry_interval=None if expiry is None else int(expiry),
        )

    def hooks_changed(self) -> None:
        """Tell the dispatcher the set of active hooks changed (nothing is cached here)."""
        refresh = getattr(self.hooks, "hooks_changed", None)
        if callable(refresh):
            refresh()
        for conn in self.connections:
            conn.wake()  # queued deliveries may now skip (or need) on_deliver

    def host(self) -> BrokerHost:
        """The :class:`~plugin_host.hooks.api.Host` view of this broker for plugins."""
        return BrokerHost(self)


class BrokerHost:
    """What plugins get as ``host`` (implements :class:`plugin_host.hooks.api.Host`)."""

    __slots__ = ("_broker", "_log", "_name")

    def __init__(self, broker: Broker, name: str | None = None) -> None:
        self._broker = broker
        self._log = broker.log.bind(plugin=name) if name else broker.log
        self._name = name

    def bind(self, name: str) -> BrokerHost:
        """The same host with its logger bound to plugin ``name``."""
        return BrokerHost(self._broker, name)

    @property
    def log(self) -> Any:
        return self._log

    @property
    def config(self) -> Config:
        return self._broker.config

    @property
    def broker(self) -> Broker:
        return self._broker

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
        mountpoint: str = "",
    ) -> None:
        await self._broker.host_publish(topic, payload, qos, retain, properties, mountpoint)

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, do_cleanup: bool = False
    ) -> bool:
        return await self._broker.disconnect(client_id, mountpoint, do_cleanup=do_cleanup)

    async def reauthorize_subscriptions(
        self, client_id: str, mountpoint: str = "", username: str | None = None
    ) -> list[str]:
        return await self._broker.reauthorize_subscriptions(client_id, mountpoint, username)

    def sessions(self) -> Sequence[SessionInfo]:
        return self._broker.sessions_info()

    def session(self, client_id: str, mountpoint: str = "") -> SessionInfo | None:
        return self._broker.session_info(client_id, mountpoint)

    def hooks_changed(self) -> None:
        self._broker.hooks_changed()

    def on_reload(self, callback: ReloadCallback, *, name: str | None = None) -> Callable[[], None]:
        """Run ``callback`` (sync or async) on every reload: SIGHUP or the admin API.

        The server owns SIGHUP (trio gives a signal to one receiver only), so a plugin must not
        open its own receiver. ``name`` (default: the plugin's) labels it in the reload report.
        Returns the function that unregisters the callback.
        """
        return self._broker.reloads.register(name or self._name or "plugin", callback)
