"""Sessions: the per-subscriber-id state that outlives a network connection.

A :class:`Session` holds what MQTT says a session is: subscriptions, the QoS 1/2 messages sent
and not yet acknowledged (``inflight``), the messages waiting to be sent (``queue``), the
QoS 2 packet ids received and waiting for PUBREL (``incoming_qos2``), and the expiry and will
timers. The :class:`~plugin_host.broker.connection.Connection` attached to it (``conn``) is the
network side; a session without one is offline.

Every change of that state goes through a method of this class (``set_expiry``,
``add_subscription``, ``remove_subscription``, ``enqueue``, ``unqueue``, ``add_inflight``,
``ack``, ``pubrec``, ``drop_inflight``, ``incoming_qos2_add``/``_remove``), and each of them
tells ``broker.store`` (a :class:`~plugin_host.broker.store.SessionStore`, when one is attached).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from plugin_host.broker.trie import SubOptions

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.broker.connection import Connection
    from plugin_host.broker.message import Message
    from plugin_host.broker.timers import Timer

#: Session expiry value meaning "never" (MQTT 5 0xFFFFFFFF).
NEVER = None

# Inflight states of an outgoing QoS 1/2 message.
AWAIT_ACK = 0  # PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2)
AWAIT_COMP = 1  # PUBREL sent, waiting for PUBCOMP


class Inflight:
    """An outgoing QoS 1/2 message sent and not yet acknowledged."""

    __slots__ = ("message", "qos", "retain", "sent_at", "state", "sub_ids")

    def __init__(
        self, message: Message, qos: int, sub_ids: tuple[int, ...], retain: bool, now: float
    ) -> None:
        self.message = message
        self.qos = qos
        self.sub_ids = sub_ids
        self.retain = retain
        self.state = AWAIT_ACK
        self.sent_at = now


#: A queued delivery: (message, delivery qos, subscription ids, retain flag to send).
Queued = tuple["Message", int, tuple[int, ...], bool]

# Most sessions never queue anything nor receive QoS 2: they share these empty stand-ins
# (falsy, len 0, iterable) and get a real deque / set on first use. An empty deque costs
# ~600 bytes, an empty set ~200: per idle connection that matters.
_NO_QUEUE: Any = ()
_NO_IDS: Any = frozenset()


class Session:
    """State of one subscriber id ``(mountpoint, client_id)``."""

    __slots__ = (
        "broker",
        "client_id",
        "conn",
        "created",
        "dropped",
        "expiry_interval",
        "expiry_timer",
        "incoming_qos2",
        "inflight",
        "max_inflight",
        "max_offline",
        "max_online",
        "mountpoint",
        "next_pid",
        "peer",
        "protocol_level",
        "queue",
        "retry_interval",
        "retry_timer",
        "sid",
        "subscriptions",
        "upgrade_qos",
        "username",
        "will_timer",
    )

    def __init__(self, broker: Broker, mountpoint: str, client_id: str) -> None:
        cfg = broker.config.broker
        self.broker = broker
        self.mountpoint = mountpoint
        self.client_id = client_id
        self.sid = (mountpoint, client_id)
        self.conn: Connection | None = None
        self.username: str | None = None
        self.protocol_level = 4
        self.peer: tuple[str, int] | None = None
        #: Seconds the session survives its connection: 0 = not persistent, None = forever.
        self.expiry_interval: float | None = 0
        self.subscriptions: dict[str, SubOptions] = {}
        self.queue: deque[Queued] = _NO_QUEUE
        self.inflight: dict[int, Inflight] = {}
        self.incoming_qos2: set[int] = _NO_IDS
        self.next_pid = 1
        self.max_inflight = cfg.max_inflight_messages
        self.max_offline = cfg.max_offline_messages
        self.max_online = cfg.max_online_messages
        self.upgrade_qos = cfg.upgrade_outgoing_qos
        self.retry_interval = cfg.retry_interval
        self.expiry_timer: Timer | None = None
        self.will_timer: Timer | None = None
        self.retry_timer: Timer | None = None
        self.dropped = 0
        self.created = broker.now()

    def __repr__(self) -> str:
        return f"Session({self.mountpoint!r}, {self.client_id!r}, online={self.online})"

    # -- state ---------------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.conn is not None

    @property
    def persistent(self) -> bool:
        """True when the session outlives its connection (v3 clean_session=0, v5 expiry>0)."""
        return self.expiry_interval is None or self.expiry_interval > 0

    def set_expiry(self, interval: float | None) -> None:
        self.expiry_interval = interval
        store = self.broker.store
        if store is not None:
            store.session_saved(self)

    # -- subscriptions -------------------------------------------------------------------------

    def add_subscription(self, opts: SubOptions) -> bool:
        """Subscribe (or replace the same filter); True if the filter is new for the session."""
        key = opts.full_filter
        new = key not in self.subscriptions
        if not new:
            # Replacing: drop the old entry first (its group/filter key is the same).
            self.broker.router.unsubscribe(self, self.subscriptions[key])
        self.subscriptions[key] = opts
        self.broker.router.subscribe(self, opts)
        store = self.broker.store
        if store is not None:
            store.subscription_added(self, opts)
        return new

    def remove_subscription(self, full_filter: str) -> bool:
        opts = self.subscriptions.pop(full_filter, None)
        if opts is None:
            return False
        self.broker.router.unsubscribe(self, opts)
        store = self.broker.store
        if store is not None:
            store.subscription_removed(self, full_filter)
        return True

    def clear_subscriptions(self) -> list[str]:
        removed = list(self.subscriptions)
        for key in removed:
            self.remove_subscription(key)
        return removed

    # -- delivery ------------------------------------------------------------------------------

    def deliver(
        self, message: Message, sub_qos: int, sub_ids: tuple[int, ...], retain: bool
    ) -> None:
        """Hand a routed message to this session (the router's per-target call)."""
        qos = message.qos
        if self.upgrade_qos or sub_qos < qos:
            qos = sub_qos
        conn = self.conn
        if conn is None:
            if qos and self.persistent:
                self.enqueue(message, qos, sub_ids, retain, offline=True)
            return
        # With an on_deliver hook every delivery waits for it in the connection's writer.
        if self.queue or self.broker.deliver_hooked[conn.v5]:
            self.enqueue(message, qos, sub_ids, retain)
            conn.wake()
        elif not conn.send_message(message, qos, sub_ids, retain):
            self.enqueue(message, qos, sub_ids, retain)

    def enqueue(
        self,
        message: Message,
        qos: int,
        sub_ids: tuple[int, ...],
        retain: bool,
        *,
        offline: bool = False,
    ) -> None:
        """Queue a delivery; when the queue is full the oldest entry is dropped and counted."""
        limit = self.max_offline if offline or self.conn is None else self.max_online
        queue = self.queue
        if queue is _NO_QUEUE:
            queue = self.queue = deque()
        if limit == 0:
            self.broker.message_dropped(self, message, "queue_full")
            return
        if 0 < limit <= len(queue):
            self.unqueue("queue_full")
        entry = (message, qos, sub_ids, retain)
        queue.append(entry)
        store = self.broker.store
        if store is not None:
            store.message_queued(self, entry)
        if offline:
            self.broker.offline_message(self, message, qos)

    def unqueue(self, reason: str = "sent") -> Queued:
        """Take the oldest queued delivery: ``"sent"`` (to the connection) or a drop reason."""
        entry: Queued = self.queue.popleft()
        store = self.broker.store
        if store is not None:
            store.message_unqueued(self, entry, reason)
        if reason != "sent":
            self.broker.message_dropped(self, entry[0], reason)
        return entry

    def alloc_packet_id(self) -> int:
        """A packet id not used by any message in flight (1..65535, cycling)."""
        pid = self.next_pid
        inflight = self.inflight
        while pid in inflight:
            pid = pid + 1 if pid < 0xFFFF else 1
        self.next_pid = pid + 1 if pid < 0xFFFF else 1
        return pid

    def window_full(self, window: int) -> bool:
        n = len(self.inflight)
        return n >= 0xFFFF or (window > 0 and n >= window)

    def add_inflight(self, pid: int, entry: Inflight) -> None:
        self.inflight[pid] = entry
        store = self.broker.store
        if store is not None:
            store.inflight_added(self, pid, entry)
        if self.retry_timer is None and self.retry_interval > 0 and self.protocol_level != 5:
            self.retry_timer = self.broker.timers.call_later(
                self.retry_interval, self.broker.retry_due, self
            )

    def ack(self, pid: int, qos: int) -> Inflight | None:
        """PUBACK (qos 1) or PUBCOMP (qos 2 in AWAIT_COMP) received: forget the message."""
        entry = self.inflight.get(pid)
        if entry is None or entry.qos != qos:
            return None
        if qos == 2 and entry.state != AWAIT_COMP:
            return None
        del self.inflight[pid]
        store = self.broker.store
        if store is not None:
            store.inflight_removed(self, pid)
        return entry

    def pubrec(self, pid: int, now: float) -> Inflight | None:
        """PUBREC received: the message is delivered; PUBREL must be sent (and re-sent)."""
        entry = self.inflight.get(pid)
        if entry is None or entry.qos != 2:
            return None
        entry.state = AWAIT_COMP
        entry.sent_at = now
        store = self.broker.store
        if store is not None:
            store.inflight_changed(self, pid, entry)
        return entry

    def drop_inflight(self, pid: int) -> Inflight | None:
        """Forget a message in flight (v5 PUBREC with an error reason code, or undeliverable)."""
        entry = self.inflight.pop(pid, None)
        store = self.broker.store
        if entry is not None and store is not None:
            store.inflight_removed(self, pid)
        return entry

    # -- incoming QoS 2 ------------------------------------------------------------------------

    def incoming_qos2_add(self, pid: int) -> None:
        if self.incoming_qos2 is _NO_IDS:
            self.incoming_qos2 = set()
        self.incoming_qos2.add(pid)
        store = self.broker.store
        if store is not None:
            store.incoming_qos2_changed(self, pid, True)

    def incoming_qos2_remove(self, pid: int) -> bool:
        if pid in self.incoming_qos2:
            self.incoming_qos2.remove(pid)
            store = self.broker.store
            if store is not None:
                store.incoming_qos2_changed(self, pid, False)
            return True
        return False

    # -- teardown ------------------------------------------------------------------------------

    def cancel_timers(self) -> None:
        for timer in (self.expiry_timer, self.will_timer, self.retry_timer):
            if timer is not None:
                timer.cancel()
        self.expiry_timer = self.will_timer = self.retry_timer = None

    def discard_messages(self) -> None:
        self.queue = _NO_QUEUE
        self.inflight.clear()
        self.incoming_qos2 = _NO_IDS

    def info(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "mountpoint": self.mountpoint,
            "online": self.online,
            "queued": len(self.queue),
            "inflight": len(self.inflight),
        }
