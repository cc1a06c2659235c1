"""What a durable store observes: every change of session, queue, inflight and retained state.

The broker keeps its state in memory. A store (the SQLite store of a later issue) is attached
as ``broker.store`` and is told about each change, synchronously, from the one method that
makes it (:class:`~plugin_host.broker.session.Session` methods, the retained store). With no
store attached each call site costs one attribute check.

Rules for an implementation: methods are called on the event loop in the order the changes
happen and must not block (buffer and write in a task of your own); objects passed in are the
live ones (copy what you keep). On start-up, a store rebuilds sessions before listeners open.

Durability: a store numbers the changes it must make durable (``seq``) and says which are
(``durable``). A connection holds the packets that reveal a change (PUBACK/PUBREC of a PUBLISH
that reached a persistent session, PUBREL, PUBCOMP, a QoS 2 PUBLISH) until ``durable`` covers
the number :meth:`SessionStore.commit_point` gave it, and the store releases them after each
commit (``hold`` / ``Connection.release_held``). An observer that only watches (tests,
metrics) derives from :class:`StoreObserver`: nothing ever waits for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from plugin_host.broker.connection import Connection
    from plugin_host.broker.message import Message
    from plugin_host.broker.session import Inflight, Queued, Session
    from plugin_host.broker.trie import SubOptions


class SessionStore(Protocol):
    """Observer of broker state changes (see the module docstring)."""

    def session_saved(self, session: Session) -> None:
        """A session was created, or its expiry / owner data changed."""

    def session_deleted(self, session: Session) -> None:
        """A session ended (clean start, expiry, non-persistent disconnect, admin clean-up)."""

    def subscription_added(self, session: Session, opts: SubOptions) -> None:
        """A subscription was added or replaced (``opts.full_filter`` is the key)."""

    def subscription_removed(self, session: Session, full_filter: str) -> None:
        """A subscription was removed."""

    def message_queued(self, session: Session, entry: Queued) -> None:
        """A delivery was appended to the session's queue."""

    def message_unqueued(self, session: Session, entry: Queued, reason: str) -> None:
        """The oldest queued delivery left the queue: ``"sent"`` or a drop reason."""

    def inflight_added(self, session: Session, packet_id: int, entry: Inflight) -> None:
        """A QoS 1/2 message was sent and awaits its acknowledgement."""

    def inflight_changed(self, session: Session, packet_id: int, entry: Inflight) -> None:
        """A QoS 2 message got its PUBREC (PUBREL is now what is re-sent)."""

    def inflight_removed(self, session: Session, packet_id: int) -> None:
        """An in-flight message was acknowledged (or refused by the client)."""

    def incoming_qos2_changed(self, session: Session, packet_id: int, present: bool) -> None:
        """An incoming QoS 2 packet id was recorded (True) or released by PUBREL (False)."""

    def retained_changed(self, mountpoint: str, topic: str, message: Message | None) -> None:
        """The retained message of a topic was set (or cleared: ``None``)."""

    # -- durability -----------------------------------------------------------------------------

    #: Number of the last change observed.
    seq: int
    #: Number of the last change known to be durable.
    durable: int

    def commit_point(self, before: int) -> int:
        """The change number to wait for after changes made since ``seq`` was ``before``
        (0: nothing to wait for)."""
        ...

    def barrier(self) -> int:
        """A change number covering every change so far (0: nothing to wait for)."""
        ...

    def hold(self, conn: Connection) -> None:
        """``conn`` holds packets: call ``conn.release_held(durable)`` after each commit."""

    async def wait_durable(self, seq: int) -> None:
        """Return once change ``seq`` is durable."""


class StoreObserver:
    """A :class:`SessionStore` that only watches: no-op events, and nothing ever waits for it.

    Subclass it and override the events of interest.
    """

    seq = 0
    durable = 0

    def session_saved(self, session: Session) -> None:
        pass

    def session_deleted(self, session: Session) -> None:
        pass

    def subscription_added(self, session: Session, opts: SubOptions) -> None:
        pass

    def subscription_removed(self, session: Session, full_filter: str) -> None:
        pass

    def message_queued(self, session: Session, entry: Queued) -> None:
        pass

    def message_unqueued(self, session: Session, entry: Queued, reason: str) -> None:
        pass

    def inflight_added(self, session: Session, packet_id: int, entry: Inflight) -> None:
        pass

    def inflight_changed(self, session: Session, packet_id: int, entry: Inflight) -> None:
        pass

    def inflight_removed(self, session: Session, packet_id: int) -> None:
        pass

    def incoming_qos2_changed(self, session: Session, packet_id: int, present: bool) -> None:
        pass

    def retained_changed(self, mountpoint: str, topic: str, message: Message | None) -> None:
        pass

    def commit_point(self, before: int) -> int:
        return 0

    def barrier(self) -> int:
        return 0

    def hold(self, conn: Connection) -> None:
        pass

    async def wait_durable(self, seq: int) -> None:
        pass
