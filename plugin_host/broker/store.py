"""What a durable store observes: every change of session, queue, inflight and retained state.

The broker keeps its state in memory. A store (the SQLite store of a later issue) is attached
as ``broker.store`` and is told about each change, synchronously, from the one method that
makes it (:class:`~plugin_host.broker.session.Session` methods, the retained store). With no
store attached each call site costs one attribute check.

Rules for an implementation: methods are called on the event loop in the order the changes
happen and must not block (buffer and write in a task of your own); objects passed in are the
live ones (copy what you keep). On start-up, a store rebuilds sessions before listeners open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
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
