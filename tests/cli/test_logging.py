"""``configure_logging``: JSON or console lines, contextvars, stdlib routing, idempotence."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
import structlog

from plugin_host.logging import configure_logging, resolve_format


def _json_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_context_timestamp_and_level() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    log = structlog.get_logger("plugin_host.test")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(client_id="c1", peer="127.0.0.1:5000")
    try:
        log.info("client_connected", clean_start=True)
    finally:
        structlog.contextvars.clear_contextvars()
    log.info("after", n=1)
    first, second = _json_lines(out)
    assert first["event"] == "client_connected"
    assert first["client_id"] == "c1" and first["peer"] == "127.0.0.1:5000"
    assert first["clean_start"] is True
    assert first["level"] == "info"
    assert first["timestamp"].endswith("Z")
    assert "client_id" not in second


def test_level_filtering() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", out)
    log = structlog.get_logger("plugin_host.test")
    log.debug("hidden")
    log.info("hidden")
    log.warning("shown")
    log.error("shown too")
    assert [e["event"] for e in _json_lines(out)] == ["shown", "shown too"]


def test_stdlib_logging_goes_to_the_same_output() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    structlog.contextvars.bind_contextvars(client_id="c2")
    try:
        logging.getLogger("some.library").warning("disk %s", "full")
    finally:
        structlog.contextvars.clear_contextvars()
    logging.getLogger("some.library").debug("not at info")
    (event,) = _json_lines(out)
    assert event["event"] == "disk full"
    assert event["logger"] == "some.library"
    assert event["level"] == "warning"
    assert event["client_id"] == "c2"
    assert "timestamp" in event


def test_http_client_request_lines_are_debug_detail() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    logging.getLogger("httpx2").info("HTTP Request: POST http://x 200 OK")
    assert out.getvalue() == ""
    configure_logging("debug", "json", out)
    logging.getLogger("httpx2").info("HTTP Request: POST http://x 200 OK")
    assert [e["logger"] for e in _json_lines(out)] == ["httpx2"]


def test_exceptions_are_rendered_in_json() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("t").exception("plugin_failed", plugin="p")
    (event,) = _json_lines(out)
    assert event["plugin"] == "p"
    assert "ValueError: boom" in event["exception"]


def test_configuring_twice_does_not_duplicate_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "json", first)
    configure_logging("info", "json", second)
    structlog.get_logger("t").info("once")
    logging.getLogger("lib").warning("once too")
    assert first.getvalue() == ""
    assert [e["event"] for e in _json_lines(second)] == ["once", "once too"]


def test_console_format() -> None:
    out = io.StringIO()
    configure_logging("info", "console", out)
    structlog.get_logger("t").info("client_connected", client_id="c3")
    text = out.getvalue()
    assert "client_connected" in text and "client_id=c3" in text
    assert not text.lstrip().startswith("{")
    assert "\x1b[" not in text  # no colours when the stream is not a terminal


def test_auto_picks_console_on_a_terminal_and_json_otherwise() -> None:
    assert resolve_format("auto", io.StringIO()) == "json"
    leader, follower = os.openpty()
    try:
        with open(follower, "w", encoding="utf-8", closefd=False) as tty:
            assert resolve_format("auto", tty) == "console"
            configure_logging("info", "auto", tty)
            structlog.get_logger("t").info("on_a_tty")
            tty.flush()
            data = os.read(leader, 65536).decode()
        assert "on_a_tty" in data and not data.lstrip().startswith("{")
    finally:
        os.close(leader)
        os.close(follower)


def test_bad_level_or_format() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        configure_logging("loud")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("info", "xml")
