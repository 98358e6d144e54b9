"""Structured logging: one structlog configuration for the whole process.

This module owns how log lines look (one JSON object per line, or a readable
console line), where they go, and the level filter.  Every line is flushed as
it is written, so a supervisor or a test reading our stdout sees the start-up
line at once.

Loggers from `get_logger` may be created at import time: each one assembles
its structlog logger on first use and again after every `configure_logging`
call, so it always follows the latest configuration.  Filtered-out levels cost
an attribute lookup and one no-op method call.  A logger made with `.bind()`
keeps the level and renderer in force when it was made; its output stream
still follows reconfiguration.
"""

from __future__ import annotations

import atexit
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO, cast

import orjson
import structlog

__all__ = ["LEVELS", "configure_logging", "flush_logs", "get_logger", "info_writer"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _Sink:
    """The file every logger writes to; forwards to the configured stream.

    Cached loggers hold this object, not the stream, so reconfiguring (as tests
    do) never leaves a logger writing to a stream that has since been closed.
    `None` means whatever `sys.stdout` is at the time of the write.
    structlog's PrintLogger writes each line and calls `flush`, which writes
    the batch out when it is due.
    """

    def __init__(self) -> None:
        self.stream: TextIO | None = None
        self._pending: list[str] = []
        self._size = 0
        self._last = 0.0

    def write(self, text: str) -> int:
        # Lines are gathered and written a batch at a time: one write per
        # line costs a system call each, which at a thousand calls a second
        # is more than the calls themselves.
        self._pending.append(text)
        self._size += len(text)
        return len(text)

    def flush(self) -> None:
        """Called by structlog after each line: writes out at most every
        FLUSH_INTERVAL seconds or BUFFER_MAX characters."""
        now = time.monotonic()
        if self._size >= BUFFER_MAX or now - self._last >= FLUSH_INTERVAL:
            self.flush_now(now)

    def flush_now(self, now: float | None = None) -> None:
        # A line after a quiet spell goes out at once; only bursts are batched.
        if self._pending:
            self._last = time.monotonic() if now is None else now
            text = "".join(self._pending)
            self._pending.clear()
            self._size = 0
            out = sys.stdout if self.stream is None else self.stream
            try:
                out.write(text)
                out.flush()
            except (ValueError, OSError):
                pass  # a stream closed under us (a test's, or a gone pipe): nothing to do


FLUSH_INTERVAL = 0.2  # seconds a line may wait in the buffer while lines keep coming
BUFFER_MAX = 64 * 1024


_SINK = _Sink()
atexit.register(_SINK.flush_now)
_generation = 0


class _NamedLogger:
    """A lazy logger bound to `logger=name`, rebuilt after each reconfiguration."""

    __slots__ = ("_bound", "_generation", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._bound: Any = None
        self._generation = -1

    def __getattr__(self, attr: str) -> Any:
        if self._generation != _generation:
            self._bound = structlog.get_logger().bind(logger=self._name)
            self._generation = _generation
        return getattr(self._bound, attr)

    def __repr__(self) -> str:
        return f"<logger {self._name}>"


class _IsoClock:
    """The `timestamp` of a line: ISO 8601 in UTC with microseconds, as
    structlog's TimeStamper(fmt="iso", utc=True) writes it, at a fraction of
    its cost (the date and time are formatted once a second). Every call
    record is a line, so this runs twice per call."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1e6):06d}Z"
        return event


_timestamp = _IsoClock()
_fast_json = False  # JSON lines at level info or below: info_writer may skip structlog


def _fallback(obj: Any) -> Any:
    """What JSON cannot hold is written as structlog writes it: its repr."""
    structlog_form = getattr(obj, "__structlog__", None)
    return structlog_form() if structlog_form is not None else repr(obj)


_DUMPS_OPTIONS = orjson.OPT_NON_STR_KEYS  # tallies keyed by enums and numbers


def _dumps(obj: Any, **_kw: Any) -> str:
    """One JSON line with orjson (structlog's documented fast serializer):
    a few times cheaper than json.dumps for the same object; compact, UTF-8."""
    return orjson.dumps(obj, default=_fallback, option=_DUMPS_OPTIONS).decode()


def info_writer(name: str) -> Callable[[str, dict[str, Any]], None]:
    """`get_logger(name).info(event, **fields)` for lines written per call
    (call records): with JSON output the same line, key for key, is made
    with one orjson.dumps instead of structlog's bound logger and processor
    chain, about a third of the cost; otherwise structlog writes it."""
    logger = get_logger(name)

    def write(event: str, fields: dict[str, Any]) -> None:
        if not _fast_json:
            logger.info(event, **fields)
            return
        line: dict[str, Any] = {"logger": name, **fields, "event": event, "level": "info"}
        _timestamp(None, "info", line)
        _SINK.write(_dumps(line) + "\n")
        _SINK.flush()

    return write


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """(Re)configure logging; `stream` defaults to the process's stdout."""
    try:
        level_int = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; one of {', '.join(LEVELS)}") from None
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    elif fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    else:
        raise ValueError(f"unknown log format {fmt!r}; 'json' or 'console'")
    processors: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        _timestamp,
    ]
    if fmt == "json":
        # The console renderer formats exceptions itself.
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    global _generation, _fast_json
    _generation += 1
    _fast_json = fmt == "json" and level_int <= logging.INFO
    _SINK.flush_now()
    _SINK.stream = stream
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_int),
        context_class=dict,
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _SINK)),
        cache_logger_on_first_use=True,
    )


def flush_logs() -> None:
    """Write out buffered lines now (start-up, shutdown, and a periodic timer)."""
    _SINK.flush_now()


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger carrying `logger=name` on every line; safe to create at import time."""
    return cast(structlog.typing.FilteringBoundLogger, _NamedLogger(name))
