"""One MQTT client connection: a reader, a writer, keepalive, and the CONNECT handshake.

A :class:`Connection` runs in a task owned by its listener's nursery and opens a nursery of its
own for the writer. It works on any :class:`trio.abc.Stream` (TCP today; TLS, WebSocket and
PROXY listeners wrap the stream and reuse this class).

Reader: ``receive_some(65536)``, ``parser.feed()``, then every packet of the batch is handled
in order. Handlers are synchronous unless a plugin implements the hook they must ask; only then
does the reader await (so a slow auth hook blocks only its own client). Keepalive is the
deadline of the reader's cancel scope, moved on every read.

Writer: producers (the reader, and the router delivering other clients' messages) append
encoded packets to ``out`` (a bytearray) and wake the writer; the writer swaps the buffer and
does one ``send_all`` with everything pending (write coalescing). ``out`` is bounded by
``max_outgoing_buffer``: QoS 0 beyond it is dropped and counted, QoS 1/2 stay queued in the
session until the socket drains.

Backpressure (QoS 0 floods): a QoS 0 delivery that finds a subscriber's ``out`` past its
high-water mark (a quarter of ``max_outgoing_buffer``) marks that connection congested; the
publishing reader then stops reading until that writer has drained below the low-water mark
(a quarter of the high-water mark), so a subscriber that keeps up loses nothing however fast
publishers write. The wait is bounded (:data:`BACKPRESSURE_TIMEOUT`): a writer that did not
drain by then is *stuck* (its client stopped reading): publishers no longer wait for it and
its QoS 0 deliveries are dropped at ``max_outgoing_buffer`` until it drains again. When
nothing is congested this costs one comparison per delivery and one per PUBLISH read.

Closing: :meth:`close` (idempotent, synchronous) stops the reader, lets the writer flush what
is pending (bounded by a short deadline), and the connection task then tells the broker the
connection is gone (will message, session expiry, hooks).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from plugin_host.broker import hookargs
from plugin_host.broker.message import Message
from plugin_host.broker.props import from_hook, to_hook
from plugin_host.broker.session import AWAIT_ACK, Inflight, Session
from plugin_host.broker.trie import SubOptions
from plugin_host.hooks.results import ALLOW, Outcome
from plugin_host.mqtt import (
    MQTT_5,
    PINGRESP_BYTES,
    Auth,
    Connect,
    Disconnect,
    MQTTError,
    Parser,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
    encode_auth,
    encode_connack,
    encode_disconnect,
    encode_puback,
    encode_pubcomp,
    encode_publish,
    encode_pubrec,
    encode_pubrel,
    encode_suback,
    encode_unsuback,
    split_shared,
    v3_connack_return_code,
    validate_topic_filter,
)
from plugin_host.mqtt.primitives import decode_varint

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.listeners.tcp import BoundListener, ConnectionInfo

log = structlog.get_logger(__name__)

READ_SIZE = 65536
#: Longest a publishing reader waits for congested subscribers to drain (then they are stuck).
BACKPRESSURE_TIMEOUT = 0.5
#: How long a closing connection may take to flush what is pending (then it is cut).
CLOSE_FLUSH_TIMEOUT = 5.0
#: Packets one connection may hold for the store (acknowledgements waiting for the disk)
#: before its reader waits for the disk instead of routing more PUBLISHes.
MAX_HELD = 10_000
#: MQTT 5 session expiry 0xFFFFFFFF means "never".
NEVER_EXPIRES = 0xFFFFFFFF

# v5 reason codes used here.
RC_SUCCESS = 0x00
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_CONTINUE_AUTH = 0x18
RC_REAUTH = 0x19
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_UNSUPPORTED_VERSION = 0x84
RC_CLIENT_ID_INVALID = 0x85
RC_BAD_CREDENTIALS = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_UNAVAILABLE = 0x88
RC_BAD_AUTH_METHOD = 0x8C
RC_KEEPALIVE_TIMEOUT = 0x8D
RC_TOPIC_FILTER_INVALID = 0x8F
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAX_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_QUOTA_EXCEEDED = 0x97
RC_SHARED_NOT_SUPPORTED = 0x9E
RC_MAX_CONNECT_TIME = 0xA0

#: v5 SUBACK codes a subscribe deny may carry (spec 2.6).
SUBSCRIBE_DENY_CODES = frozenset({0x80, 0x85, 0x87, 0x97})

_RETAIN_HANDLING_NAMES = ("send_retain", "send_if_new_sub", "dont_send")

# Why a connection ended, for the will decision.
_NORMAL = "normal"  # DISCONNECT 0x00: no will
_WITH_WILL = "with_will"  # DISCONNECT with any other code: will is sent


class ConnectRefused(Exception):
    """The CONNECT is refused: answer with CONNACK ``code`` (v5 code; mapped for v3)."""

    def __init__(
        self, code: int, reason: str, properties: dict[str, Any] | None = None, *, v3: int = -1
    ):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.properties = properties
        self.v3 = v3  # explicit MQTT 3 return code, or -1 to map ``code``


class _Will:
    """The will of a connection: the message, its delay and its expiry interval (seconds)."""

    __slots__ = ("delay", "expiry", "message")

    def __init__(self, message: Message, delay: float, expiry: float | None) -> None:
        self.message = message
        self.delay = delay
        self.expiry = expiry


class Connection:
    """One client connection (see the module docstring)."""

    __slots__ = (
        "_lifetime_deadline",
        "_nursery",
        "_parked",
        "_read_scope",
        "alias_in",
        "alias_in_max",
        "alias_out",
        "alias_out_max",
        "auth_chain",
        "auth_method",
        "authz_chain",
        "bridge",
        "broker",
        "client_id",
        "client_max_packet",
        "closing",
        "connected",
        "deliver_hook",
        "delivered",
        "delivered_bytes",
        "drained",
        "end_kind",
        "held",
        "high_water",
        "info",
        "keepalive",
        "level",
        "listener",
        "max_buffer",
        "mountpoint",
        "out",
        "parser",
        "peer_addr",
        "peer_port",
        "problem_info",
        "rate_count",
        "rate_limit",
        "rate_window",
        "session",
        "stream",
        "stuck",
        "username",
        "v5",
        "variant_key",
        "will",
        "window",
    )

    def __init__(
        self,
        broker: Broker,
        stream: trio.abc.Stream,
        listener: BoundListener,
        info: ConnectionInfo | None = None,
    ) -> None:
        cfg = broker.cfg
        self.broker = broker
        self.stream = stream
        self.listener = listener
        # The listener's explicit plugin chains (spec 1.3), None = every enabled plugin:
        # auth_plugins for auth_on_register(_m5) / on_auth_m5, authz_plugins for
        # auth_on_publish(_m5) / auth_on_subscribe(_m5).
        self.auth_chain: tuple[str, ...] | None = listener.config.auth_plugins
        self.authz_chain: tuple[str, ...] | None = listener.config.authz_plugins
        #: What the listener learnt before MQTT: PROXY peer, TLS client certificate, identity.
        self.info = info
        self.peer_addr, self.peer_port = info.peer if info is not None else _peer_of(stream)
        self.parser = Parser(server_side=True, max_packet_size=cfg.max_message_size or None)
        self.level = 4
        self.v5 = False
        self.bridge = False
        self.variant_key = 0  # 8 for MQTT 5: the encoded-bytes cache key of this client
        self.session: Session | None = None
        self.client_id = ""
        self.mountpoint = listener.config.mountpoint
        self.username: str | None = None
        self.out = bytearray()
        #: Packets waiting until the store has made a change durable: (change number, bytes).
        self.held: deque[tuple[int, bytes]] | None = None
        self._parked: trio.lowlevel.Task | None = None  # the writer, while it waits
        self._read_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self.closing = False
        self.connected = False
        self.end_kind: str | None = None
        self.keepalive = 0.0
        self._lifetime_deadline = math.inf
        self.will: _Will | None = None
        self.max_buffer = cfg.max_outgoing_buffer
        # Backpressure (see the module docstring): past high_water a QoS 0 delivery makes the
        # publisher wait for ``drained``; ``stuck`` after such a wait timed out.
        self.high_water = max(1, self.max_buffer // 4)
        self.drained: trio.Event | None = None
        self.stuck = False
        self.window = cfg.max_inflight_messages
        self.client_max_packet = 0  # 0 = no limit announced by the client
        self.alias_in: dict[int, str] | None = None
        self.alias_in_max = 0
        self.alias_out: dict[str, int] | None = None
        self.alias_out_max = 0
        self.problem_info = True
        self.auth_method: str | None = None
        self.deliver_hook = "on_deliver"  # the on_deliver variant for this protocol level
        self.rate_limit = cfg.max_message_rate
        self.rate_count = 0
        self.rate_window = 0.0
        #: QoS 0 deliveries sent; a slot of its own is the cheapest per-delivery count (the
        #: broker folds it into ``counters.publishes_sent`` when the connection ends).
        self.delivered = 0
        self.delivered_bytes = 0

    def __repr__(self) -> str:
        return f"Connection({self.client_id!r}, {self.peer_addr}:{self.peer_port})"

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Serve the connection until it closes; never raises for network or client faults."""
        broker = self.broker
        broker.connections.add(self)
        # Each trio task runs in its own copy of the context: binding here tags this
        # connection's log lines only (cheaper than a context manager kept alive per client).
        structlog.contextvars.bind_contextvars(peer=f"{self.peer_addr}:{self.peer_port}")
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._writer)
                    await self._read_guarded()
                    self.close()
                    self._finish_writing()
            finally:
                self._nursery = None
                self.closing = True
                broker.connection_closed(self)
        finally:
            broker.connection_removed(self)
            await trio.aclose_forcefully(self.stream)

    async def _read_guarded(self) -> None:
        """The reader; network errors end the connection, a bug is logged, never raised."""
        try:
            with self._read_scope:
                await self._serve()
            if not self.closing:
                self._lost_reason_if_keepalive()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("connection_lost", client_id=self.client_id, error=str(exc))
        except Exception:
            log.exception("connection_failed", client_id=self.client_id)

    def _lost_reason_if_keepalive(self) -> None:
        if self._read_scope.cancelled_caught:
            if trio.current_time() >= self._lifetime_deadline:
                log.info("max_connection_lifetime", client_id=self.client_id)
                self.close(RC_MAX_CONNECT_TIME)
            else:
                log.info("keepalive_timeout", client_id=self.client_id)
                self.close(RC_KEEPALIVE_TIMEOUT)

    def close(self, reason_code: int | None = None, reason: str | None = None) -> None:
        """Close the connection: send DISCONNECT ``reason_code`` to v5 clients, flush, cut.

        Synchronous and idempotent; safe to call from any task (takeover, admin, shutdown).
        """
        if self.closing:
            return
        self.closing = True
        if reason_code is not None and self.v5 and self.connected:
            props = {"reason_string": reason} if reason and self.problem_info else None
            data = encode_disconnect(reason_code, MQTT_5, props)
            self.out += data
            self.broker.counters.packets_sent[14] += 1
            self.broker.counters.bytes_sent_by_type[14] += len(data)
        self._read_scope.cancel()
        self._finish_writing()

    def _finish_writing(self) -> None:
        """Let the writer flush what is pending (bounded by a deadline) and stop."""
        self.closing = True
        nursery = self._nursery
        if nursery is not None:
            deadline = trio.current_time() + CLOSE_FLUSH_TIMEOUT
            nursery.cancel_scope.deadline = min(nursery.cancel_scope.deadline, deadline)
        self.wake()

    def _abort_park(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    def wake(self) -> None:
        """Tell the writer there is something to do."""
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    # ------------------------------------------------------------------------------ writer

    async def _writer(self) -> None:
        stream = self.stream
        try:
            while True:
                session = self.session
                if session is not None and session.queue and self.connected and not self.closing:
                    if self.broker.hooks.implemented(self.deliver_hook):
                        await self._drain_hooked(session)
                    else:
                        self._drain(session)
                out = self.out
                if not out:
                    if self.closing:
                        return
                    # Wait for wake(): a bare reschedule is lighter than a ParkingLot
                    # (this is per connection, and idle connections are most of them).
                    self._parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._abort_park)
                    continue
                self.out = bytearray()
                await stream.send_all(out)
                self.broker.counters.bytes_sent += len(out)
                if (self.drained is not None or self.stuck) and len(
                    self.out
                ) < self.high_water >> 2:
                    self._relieved()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if not self.closing:
                log.debug("write_failed", client_id=self.client_id, error=str(exc))
        except Exception:
            log.exception("connection_writer_failed", client_id=self.client_id)
        self.closing = True
        self._read_scope.cancel()
        self._relieved()  # publishers waiting for this writer: it is gone

    def _relieved(self) -> None:
        """The writer drained below the low-water mark (or ended): publishers may go on."""
        self.stuck = False
        drained = self.drained
        if drained is not None:
            self.drained = None
            drained.set()

    def _drain(self, session: Session) -> None:
        """Move queued deliveries into the outgoing buffer while the window and buffer allow."""
        queue = session.queue
        while queue:
            message, qos, sub_ids, retain = queue[0]
            if not self.send_message(message, qos, sub_ids, retain):
                break
            session.unqueue()

    async def _drain_hooked(self, session: Session) -> None:
        """As :meth:`_drain`, asking on_deliver(_m5) before each message."""
        queue = session.queue
        hook = self.deliver_hook
        hooks = self.broker.hooks
        # The dispatcher's positional entry point (no args dict for a one-hookimpl chain).
        callers = getattr(hooks, "auth_caller", None)
        while queue and not self.closing and session.conn is self:
            message, qos, sub_ids, retain = queue[0]
            if qos and (session.window_full(self.window) or len(self.out) >= self.max_buffer):
                break
            if hooks.implemented(hook):
                if callers is None:
                    result = hooks.auth(hook, hookargs.deliver(self, message, qos, retain, self.v5))
                elif self.v5:
                    result = callers(hook)(
                        self.username, self.mountpoint, self.client_id, qos, message.topic,
                        message.payload, retain,
                        to_hook(message.out_properties(time.monotonic())),  # exact expiry
                    )  # fmt: skip
                else:
                    result = callers(hook)(
                        self.username, self.mountpoint, self.client_id, qos, message.topic,
                        message.payload, retain,
                    )  # fmt: skip
                outcome = result if isinstance(result, Outcome) else await result
                if not queue or queue[0][0] is not message:
                    continue  # the queue changed under us (session taken over/cleared)
                if outcome.allowed and outcome.modifiers:
                    message = _modified_delivery(message, outcome.modifiers, self.v5)
            if not self.send_message(message, qos, sub_ids, retain):
                break
            session.unqueue()

    # ------------------------------------------------------------------------------ sending

    def send_bytes(self, data: bytes) -> None:
        """Buffer one encoded packet (not a first PUBLISH delivery: see send_message)."""
        self.out += data
        counters = self.broker.counters
        kind = data[0] >> 4
        counters.packets_sent[kind] += 1
        counters.bytes_sent_by_type[kind] += len(data)
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    def send_durable(self, data: bytes, seq: int) -> None:
        """Buffer a packet that may leave only once the store made change ``seq`` durable.

        The durability rule: PUBACK/PUBREC (and PUBREL, PUBCOMP, a QoS 2 PUBLISH to a stored
        session) wait for the store's group commit, in order, while the reader goes on;
        ``seq`` 0 means nothing to wait for (sent at once unless earlier packets are held).
        PUBLISH packets are not counted here (their callers count them).
        """
        held = self.held
        if held is None:
            store = self.broker.store
            if store is None or seq <= store.durable:
                self._put(data)
                return
            held = self.held = deque()
            store.hold(self)
        held.append((seq, data))

    def release_held(self, durable: int) -> bool:
        """The store made changes up to ``durable`` durable: send what waited for them.

        Returns True when nothing is held any more (the store stops calling).
        """
        held = self.held
        if held is None:
            return True
        out = self.out
        sent = self.broker.counters.packets_sent
        sizes = self.broker.counters.bytes_sent_by_type
        while held:
            seq, data = held[0]
            if seq > durable:
                break
            held.popleft()
            out += data
            kind = data[0] >> 4
            if kind != 3:  # (PUBLISH packets are counted where they are made)
                sent[kind] += 1
                sizes[kind] += len(data)
        self.wake()
        if held:
            return False
        self.held = None
        return True

    def _put(self, data: bytes) -> None:
        self.out += data
        kind = data[0] >> 4
        if kind != 3:
            counters = self.broker.counters
            counters.packets_sent[kind] += 1
            counters.bytes_sent_by_type[kind] += len(data)
        self.wake()

    def _barrier(self) -> int:
        """A change number covering every change so far (0: no store, or sync off)."""
        store = self.broker.store
        return 0 if store is None else store.barrier()

    def send_message(
        self, message: Message, qos: int, sub_ids: tuple[int, ...], retain: bool
    ) -> bool:
        """Encode and buffer one delivery. False: it must wait in the session queue.

        QoS 0 is never refused: beyond the buffer limit it is dropped and counted. This is
        the per-delivery hot path: within a routing pass (``message.encoded`` is a dict) the
        bytes of each (protocol, qos, retain) variant are encoded once and shared; QoS 1/2
        copies get their packet id spliced in between a shared head and tail.
        """
        out = self.out
        if qos == 0:
            if self.closing:
                return True
            if len(out) >= self.high_water:
                if len(out) >= self.max_buffer:
                    self.broker.message_dropped(self.session, message, "buffer_full")
                    return True
                if not self.stuck:
                    self.broker.congested.add(self)  # the publisher waits (backpressure)
            cache = message.encoded
            if (
                cache is not None
                and not sub_ids
                and self.alias_out is None
                and message.expires_at is None
            ):
                key = self.variant_key | retain
                data = cache.get(key)
                if data is None:
                    data = cache[key] = encode_publish(
                        message.topic,
                        message.payload,
                        0,
                        retain,
                        False,
                        None,
                        message.properties if self.v5 else None,
                        self.level,
                    )
                limit = self.client_max_packet
                if limit and len(data) > limit:
                    self.broker.message_dropped(self.session, message, "max_packet_size_exceeded")
                    return True
            else:
                data = self._encode(message, 0, sub_ids, retain, 0)
                if data is None:
                    return True
            out += data
            self.delivered += 1
            self.delivered_bytes += len(data)
            task = self._parked
            if task is not None:
                self._parked = None
                trio.lowlevel.reschedule(task)
            return True
        session = self.session
        if self.closing or session is None or len(out) >= self.max_buffer:
            return False
        inflight = session.inflight
        n = len(inflight)
        window = self.window
        if n >= 0xFFFF or (window and n >= window):
            return False
        pid = session.alloc_packet_id()
        if qos == 2 and self.broker.store is not None:
            return self._send_qos2_stored(session, message, sub_ids, retain, pid)
        cache = message.encoded
        if (
            cache is not None
            and not sub_ids
            and self.alias_out is None
            and message.expires_at is None
        ):
            key = self.variant_key | (qos << 1) | retain
            parts = cache.get(key)
            if parts is None:
                parts = cache[key] = self._split_variant(message, qos, retain)
            head, tail = parts
            limit = self.client_max_packet
            if limit and len(head) + 2 + len(tail) > limit:
                self.broker.message_dropped(session, message, "max_packet_size_exceeded")
                return True
            out += head
            out += pid.to_bytes(2, "big")
            out += tail
            size = len(head) + 2 + len(tail)
        else:
            data = self._encode(message, qos, sub_ids, retain, pid)
            if data is None:
                return True
            out += data
            size = len(data)
        session.add_inflight(pid, Inflight(message, qos, sub_ids, retain, self.broker.clock))
        counters = self.broker.counters
        counters.publishes_sent[qos] += 1
        counters.bytes_sent_by_type[3] += size
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)
        return True

    def _send_qos2_stored(
        self,
        session: Session,
        message: Message,
        sub_ids: tuple[int, ...],
        retain: bool,
        pid: int,
    ) -> bool:
        """A QoS 2 delivery while a store is attached: the PUBLISH leaves once its in-flight
        record is durable, so after a crash it is re-sent with the same packet id and DUP
        (which the client recognises), never as a new message with another id."""
        data = self._encode(message, 2, sub_ids, retain, pid)
        if data is None:
            return True
        store = self.broker.store
        assert store is not None
        before = store.seq
        session.add_inflight(pid, Inflight(message, 2, sub_ids, retain, self.broker.clock))
        self.broker.counters.publishes_sent[2] += 1
        self.broker.counters.bytes_sent_by_type[3] += len(data)
        self.send_durable(data, store.commit_point(before))
        return True

    def _encode(
        self,
        message: Message,
        qos: int,
        sub_ids: tuple[int, ...],
        retain: bool,
        pid: int,
        dup: bool = False,
    ) -> bytes | None:
        """The PUBLISH bytes for this client (no sharing), or None when it must be dropped."""
        now = 0.0
        if message.expires_at is not None:
            now = time.monotonic()
            if now >= message.expires_at:
                self.broker.message_dropped(self.session, message, "expired")
                return None
        topic: str = message.topic
        props: dict[str, Any] | None = None
        if self.v5:
            props = message.out_properties(now) if message.expires_at else message.properties
            alias_out = self.alias_out
            if sub_ids or alias_out is not None:
                props = dict(props) if props else {}
                if sub_ids:
                    props["subscription_identifier"] = list(sub_ids)
                if alias_out is not None:
                    alias = alias_out.get(topic)
                    if alias is not None:
                        props["topic_alias"] = alias
                        topic = ""
                    elif len(alias_out) < self.alias_out_max:
                        alias = len(alias_out) + 1
                        alias_out[topic] = alias
                        props["topic_alias"] = alias
        data = encode_publish(
            topic, message.payload, qos, retain, dup, pid or None, props, self.level
        )
        limit = self.client_max_packet
        if limit and len(data) > limit:
            self.broker.message_dropped(self.session, message, "max_packet_size_exceeded")
            return None
        return data

    def _split_variant(self, message: Message, qos: int, retain: bool) -> tuple[bytes, bytes]:
        """A QoS 1/2 PUBLISH for this client's variant, split around its packet id."""
        props = message.properties if self.v5 else None
        data = encode_publish(
            message.topic, message.payload, qos, retain, False, 1, props, self.level
        )
        _, body = decode_varint(data, 1)
        offset = body + 2 + ((data[body] << 8) | data[body + 1])
        return data[:offset], data[offset + 2 :]

    def resend_inflight(self, session: Session, older_than: float | None = None) -> float:
        """Re-send unacknowledged messages with DUP (PUBREL for QoS 2 ones already received).

        Every one on reconnect; for the v3 retry only those sent before ``older_than``.
        Returns the earliest ``sent_at`` of the messages left alone (``inf`` if none).
        """
        now = time.monotonic()
        earliest = math.inf
        # With a store, what is re-sent waits until the state it shows is durable.
        barrier = self._barrier()
        for pid, entry in list(session.inflight.items()):
            if older_than is not None and entry.sent_at > older_than:
                earliest = min(earliest, entry.sent_at)
                continue
            entry.sent_at = now
            if entry.state == AWAIT_ACK:
                data = self._encode(
                    entry.message, entry.qos, entry.sub_ids, entry.retain, pid, True
                )
                if data is None:
                    session.drop_inflight(pid)
                    continue
                if barrier:
                    self.send_durable(data, barrier)
                else:
                    self.out += data
                self.broker.counters.packets_sent[3] += 1
                self.broker.counters.bytes_sent_by_type[3] += len(data)
            elif barrier:
                self.send_durable(encode_pubrel(pid, self.level), barrier)
            else:
                pubrel = encode_pubrel(pid, self.level)
                self.out += pubrel
                self.broker.counters.packets_sent[6] += 1
                self.broker.counters.bytes_sent_by_type[6] += len(pubrel)
            earliest = min(earliest, now)
        self.wake()
        return earliest

    # ------------------------------------------------------------------------------ reader

    async def _serve(self) -> None:
        """CONNECT handshake, then the packet loop."""
        stream = self.stream
        parser = self.parser
        cfg = self.broker.cfg
        packets: list[Any] = []
        with trio.move_on_after(cfg.mqtt_connect_timeout) as scope:
            while not packets:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    return
                self.broker.counters.bytes_received += len(data)
                try:
                    packets = parser.feed(data)
                except MQTTError as exc:
                    self._refuse_bad_connect(exc)
                    return
        if scope.cancelled_caught:
            log.info("connect_timeout")
            return
        first = packets[0]
        if not isinstance(first, Connect):  # the parser already refuses this; be safe
            return
        pending = await self._handshake(first)
        if not self.connected:
            return
        # Packets pipelined behind CONNECT (or read while the auth hook ran).
        rest = packets[1:]
        if pending:
            try:
                rest.extend(parser.feed(pending))
            except MQTTError as exc:
                rest.extend(getattr(exc, "parsed", []))
                if await self._handle_batch(rest):
                    self._protocol_error(exc)
                return
        if rest and not await self._handle_batch(rest):
            return
        await self._read_loop()

    async def _read_loop(self) -> None:
        stream = self.stream
        parser = self.parser
        scope = self._read_scope
        counters = self.broker.counters
        inf = math.inf
        keepalive = self.keepalive
        lifetime = self._lifetime_deadline
        while True:
            if keepalive:
                deadline = trio.current_time() + keepalive
                scope.deadline = deadline if deadline < lifetime else lifetime
            elif lifetime != inf:
                scope.deadline = lifetime
            data = await stream.receive_some(READ_SIZE)
            scope.deadline = inf
            if not data:
                return
            counters.bytes_received += len(data)
            try:
                packets = parser.feed(data)
            except MQTTError as exc:
                if await self._handle_batch(getattr(exc, "parsed", [])):
                    self._protocol_error(exc)
                return
            if not await self._handle_batch(packets):
                return

    async def _handle_batch(self, packets: list[Any]) -> bool:
        """Handle packets in order; False when the connection must stop reading."""
        broker = self.broker
        broker.tick()
        received = broker.counters.packets_received
        for packet in packets:
            if self.closing:
                return False
            t = type(packet)
            received[t] += 1
            if t is Publish:
                pending = self._on_publish(packet)
                if broker.congested and pending is None:
                    pending = self._backpressure()
            elif t is Puback:
                self._on_puback(packet)
                pending = None
            elif t is Pubrec:
                self._on_pubrec(packet)
                pending = None
            elif t is Pubrel:
                self._on_pubrel(packet)
                pending = None
            elif t is Pubcomp:
                self._on_pubcomp(packet)
                pending = None
            elif t is Pingreq:
                self.send_bytes(PINGRESP_BYTES)
                pending = None
            elif t is Subscribe:
                pending = self._on_subscribe(packet)
            elif t is Unsubscribe:
                pending = self._on_unsubscribe(packet)
            elif t is Disconnect:
                self._on_disconnect(packet)
                return False
            elif t is Auth:
                pending = self._on_auth(packet)
            else:  # CONNECT again (the parser refuses it first) or a server-only packet
                self._protocol_error(MQTTError(RC_PROTOCOL_ERROR, f"unexpected {t.__name__}"))
                return False
            if pending is not None:
                await pending
                broker.clock = time.monotonic()  # time passed (hook changes: next batch)
        return not self.closing

    async def _backpressure(self) -> None:
        """Our deliveries filled subscribers past their high-water mark: stop reading until
        their writers drained, at most :data:`BACKPRESSURE_TIMEOUT`; those that did not are
        stuck (publishers stop waiting for them; their QoS 0 is dropped when full)."""
        broker = self.broker
        congested = broker.congested
        broker.congested = set()
        congested.discard(self)  # a client reading its own publishes must not wait on itself
        waiting: list[tuple[Connection, trio.Event]] = []
        for conn in congested:
            if not conn.closing and not conn.stuck:
                drained = conn.drained
                if drained is None:
                    drained = conn.drained = trio.Event()
                waiting.append((conn, drained))
        with trio.move_on_after(BACKPRESSURE_TIMEOUT):
            for _, drained in waiting:
                await drained.wait()
        for conn, drained in waiting:
            if not drained.is_set() and not conn.closing and not conn.stuck:
                conn.stuck = True
                log.info(
                    "subscriber_stuck",
                    client_id=conn.client_id,
                    waited=BACKPRESSURE_TIMEOUT,
                    publisher=self.client_id,
                )

    def _protocol_error(self, exc: MQTTError) -> None:
        """Bad input after CONNECT: log once, v5 DISCONNECT with the reason code, close."""
        self.broker.counters.protocol_errors += 1
        log.warning(
            "protocol_error",
            client_id=self.client_id,
            peer=f"{self.peer_addr}:{self.peer_port}",
            reason_code=f"0x{exc.reason_code:02X}",
            error=exc.message,
        )
        self.end_kind = None  # abnormal: the will is sent
        self.close(exc.reason_code, exc.message)

    def _refuse_bad_connect(self, exc: MQTTError) -> None:
        """Bad CONNECT: v5 CONNACK with the reason code, v3 CONNACK when one exists, else close."""
        self.broker.counters.protocol_errors += 1
        log.warning(
            "protocol_error",
            peer=f"{self.peer_addr}:{self.peer_port}",
            reason_code=f"0x{exc.reason_code:02X}",
            error=exc.message,
            during="connect",
        )
        level = self.parser.protocol_level
        if level == MQTT_5:
            self.send_bytes(encode_connack(False, exc.reason_code, MQTT_5))
        elif level in (3, 4) and exc.reason_code == RC_UNSUPPORTED_VERSION:
            self.send_bytes(encode_connack(False, 1, level))
        elif level is None and exc.reason_code == RC_UNSUPPORTED_VERSION:
            # An unknown level: MQTT 3.1.1 3.1.2.2 says answer CONNACK 1 (v3 form).
            self.send_bytes(encode_connack(False, 1, 4))

    # ------------------------------------------------------------------------------ CONNECT

    async def _handshake(self, pkt: Connect) -> bytes:
        """Run CONNECT to CONNACK. Returns bytes read meanwhile (to parse next)."""
        self.broker.counters.packets_received[Connect] += 1
        raw_level = pkt.protocol_level
        self.level = level = raw_level & 0x7F
        self.v5 = v5 = level == MQTT_5
        self.bridge = raw_level & 0x80 != 0
        self.variant_key = 8 if v5 else 0
        self.parser.protocol_level = level
        if self.info is not None and self.info.username is not None:
            # use_identity_as_username / proxy_protocol_use_cn_as_username: the certificate's
            # CN replaces the CONNECT username before authentication (auth_on_register sees it).
            pkt.username = self.info.username
        self.client_id = pkt.client_id
        self.username = pkt.username
        structlog.contextvars.bind_contextvars(client_id=pkt.client_id)
        try:
            pending = await self._authenticate(pkt)
        except ConnectRefused as refused:
            self._refuse(refused)
            return b""
        except _ClientGone:
            log.info("client_gone_during_connect")
            self.closing = True
            return b""
        if self.closing:
            return b""
        self.connected = True
        self.broker.counters.connects += 1
        log.info(
            "client_connected",
            client_id=self.client_id,
            protocol=level,
            clean_start=pkt.clean_start,
            keepalive=pkt.keepalive,
        )
        return pending

    def _refuse(self, refused: ConnectRefused) -> None:
        counters = self.broker.counters
        counters.connects_refused += 1
        by_code = counters.connects_refused_by
        by_code[refused.code] = by_code.get(refused.code, 0) + 1
        log.info(
            "connect_refused",
            client_id=self.client_id,
            reason=refused.reason,
            reason_code=f"0x{refused.code:02X}",
        )
        if self.v5:
            props = dict(refused.properties or {})
            if refused.reason and self.problem_info and "reason_string" not in props:
                props["reason_string"] = refused.reason
            if not self.problem_info:
                props.pop("reason_string", None)
                props.pop("user_property", None)
            self.send_bytes(encode_connack(False, refused.code, MQTT_5, props))
        else:
            code = refused.v3
            if code < 0:
                mapped = v3_connack_return_code(refused.code)
                code = int(mapped) if mapped is not None else -1
            if code > 0:
                self.send_bytes(encode_connack(False, code, self.level))
        self.closing = True

    async def _authenticate(self, pkt: Connect) -> bytes:
        """Checks, hooks and session set-up of CONNECT; raises ConnectRefused."""
        broker = self.broker
        cfg = broker.cfg
        lcfg = self.listener.config
        v5 = self.v5
        level = self.level
        props = pkt.properties
        if pkt.protocol_level not in lcfg.allowed_protocol_versions:
            raise ConnectRefused(RC_UNSUPPORTED_VERSION, "protocol version not allowed", v3=1)
        if v5:
            self.problem_info = props.get("request_problem_information", 1) == 1
            self.client_max_packet = props.get("maximum_packet_size", 0)
            receive_max = props.get("receive_maximum", 65535)
            client_window = min(receive_max, cfg.receive_max_client)
            self.window = min(self.window, client_window) if self.window > 0 else client_window
            alias_max = min(props.get("topic_alias_maximum", 0), cfg.topic_alias_max_client)
            if alias_max > 0:
                self.alias_out = {}
                self.alias_out_max = alias_max
            if cfg.topic_alias_max_broker > 0:
                self.alias_in = {}
                self.alias_in_max = cfg.topic_alias_max_broker
        connack_props: dict[str, Any] = {}
        # Client identifier rules (MQTT 3.1.1 3.1.3.1, MQTT 5 3.1.3.1; spec 2.1).
        client_id = pkt.client_id
        if not client_id:
            if v5 or (level == 4 and pkt.clean_start):
                client_id = "auto-" + secrets.token_hex(10)
                if v5:
                    connack_props["assigned_client_identifier"] = client_id
            else:
                raise ConnectRefused(RC_CLIENT_ID_INVALID, "empty client identifier", v3=2)
        if len(client_id) > cfg.max_client_id_size:
            raise ConnectRefused(RC_CLIENT_ID_INVALID, "client identifier too long", v3=2)
        self.client_id = client_id
        structlog.contextvars.bind_contextvars(client_id=client_id)
        # Keepalive (MQTT 5 server keep alive from max_keepalive).
        keepalive = pkt.keepalive
        if cfg.max_keepalive and v5 and (keepalive == 0 or keepalive > cfg.max_keepalive):
            keepalive = cfg.max_keepalive
            connack_props["server_keep_alive"] = keepalive
        self.keepalive = keepalive * 1.5
        # Session expiry.
        clean_start = pkt.clean_start
        if v5:
            expiry_raw = props.get("session_expiry_interval", 0)
            expiry: float | None = None if expiry_raw == NEVER_EXPIRES else float(expiry_raw)
        else:
            expiry = 0.0 if clean_start else cfg.persistent_client_expiration
        # The will (authorised below, after authentication).
        will_msg: Message | None = None
        will_delay = 0.0
        will_expiry: float | None = None
        if pkt.will is not None:
            w = pkt.will
            wprops = dict(w.properties) if w.properties else {}
            will_delay = float(wprops.pop("will_delay_interval", 0))
            if cfg.max_last_will_delay is not None:
                will_delay = min(will_delay, cfg.max_last_will_delay)
            # Message expiry counts from when the will is published (set then).
            raw_expiry = wprops.pop("message_expiry_interval", None)
            will_expiry = None if raw_expiry is None else float(raw_expiry)
            will_msg = Message(w.topic, w.payload, w.qos, w.retain, wprops or None)
        hooks = broker.hooks
        pending = b""
        mountpoint = self.mountpoint
        username = pkt.username
        modifiers: dict[str, Any] = {}
        # Enhanced authentication (MQTT 5 AUTH exchange).
        if v5 and "authentication_method" in props:
            pending = await self._enhanced_auth(pkt, connack_props)
        # auth_on_register(_m5)
        anonymous_ok = cfg.allow_anonymous or lcfg.allow_anonymous_override
        hook = "auth_on_register_m5" if v5 else "auth_on_register"
        if not anonymous_ok:
            if not hooks.implemented(hook):
                raise ConnectRefused(
                    RC_BAD_CREDENTIALS if v5 else RC_NOT_AUTHORIZED,
                    "no authentication plugin and allow_anonymous is off",
                    v3=5,
                )
            args = hookargs.register(self, pkt, client_id, v5)
            outcome, more = await self._call_watching(hook, args, self.auth_chain)
            pending += more
            if not outcome.allowed:
                code = outcome.reason_code if v5 and outcome.reason_code else RC_BAD_CREDENTIALS
                deny_props = from_hook(outcome.properties) if v5 else None
                raise ConnectRefused(
                    code,
                    outcome.reason or "not_authorized",
                    deny_props,
                    v3=4 if outcome.invalid_credentials else 5,
                )
            if outcome.modifiers:
                modifiers = outcome.modifiers
                mountpoint = modifiers.get("mountpoint", mountpoint)
                client_id = modifiers.get("client_id", client_id)
                username = modifiers.get("username", username)
                if "clean_session" in modifiers:
                    clean_start = modifiers["clean_session"]
                if "clean_start" in modifiers:
                    clean_start = modifiers["clean_start"]
                if not v5:
                    expiry = 0.0 if clean_start else cfg.persistent_client_expiration
                mprops = modifiers.get("properties") or {}
                if "p_session_expiry_interval" in mprops:
                    raw = mprops["p_session_expiry_interval"]
                    expiry = None if raw == NEVER_EXPIRES else float(raw)
                if "p_user_property" in mprops:
                    connack_props["user_property"] = list(mprops["p_user_property"])
        self.mountpoint = mountpoint
        self.client_id = client_id
        self.username = username
        structlog.contextvars.bind_contextvars(client_id=client_id)
        # Will authorisation through auth_on_publish (spec 2.4).
        if will_msg is not None:
            will_msg.mountpoint = mountpoint
            pub_hook = "auth_on_publish_m5" if v5 else "auth_on_publish"
            if hooks.implemented(pub_hook):
                args = hookargs.publish(
                    self,
                    will_msg.topic,
                    will_msg.payload,
                    will_msg.qos,
                    will_msg.retain,
                    will_msg.properties,
                    v5,
                )
                outcome, more = await self._call_watching(pub_hook, args, self.authz_chain)
                pending += more
                if not outcome.allowed:
                    raise ConnectRefused(
                        outcome.reason_code or RC_NOT_AUTHORIZED if v5 else RC_NOT_AUTHORIZED,
                        outcome.reason or "will not authorised",
                        v3=5,
                    )
                if outcome.modifiers:
                    will_msg = _modified_publish(will_msg, outcome.modifiers, v5)
                    if will_msg.expires_at is not None:
                        will_expiry, will_msg.expires_at = will_msg.expires_at, None
            self.will = _Will(will_msg, will_delay, will_expiry)
        if self.closing:
            return b""
        # Session: take over an existing connection, resume or create (spec 3.1.4).
        session, present = broker.register(self, mountpoint, client_id, clean_start)
        self.session = session
        session.username = username
        session.protocol_level = level
        session.peer = (self.peer_addr, self.peer_port)
        session.set_expiry(expiry)
        _apply_session_modifiers(session, self, modifiers)
        if modifiers.get("max_message_size"):
            self.parser.max_packet_size = int(modifiers["max_message_size"])
        lifetime = float(modifiers.get("max_connection_lifetime") or lcfg.max_connection_lifetime)
        if lifetime > 0:
            self._lifetime_deadline = trio.current_time() + lifetime
        self.deliver_hook = "on_deliver_m5" if v5 else "on_deliver"
        if v5:
            if cfg.receive_max_broker < 65535:
                connack_props["receive_maximum"] = cfg.receive_max_broker
            if cfg.topic_alias_max_broker:
                connack_props["topic_alias_maximum"] = cfg.topic_alias_max_broker
            max_size = self.parser.max_packet_size
            if max_size:
                connack_props["maximum_packet_size"] = max_size
            if props.get("request_response_information") == 1:
                connack_props["response_information"] = f"response/{client_id}"
            if (
                expiry is not None
                and expiry_raw != NEVER_EXPIRES
                and "p_session_expiry_interval" in (modifiers.get("properties") or {})
            ):
                connack_props["session_expiry_interval"] = int(expiry)
        # on_register(_m5): after auth and registration, before CONNACK (spec 2.3).
        reg_hook = "on_register_m5" if v5 else "on_register"
        if hooks.implemented(reg_hook):
            hooks.notify(reg_hook, hookargs.registered(self, connack_props, v5))
        if not self.problem_info:
            connack_props.pop("user_property", None)
        self.send_bytes(encode_connack(present, 0, level, connack_props if v5 else None))
        broker.attach(self, session, present)
        return pending

    def _ask(
        self, hook: str, args: dict[str, Any], chain: tuple[str, ...] | None
    ) -> Awaitable[Outcome]:
        """``hooks.auth`` restricted to a listener's explicit plugin ``chain`` (if any)."""
        hooks = self.broker.hooks
        if chain is None:
            return hooks.auth(hook, args)
        return hooks.auth(hook, args, chain)

    async def _call_watching(
        self, hook: str, args: dict[str, Any], chain: tuple[str, ...] | None
    ) -> tuple[Outcome, bytes]:
        """Run an auth chain (restricted to the listener's ``chain``, if any) while watching
        the socket: cancelled if the client goes away.

        Bytes the client sends meanwhile (pipelined packets) are returned for later parsing.
        """
        result: list[Any] = []
        received = bytearray()
        gone = False

        async def call(cancel: trio.CancelScope) -> None:
            result.append(await self._ask(hook, args, chain))
            cancel.cancel()

        async def watch() -> None:
            nonlocal gone
            while True:
                data = await self.stream.receive_some(READ_SIZE)
                if not data:
                    gone = True
                    return
                self.broker.counters.bytes_received += len(data)
                received.extend(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, nursery.cancel_scope)
                await watch()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            gone = True
        if gone or not result:
            self.broker.counters.auth_cancelled += 1
            raise _ClientGone()
        return result[0], bytes(received)

    async def _enhanced_auth(self, pkt: Connect, connack_props: dict[str, Any]) -> bytes:
        """MQTT 5 enhanced authentication at CONNECT: on_auth_m5 and the AUTH exchange."""
        hooks = self.broker.hooks
        method = pkt.properties["authentication_method"]
        data = pkt.properties.get("authentication_data")
        if not hooks.implemented("on_auth_m5"):
            raise ConnectRefused(RC_BAD_AUTH_METHOD, "no plugin handles enhanced authentication")
        self.auth_method = method
        pending = b""
        while True:
            args = hookargs.auth(self, method, data)
            outcome, more = await self._call_watching("on_auth_m5", args, self.auth_chain)
            pending += more
            if not outcome.allowed:
                if outcome.reason_code:
                    raise ConnectRefused(
                        outcome.reason_code, outcome.reason or "authentication failed"
                    )
                raise _ClientGone()  # spec 2.2: close without CONNACK
            code, out_props = _auth_result(outcome, method)
            if code == RC_SUCCESS:
                connack_props.update(out_props)
                return pending
            # Continue: send AUTH 0x18, wait for the client's AUTH.
            self.send_bytes(encode_auth(RC_CONTINUE_AUTH, out_props))
            reply, pending = await self._read_auth_reply(pending)
            if reply.properties.get("authentication_method") != method:
                raise ConnectRefused(RC_PROTOCOL_ERROR, "authentication method changed")
            data = reply.properties.get("authentication_data")

    async def _read_auth_reply(self, pending: bytes) -> tuple[Auth, bytes]:
        """Read until the client's AUTH packet of the exchange (nothing else is allowed)."""
        packets: list[Any] = []
        if pending:
            packets = self.parser.feed(pending)
        while not packets:
            data = await self.stream.receive_some(READ_SIZE)
            if not data:
                raise _ClientGone()
            self.broker.counters.bytes_received += len(data)
            try:
                packets = self.parser.feed(data)
            except MQTTError as exc:
                raise ConnectRefused(exc.reason_code, exc.message) from None
        first = packets[0]
        if not isinstance(first, Auth) or first.reason_code != RC_CONTINUE_AUTH or len(packets) > 1:
            raise ConnectRefused(RC_PROTOCOL_ERROR, "expected AUTH during authentication")
        return first, b""

    # ------------------------------------------------------------------------------ PUBLISH

    def _on_publish(self, p: Publish) -> Any:
        session = self.session
        assert session is not None
        topic = p.topic
        props = p.properties
        if props:
            alias = props.pop("topic_alias", None)
            if alias is not None:
                aliases = self.alias_in
                if aliases is None or alias > self.alias_in_max:
                    self._protocol_error(MQTTError(RC_TOPIC_ALIAS_INVALID, f"topic alias {alias}"))
                    return None
                if topic:
                    aliases[alias] = topic
                else:
                    known = aliases.get(alias)
                    if known is None:
                        self._protocol_error(
                            MQTTError(RC_PROTOCOL_ERROR, f"unknown topic alias {alias}")
                        )
                        return None
                    topic = known
        qos = p.qos
        if qos == 2:
            pid = p.packet_id
            if pid in session.incoming_qos2:
                # A re-sent QoS 2 PUBLISH (DUP): already routed once; only acknowledge.
                self.send_durable(encode_pubrec(pid, self.level), self._barrier())
                return None
            if self.v5 and len(session.incoming_qos2) >= self.broker.cfg.receive_max_broker:
                self._protocol_error(MQTTError(RC_RECEIVE_MAX_EXCEEDED, "receive maximum exceeded"))
                return None
        self.broker.counters.publishes_received[qos] += 1
        if self.rate_limit:
            now = trio.current_time()
            if now >= self.rate_window:
                self.rate_window = now + 1.0
                self.rate_count = 0
            self.rate_count += 1
            if self.rate_count > self.rate_limit:
                return self._publish_throttled(p, topic)
        if self.held is not None and len(self.held) >= MAX_HELD:
            return self._publish_when_stored(p, topic)
        if self.broker.publish_hooked[self.v5]:
            return self._publish_checked(p, topic)
        self._accept_publish(p, topic, p.payload, qos, p.retain, props, self.mountpoint)
        return None

    async def _publish_when_stored(self, p: Publish, topic: str) -> None:
        """Too many acknowledgements wait for the disk: let it catch up before routing more."""
        store = self.broker.store
        held = self.held
        if store is not None and held:
            await store.wait_durable(held[-1][0])
        await self._publish_after_wait(p, topic)

    async def _publish_throttled(self, p: Publish, topic: str) -> None:
        """Over ``max_message_rate``: stop reading until the next one-second window."""
        await trio.sleep_until(self.rate_window)
        self.rate_window = trio.current_time() + 1.0
        self.rate_count = 1
        await self._publish_after_wait(p, topic)

    async def _publish_after_wait(self, p: Publish, topic: str) -> None:
        """A PUBLISH whose handling waited (throttle, disk): authorised by the chain as it is
        now (hooks may have changed meanwhile), then routed."""
        hook = "auth_on_publish_m5" if self.v5 else "auth_on_publish"
        if self.broker.hooks.implemented(hook):
            await self._publish_authorised(p, topic, hook)
        else:
            self._accept_publish(
                p, topic, p.payload, p.qos, p.retain, p.properties, self.mountpoint
            )

    def _publish_checked(self, p: Publish, topic: str) -> Any:
        """auth_on_publish(_m5) on the per-message path: when the chain answers at once (plain
        hookimpls) the PUBLISH is handled here without a coroutine; else an awaitable."""
        broker = self.broker
        v5 = self.v5
        if self.authz_chain is None:
            caller = broker.publish_auth[v5]
            props = broker.publish_props
        else:  # the listener's own chain
            callers = getattr(broker.hooks, "auth_caller", None)
            hook = "auth_on_publish_m5" if v5 else "auth_on_publish"
            if callers is None:
                return self._publish_authorised(p, topic, hook)
            caller = callers(hook, self.authz_chain)
            props = True
        if v5:
            result = caller(
                self.username, self.mountpoint, self.client_id, p.qos, topic, p.payload,
                p.retain, to_hook(p.properties) if props else None,
            )  # fmt: skip
        else:
            result = caller(
                self.username, self.mountpoint, self.client_id, p.qos, topic, p.payload, p.retain
            )
        if result is ALLOW:  # the common answer: nothing to apply
            if not self.closing:
                self._accept_publish(
                    p, topic, p.payload, p.qos, p.retain, p.properties, self.mountpoint
                )
            return None
        if result.__class__ is Outcome:
            return self._publish_decided(p, topic, result)
        return self._publish_awaited(p, topic, result)

    async def _publish_awaited(self, p: Publish, topic: str, result: Any) -> None:
        pending = self._publish_decided(p, topic, await result)
        if pending is not None:
            await pending

    async def _publish_authorised(self, p: Publish, topic: str, hook: str) -> None:
        v5 = self.v5
        args = hookargs.publish(self, topic, p.payload, p.qos, p.retain, p.properties, v5)
        pending = self._publish_decided(p, topic, await self._ask(hook, args, self.authz_chain))
        if pending is not None:
            await pending

    def _publish_decided(self, p: Publish, topic: str, outcome: Outcome) -> Any:
        """Act on the auth_on_publish outcome; returns the throttle's sleep, if any."""
        v5 = self.v5
        if self.closing:
            return None
        if not outcome.allowed:
            self._publish_denied(p, outcome)
            return None
        payload = p.payload
        qos = p.qos
        retain = p.retain
        props = p.properties
        mountpoint = self.mountpoint
        throttle = 0
        mods = outcome.modifiers
        if mods:
            topic = mods.get("topic", topic)
            payload = mods.get("payload", payload)
            qos = mods.get("qos", qos)
            retain = mods.get("retain", retain)
            mountpoint = mods.get("mountpoint", mountpoint)
            throttle = mods.get("throttle", 0)
            if v5 and "properties" in mods:
                props = from_hook(mods["properties"])
        self._accept_publish(p, topic, payload, qos, retain, props, mountpoint)
        if throttle:
            return _throttled(throttle)
        return None

    def _publish_denied(self, p: Publish, outcome: Outcome) -> None:
        """auth_on_publish said no: the outcome per protocol version (spec 2.4)."""
        self.broker.counters.publishes_denied += 1
        level = self.level
        pid = p.packet_id
        if self.v5:
            if p.qos == 0 or pid is None:
                return
            code = outcome.reason_code or RC_NOT_AUTHORIZED
            props = None
            if outcome.reason and self.problem_info:
                props = {"reason_string": outcome.reason}
            # (behind acknowledgements still held for the store: acks keep their order)
            if p.qos == 1:
                self.send_durable(encode_puback(pid, MQTT_5, code, props), 0)
            else:
                self.send_durable(encode_pubrec(pid, MQTT_5, code, props), 0)
            return
        if level == 4 and not self.bridge:
            log.info("publish_denied", client_id=self.client_id, topic=p.topic)
            self.close()
            return
        # MQTT 3.1 and bridges: pretend success, drop the message.
        if pid is not None:
            if p.qos == 1:
                self.send_durable(encode_puback(pid, level), 0)
            else:
                self.session.incoming_qos2_add(pid)  # type: ignore[union-attr]
                self.send_durable(encode_pubrec(pid, level), self._barrier())

    def _accept_publish(
        self,
        p: Publish,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        props: dict[str, Any] | None,
        mountpoint: str,
    ) -> None:
        """Route an authorised PUBLISH and acknowledge it."""
        session = self.session
        assert session is not None
        expires_at = None
        if props:
            if "message_expiry_interval" in props:
                props = dict(props)
                expires_at = self.broker.clock + props.pop("message_expiry_interval")
            props.pop("topic_alias", None)
        message = Message(topic, payload, qos, retain, props, expires_at, mountpoint, session)
        store = self.broker.store
        before = store.seq if store is not None else 0
        self.broker.publish(message, self)
        pid = p.packet_id
        if pid is not None and store is not None:
            # Acknowledged once stored for every persistent session it reached (the reader
            # does not wait: the ack is held until the store's commit).
            if p.qos == 2:
                session.incoming_qos2_add(pid)
            ack = bytes((0x40 if p.qos == 1 else 0x50, 2, pid >> 8, pid & 0xFF))
            self.send_durable(ack, store.commit_point(before))
        elif pid is not None:
            # PUBACK / PUBREC with success: the same 4 bytes in every protocol version.
            if p.qos == 1:
                self.out += bytes((0x40, 2, pid >> 8, pid & 0xFF))
                self.broker.counters.packets_sent[4] += 1
                self.broker.counters.bytes_sent_by_type[4] += 4
            else:
                session.incoming_qos2_add(pid)
                self.out += bytes((0x50, 2, pid >> 8, pid & 0xFF))
                self.broker.counters.packets_sent[5] += 1
                self.broker.counters.bytes_sent_by_type[5] += 4
            task = self._parked
            if task is not None:
                self._parked = None
                trio.lowlevel.reschedule(task)

    def _on_puback(self, p: Puback) -> None:
        session = self.session
        if session is not None and session.ack(p.packet_id, 1) is not None and session.queue:
            self.wake()

    def _on_pubrec(self, p: Pubrec) -> None:
        session = self.session
        if session is None:
            return
        pid = p.packet_id
        if p.reason_code >= 0x80:
            # v5: the receiver refused the message; the exchange ends here.
            session.drop_inflight(pid)
            if session.queue:
                self.wake()
            return
        store = self.broker.store
        before = store.seq if store is not None else 0
        if session.pubrec(pid, time.monotonic()) is None and self.v5:
            self.send_durable(encode_pubrel(pid, MQTT_5, RC_PACKET_ID_NOT_FOUND), 0)
            return
        # PUBREL only once the PUBREC'd state is durable (else a crash re-sends the PUBLISH).
        need = store.commit_point(before) if store is not None else 0
        self.send_durable(encode_pubrel(pid, self.level), need)

    def _on_pubrel(self, p: Pubrel) -> None:
        session = self.session
        if session is None:
            return
        pid = p.packet_id
        store = self.broker.store
        before = store.seq if store is not None else 0
        # PUBCOMP only once the release is durable: the client may then reuse the packet id.
        if session.incoming_qos2_remove(pid) or not self.v5:
            need = store.commit_point(before) if store is not None else 0
            self.send_durable(encode_pubcomp(pid, self.level), need)
        else:
            self.send_durable(encode_pubcomp(pid, MQTT_5, RC_PACKET_ID_NOT_FOUND), 0)

    def _on_pubcomp(self, p: Pubcomp) -> None:
        session = self.session
        if session is not None and session.ack(p.packet_id, 2) is not None and session.queue:
            self.wake()

    # ------------------------------------------------------------------------------ SUBSCRIBE

    def _on_subscribe(self, p: Subscribe) -> Any:
        v5 = self.v5
        cfg = self.broker.cfg
        sub_id = p.properties.get("subscription_identifier") if v5 else None
        # Validate each filter; a bad one gets its own SUBACK code (the rest proceed).
        codes: list[int | None] = []
        for s in p.subscriptions:
            try:
                validate_topic_filter(s.topic_filter)
                shared = split_shared(s.topic_filter)
            except MQTTError:
                codes.append(RC_TOPIC_FILTER_INVALID)
                continue
            if shared is not None and s.no_local and v5:
                self._protocol_error(
                    MQTTError(RC_PROTOCOL_ERROR, "no local on a shared subscription")
                )
                return None
            depth_filter = shared[1] if shared else s.topic_filter
            if cfg.topic_max_depth and depth_filter.count("/") >= cfg.topic_max_depth:
                codes.append(RC_TOPIC_FILTER_INVALID)
                continue
            codes.append(None)
        hook = "auth_on_subscribe_m5" if v5 else "auth_on_subscribe"
        if self.broker.hooks.implemented(hook):
            return self._subscribe_authorised(p, codes, sub_id, hook)
        entries = [
            (s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling)
            for s in p.subscriptions
        ]
        self._apply_subscribe(p, entries, codes, sub_id, None)
        return None

    async def _subscribe_authorised(
        self, p: Subscribe, codes: list[int | None], sub_id: int | None, hook: str
    ) -> None:
        v5 = self.v5
        requested = [
            (s.topic_filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling)
            for s, c in zip(p.subscriptions, codes, strict=True)
        ]
        valid = [i for i, c in enumerate(codes) if c is None]
        args = hookargs.subscribe(self, [requested[i] for i in valid], p.properties, v5)
        outcome = await self._ask(hook, args, self.authz_chain)
        if self.closing:
            return
        ack_props: dict[str, Any] | None = None
        entries: list[Any] = list(requested)
        if not outcome.allowed:
            deny = (
                outcome.reason_code if v5 and outcome.reason_code in SUBSCRIBE_DENY_CODES else None
            )
            code = deny or (RC_NOT_AUTHORIZED if v5 else RC_UNSPECIFIED)
            for i in valid:
                codes[i] = code
            if v5 and outcome.reason and self.problem_info:
                ack_props = {"reason_string": outcome.reason}
            self.broker.counters.subscribes_denied += 1
        else:
            rewritten = outcome.topics
            mods = outcome.modifiers or {}
            if rewritten is None and isinstance(mods.get("topics"), list):
                rewritten = mods["topics"]
            if rewritten is not None:
                for slot, entry in zip(valid, rewritten, strict=False):
                    topic, qos = entry[0], entry[1]
                    if not 0 <= qos <= 2:
                        codes[slot] = qos if v5 and qos >= 0x80 else RC_UNSPECIFIED
                        continue
                    old = requested[slot]
                    no_local, rap, rh = old[2], old[3], old[4]
                    if len(entry) > 2 and isinstance(entry[2], dict):
                        o = entry[2]
                        no_local = o.get("no_local", no_local)
                        rap = o.get("rap", rap)
                        rhv = o.get("retain_handling", rh)
                        rh = _RETAIN_HANDLING_NAMES.index(rhv) if isinstance(rhv, str) else rhv
                    entries[slot] = (topic, qos, no_local, rap, rh)
            extra = outcome.properties or mods.get("properties")
            if v5 and extra and self.problem_info:
                ack_props = from_hook(extra)
        self._apply_subscribe(p, entries, codes, sub_id, ack_props)

    def _apply_subscribe(
        self,
        p: Subscribe,
        entries: list[Any],
        codes: list[int | None],
        sub_id: int | None,
        ack_props: dict[str, Any] | None,
    ) -> None:
        session = self.session
        assert session is not None
        broker = self.broker
        cfg = broker.cfg
        final: list[int] = []
        retained_to_send: list[tuple[SubOptions, bool]] = []
        done: list[Any] = []
        for (topic_filter, qos, no_local, rap, rh), code in zip(entries, codes, strict=True):
            if code is not None:
                final.append(code)
                done.append((topic_filter, 0x80, no_local, rap, rh))
                continue
            try:
                shared = split_shared(topic_filter)
            except MQTTError:
                final.append(RC_TOPIC_FILTER_INVALID if self.v5 else RC_UNSPECIFIED)
                continue
            if (
                cfg.max_subscriptions_per_client
                and topic_filter not in session.subscriptions
                and len(session.subscriptions) >= cfg.max_subscriptions_per_client
            ):
                final.append(RC_QUOTA_EXCEEDED if self.v5 else RC_UNSPECIFIED)
                continue
            group, inner = shared if shared else (None, topic_filter)
            opts = SubOptions(
                inner,
                qos,
                no_local=no_local if self.v5 else False,
                rap=rap if self.v5 else False,
                retain_handling=rh if self.v5 else 0,
                sub_id=sub_id,
                group=group,
            )
            new = session.add_subscription(opts)
            final.append(qos)
            done.append((topic_filter, qos, no_local, rap, rh))
            # Retained messages (MQTT 5 retain handling; none for shared subscriptions).
            if group is None and (opts.retain_handling == 0 or (opts.retain_handling == 1 and new)):
                retained_to_send.append((opts, new))
        self.send_bytes(encode_suback(p.packet_id, final, self.level, ack_props))
        for opts, _new in retained_to_send:
            broker.send_retained(session, opts)
        hook = "on_subscribe_m5" if self.v5 else "on_subscribe"
        if broker.hooks.implemented(hook):
            broker.hooks.notify(hook, hookargs.subscribed(self, done, p.properties, self.v5))

    # ------------------------------------------------------------------------------ UNSUBSCRIBE

    def _on_unsubscribe(self, p: Unsubscribe) -> Any:
        hook = "on_unsubscribe_m5" if self.v5 else "on_unsubscribe"
        if self.broker.hooks.implemented(hook):
            return self._unsubscribe_hooked(p, hook)
        self._apply_unsubscribe(p, p.topic_filters, None)
        return None

    async def _unsubscribe_hooked(self, p: Unsubscribe, hook: str) -> None:
        args = hookargs.unsubscribe(self, list(p.topic_filters), p.properties, self.v5)
        outcome = await self.broker.hooks.auth(hook, args)
        if self.closing:
            return
        filters = list(p.topic_filters)
        ack_props = None
        if outcome.allowed and not outcome.unchanged:
            rewritten = outcome.topics
            mods = outcome.modifiers or {}
            if rewritten is None and isinstance(mods.get("topics"), list):
                rewritten = mods["topics"]
            if rewritten is not None:
                filters = [str(t) for t in rewritten]
            extra = outcome.properties or mods.get("properties")
            if self.v5 and extra and self.problem_info:
                ack_props = from_hook(extra)
        self._apply_unsubscribe(p, filters, ack_props)

    def _apply_unsubscribe(
        self, p: Unsubscribe, filters: list[str], ack_props: dict[str, Any] | None
    ) -> None:
        session = self.session
        assert session is not None
        codes = []
        removed = []
        for f in filters:
            if session.remove_subscription(f):
                codes.append(RC_SUCCESS)
                removed.append(f)
            else:
                codes.append(RC_NO_SUBSCRIPTION_EXISTED)
        if len(codes) != len(p.topic_filters):
            # A rewrite changed the count: keep UNSUBACK one-to-one with the request.
            codes = (codes + [RC_SUCCESS] * len(p.topic_filters))[: len(p.topic_filters)]
        self.send_bytes(encode_unsuback(p.packet_id, codes, self.level, ack_props))
        hooks = self.broker.hooks
        if removed and hooks.implemented("on_topic_unsubscribed"):
            hooks.notify(
                "on_topic_unsubscribed",
                {"mountpoint": self.mountpoint, "client_id": self.client_id, "topics": removed},
            )

    # ------------------------------------------------------------------------- DISCONNECT / AUTH

    def _on_disconnect(self, p: Disconnect) -> None:
        session = self.session
        if self.v5 and session is not None:
            interval = p.properties.get("session_expiry_interval")
            if interval is not None:
                if session.expiry_interval == 0 and interval != 0:
                    self._protocol_error(
                        MQTTError(RC_PROTOCOL_ERROR, "session expiry changed from 0 at DISCONNECT")
                    )
                    return
                session.set_expiry(None if interval == NEVER_EXPIRES else float(interval))
        self.end_kind = _NORMAL if p.reason_code == RC_SUCCESS else _WITH_WILL
        log.info("client_disconnected", client_id=self.client_id, reason_code=p.reason_code)
        self.closing = True
        self._read_scope.cancel()
        self.wake()

    def _on_auth(self, p: Auth) -> Any:
        """Re-authentication of a connected MQTT 5 client (MQTT 5 4.12.1)."""
        method = p.properties.get("authentication_method")
        if not self.v5 or self.auth_method is None or method != self.auth_method:
            self._protocol_error(MQTTError(RC_PROTOCOL_ERROR, "unexpected AUTH"))
            return None
        if p.reason_code not in (RC_REAUTH, RC_CONTINUE_AUTH):
            self._protocol_error(MQTTError(RC_PROTOCOL_ERROR, "bad AUTH reason code"))
            return None
        return self._reauth(method, p.properties.get("authentication_data"))

    async def _reauth(self, method: str, data: bytes | None) -> None:
        outcome = await self._ask("on_auth_m5", hookargs.auth(self, method, data), self.auth_chain)
        if self.closing:
            return
        if not outcome.allowed:
            self.close(outcome.reason_code or RC_NOT_AUTHORIZED, outcome.reason)
            return
        code, props = _auth_result(outcome, method)
        self.send_bytes(encode_auth(code, props))


class _ClientGone(Exception):
    """The client closed its socket while its CONNECT was being authenticated."""


# ---------------------------------------------------------------------------------- helpers


def _peer_of(stream: trio.abc.Stream) -> tuple[str, int]:
    sock = getattr(stream, "socket", None)
    if sock is None:
        inner = getattr(stream, "transport_stream", None)
        sock = getattr(inner, "socket", None)
    try:
        name = sock.getpeername() if sock is not None else None
    except OSError:
        name = None
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return "local", 0


def _auth_result(outcome: Outcome, method: str) -> tuple[int, dict[str, Any]]:
    """(reason code, AUTH/CONNACK properties) from an allowed on_auth_m5 outcome."""
    mods = outcome.modifiers or {}
    code = mods.get("reason_code", RC_SUCCESS)
    if code in ("success", None):
        code = RC_SUCCESS
    elif code == "continue_authentication":
        code = RC_CONTINUE_AUTH
    props = from_hook(mods.get("properties") or {})
    props["authentication_method"] = method
    return int(code), {
        k: v for k, v in props.items() if k in ("authentication_method", "authentication_data")
    }


def _apply_session_modifiers(session: Session, conn: Connection, mods: dict[str, Any]) -> None:
    """auth_on_register modifiers that tune the session (python-forms.md)."""
    if not mods:
        return
    if "max_inflight_messages" in mods:
        value = int(mods["max_inflight_messages"])
        session.max_inflight = value
        conn.window = value if not conn.v5 else (min(value, conn.window) if value else conn.window)
    if "retry_interval" in mods:
        session.retry_interval = int(mods["retry_interval"]) / 1000
    if "upgrade_qos" in mods:
        session.upgrade_qos = bool(mods["upgrade_qos"])
    if "max_offline_messages" in mods:
        session.max_offline = int(mods["max_offline_messages"])
    if "max_online_messages" in mods:
        session.max_online = int(mods["max_online_messages"])
    if "max_message_rate" in mods:
        conn.rate_limit = int(mods["max_message_rate"])


def _modified_publish(message: Message, mods: dict[str, Any], v5: bool) -> Message:
    changes: dict[str, Any] = {}
    for key in ("topic", "payload", "qos", "retain", "mountpoint"):
        if key in mods:
            changes[key] = mods[key]
    if v5 and "properties" in mods:
        props = from_hook(mods["properties"])
        if "message_expiry_interval" in props:
            changes["expires_at"] = float(props.pop("message_expiry_interval"))
        changes["properties"] = props or None
    return message.copy(**changes) if changes else message


def _modified_delivery(message: Message, mods: dict[str, Any], v5: bool) -> Message:
    changes: dict[str, Any] = {}
    if "topic" in mods:
        changes["topic"] = mods["topic"]
    if "payload" in mods:
        changes["payload"] = mods["payload"]
    if v5 and "properties" in mods:
        changes["properties"] = from_hook(mods["properties"]) or None
    if not changes:
        return message
    new = message.copy(**changes)
    return new


async def _throttled(milliseconds: int) -> None:
    """auth_on_publish's ``throttle`` modifier: stop reading for that long."""
    await trio.sleep(milliseconds / 1000)
