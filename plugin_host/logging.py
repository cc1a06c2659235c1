"""Logging setup: structlog for our own events, with stdlib ``logging`` routed to the same output.

Every module logs with ``log = structlog.get_logger(__name__)`` and synchronous calls such as
``log.info("client_connected", client_id=..., peer=...)``. The broker binds per-connection
context with ``structlog.contextvars.bind_contextvars(client_id=..., peer=...)``; it is merged
into every event logged from that task.

Output is one line per event on ``stream`` (stderr by default): a coloured console rendering when
``stream`` is a terminal, JSON otherwise (``fmt="auto"``), or as forced by ``fmt``. Third-party
libraries that use the standard :mod:`logging` module (httpx2, trio-websocket, ...) are rendered
the same way, with their logger name in ``logger``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import Processor

LogFormat = Literal["auto", "console", "json"]

#: Accepted level names (case-insensitive); ``warn`` is an alias of ``warning``.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# HTTP client libraries log every request at INFO; that is debug detail for a broker whose
# webhooks may make thousands of requests per second.
_CHATTY_LIBRARIES = ("httpx2", "httpcore2", "httpx", "httpcore")


class _OurHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the root handler installed here, so reconfiguring replaces it (idempotence)."""


def resolve_format(fmt: str, stream: TextIO) -> Literal["console", "json"]:
    """``auto`` -> ``console`` on a terminal, ``json`` otherwise."""
    if fmt == "console":
        return "console"
    if fmt == "json":
        return "json"
    if fmt != "auto":
        raise ValueError(f"unknown log format {fmt!r} (expected auto, console or json)")
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or file-like without isatty
        tty = False
    return "console" if tty else "json"


def configure_logging(
    level: str = "info",
    fmt: LogFormat | str = "auto",
    stream: TextIO | None = None,
    *,
    cache_loggers: bool = False,
) -> None:
    """Configure structlog and the stdlib root logger to write to ``stream``.

    Safe to call again (tests do): the previous configuration is replaced, not stacked.
    ``cache_loggers=True`` lets structlog cache each module's logger on first use, which is
    faster but freezes that configuration; ``plugin-host serve`` uses it, tests should not.
    Raises :class:`ValueError` for an unknown level or format.
    """
    levelno = LEVELS.get(level.lower())
    if levelno is None:
        raise ValueError(f"unknown log level {level!r} (expected one of {', '.join(LEVELS)})")
    out: TextIO = stream if stream is not None else sys.stderr
    rendering = resolve_format(fmt, out)

    renderer: Processor
    if rendering == "console":
        colors = resolve_format("auto", out) == "console"
        renderer = structlog.dev.ConsoleRenderer(colors=colors)
        exc_processors: list[Processor] = []  # ConsoleRenderer formats exc_info itself
    else:
        renderer = structlog.processors.JSONRenderer()
        exc_processors = [structlog.processors.format_exc_info]

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    common: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
        structlog.processors.StackInfoRenderer(),
    ]

    structlog.reset_defaults()
    structlog.configure(
        processors=[*common, *exc_processors, renderer],
        # Filtering at the bound-logger level makes disabled calls (debug on hot paths) a no-op.
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        context_class=dict,
        cache_logger_on_first_use=cache_loggers,
    )

    # stdlib logging -> the same stream and rendering.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            timestamper,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exc_processors,
            renderer,
        ],
    )
    handler = _OurHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _OurHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(levelno)
    quiet = logging.DEBUG if levelno <= logging.DEBUG else logging.WARNING
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
