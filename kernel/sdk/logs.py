"""Structured logs (structlog): JSON lines when stderr is not a terminal, readable when it is.
Every call log carries the call id, method, principal, provider and outcome."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# who else hears the log events of the work in this context (a bridge forwarding a call's logs to
# its client); contextvars follow the call into every task it starts
_taps: ContextVar[tuple[Callable[[dict[str, Any]], None], ...]] = ContextVar("cortex_log_taps", default=())


@contextmanager
def log_tap(receive: Callable[[dict[str, Any]], None]) -> Iterator[None]:
    """Hand `receive` a copy of every log event (level, event, fields; no traceback) that the
    work done in this context logs, at the kernel's log level, while the block runs. `receive`
    runs inside the logging call: keep it quick (put the event on a queue) and never raise."""
    token = _taps.set((*_taps.get(), receive))
    try:
        yield
    finally:
        _taps.reset(token)


def _tap(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    taps = _taps.get()
    if taps:
        copy = {k: v for k, v in event_dict.items() if k not in ("exc_info", "stack_info")}
        for receive in taps:
            receive(copy)
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None, to_stdlib: bool = False) -> None:
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
            _tap,
            structlog.processors.dict_tracebacks if json else structlog.processors.format_exc_info,
            renderer,
        ],
        # filtering at the bound-logger level makes a disabled debug call nearly free
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.stdlib.LoggerFactory() if to_stdlib else structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
