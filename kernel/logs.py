"""Structured logs (structlog): JSON lines when stderr is not a terminal, readable when it is.
Every call log carries the call id, method, principal, provider and outcome."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "auto", stream=None, to_stdlib: bool = False) -> None:
    """Configure structlog. With `to_stdlib`, rendered lines go to the standard `logging` module
    instead of a stream (a host such as pytest then captures them per test)."""
    stream = stream or sys.stderr
    json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json else structlog.processors.format_exc_info,
            renderer,
        ],
        # filtering at the bound-logger level makes a disabled debug call nearly free
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory() if to_stdlib else structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
