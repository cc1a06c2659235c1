"""Argument dicts for every hook the broker calls (names and types of python-forms.md).

The broker builds these only after ``hooks.implemented(name)`` said someone listens, so none
of this runs for a hook nobody implements.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from plugin_host.broker.props import to_hook

if TYPE_CHECKING:
    from plugin_host.broker.connection import Connection
    from plugin_host.broker.message import Message
    from plugin_host.broker.session import Session
    from plugin_host.mqtt import Connect

RETAIN_HANDLING = ("send_retain", "send_if_new_sub", "dont_send")


LISTENER_TYPES = {"tcp": "mqtt", "ssl": "mqtts", "ws": "mqttws", "wss": "mqttwss"}


def _listener_meta(conn: Connection) -> dict[str, Any]:
    lcfg = conn.listener.config
    if not lcfg.forward_connection_opts:
        return {
            "listener_addr": None,
            "listener_port": None,
            "listener_type": None,
            "client_cert": None,
        }
    host, port = conn.listener.address
    info = conn.info
    cert = info.client_cert if info is not None else None
    return {
        "listener_addr": host,
        "listener_port": port,
        "listener_type": LISTENER_TYPES.get(lcfg.kind, "mqtt"),
        "client_cert": cert,
    }


def register(conn: Connection, pkt: Connect, client_id: str, v5: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "peer_addr": conn.peer_addr,
        "peer_port": conn.peer_port,
        "mountpoint": conn.mountpoint,
        "client_id": client_id,
        "username": pkt.username,
        "password": pkt.password,
    }
    if v5:
        args["clean_start"] = pkt.clean_start
        args["properties"] = to_hook(pkt.properties)
    else:
        args["clean_session"] = pkt.clean_start
    args.update(_listener_meta(conn))
    return args


def registered(conn: Connection, connack_props: dict[str, Any], v5: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "peer_addr": conn.peer_addr,
        "peer_port": conn.peer_port,
        "mountpoint": conn.mountpoint,
        "client_id": conn.client_id,
        "username": conn.username,
    }
    if v5:
        args["properties"] = to_hook(connack_props)
    return args


def auth(conn: Connection, method: str, data: bytes | None) -> dict[str, Any]:
    props: dict[str, Any] = {"p_authentication_method": method}
    if data is not None:
        props["p_authentication_data"] = data
    return {
        "username": conn.username,
        "mountpoint": conn.mountpoint,
        "client_id": conn.client_id,
        "properties": props,
    }


def publish(
    conn: Connection,
    topic: str,
    payload: bytes,
    qos: int,
    retain: bool,
    props: dict[str, Any] | None,
    v5: bool,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "username": conn.username,
        "mountpoint": conn.mountpoint,
        "client_id": conn.client_id,
        "qos": qos,
        "topic": topic,
        "payload": payload,
        "retain": retain,
    }
    if v5:
        args["properties"] = to_hook(props)
    return args


def published(
    message: Message, username: str | None, client_id: str, v5: bool, now: float
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "username": username,
        "mountpoint": message.mountpoint,
        "client_id": client_id,
        "qos": message.qos,
        "topic": message.topic,
        "payload": message.payload,
        "retain": message.retain,
    }
    if v5:
        args["properties"] = to_hook(message.out_properties(now))
    return args


def deliver(conn: Connection, message: Message, qos: int, retain: bool, v5: bool) -> dict[str, Any]:

    args: dict[str, Any] = {
        "username": conn.username,
        "mountpoint": conn.mountpoint,
        "client_id": conn.client_id,
        "qos": qos,
        "topic": message.topic,
        "payload": message.payload,
        "retain": retain,
    }
    if v5:
        args["properties"] = to_hook(message.out_properties(time.monotonic()))  # exact expiry
    return args


def topic_entry(entry: Any, v5: bool) -> Any:
    """One subscribe ``topics`` entry in the hook form (``(filter, qos[, options])``)."""
    topic, qos, no_local, rap, rh = entry
    if not v5:
        return (topic, qos)
    return (
        topic,
        qos,
        {"no_local": bool(no_local), "rap": bool(rap), "retain_handling": RETAIN_HANDLING[rh]},
    )


def subscribe(
    conn: Connection, entries: list[Any], props: dict[str, Any], v5: bool
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "username": conn.username,
        "mountpoint": conn.mountpoint,
        "client_id": conn.client_id,
        "topics": [topic_entry(e, v5) for e in entries],
    }
    if v5:
        args["properties"] = to_hook(props)
    return args


subscribed = subscribe


def unsubscribe(
    conn: Connection, filters: list[str], props: dict[str, Any], v5: bool
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "username": conn.username,
        "mountpoint": conn.mountpoint,
        "client_id": conn.client_id,
        "topics": filters,
    }
    if v5:
        args["properties"] = to_hook(props)
    return args


def sid(session: Session) -> dict[str, Any]:
    return {"mountpoint": session.mountpoint, "client_id": session.client_id}


def offline_message(session: Session, message: Message, qos: int) -> dict[str, Any]:
    return {
        "mountpoint": session.mountpoint,
        "client_id": session.client_id,
        "qos": qos,
        "topic": message.topic,
        "payload": message.payload,
        "retain": message.retain,
    }


def message_drop(session: Session | None, message: Message, reason: str) -> dict[str, Any]:
    return {
        "mountpoint": session.mountpoint if session else message.mountpoint,
        "client_id": session.client_id if session else "",
        "topic": message.topic,
        "qos": message.qos,
        "payload": message.payload,
        "properties": to_hook(message.properties),
        "reason": reason,
    }
