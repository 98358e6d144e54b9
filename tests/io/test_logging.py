"""Log output (sbc.io.logsetup, configured from the logging section): JSON
and console lines, reconfiguration, and flushing before exit."""

from __future__ import annotations

import io
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from sbc.io.logsetup import configure_logging, flush_logs, get_logger

from ..config.support import ROOT


@pytest.fixture
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def written(stream: io.StringIO) -> str:
    """What the logger wrote to `stream`, its buffer flushed first."""
    flush_logs()
    return stream.getvalue()


def test_json_log_lines(reset_structlog: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    log = get_logger("sbc.test")
    log.info("started", public="127.0.0.1:5060")
    log.debug("filtered out")
    log.warning("odd", count=3)
    lines = written(out).splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"event", "level", "timestamp", "logger"} <= record.keys()
        assert record["logger"] == "sbc.test"
        assert record["timestamp"].endswith("Z")
    assert records[0]["event"] == "started"
    assert records[0]["level"] == "info"
    assert records[0]["public"] == "127.0.0.1:5060"
    assert records[1]["level"] == "warning"
    assert records[1]["count"] == 3


def test_json_exception_is_one_line(reset_structlog: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("sbc.test").exception("failed")
    (line,) = written(out).splitlines()
    record = json.loads(line)
    assert record["level"] == "error"
    assert "RuntimeError: boom" in record["exception"]


def test_reconfigure_switches_stream_format_and_level(reset_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    get_logger("a").info("one")
    configure_logging("console", "debug", stream=second)
    get_logger("b").debug("two", k="v")
    assert json.loads(written(first))["event"] == "one"
    text = written(second)
    assert text.count("\n") == 1
    assert "two" in text and "k=v" in text and "debug" in text
    with pytest.raises(ValueError):
        json.loads(text)


def test_logger_created_before_configuration(reset_structlog: None) -> None:
    log = get_logger("early")  # as a module-level logger would be
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    log.info("hidden")
    log.error("shown")
    assert [json.loads(line)["event"] for line in written(out).splitlines()] == ["shown"]


def test_used_logger_follows_reconfiguration(reset_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger("cached")
    configure_logging("json", "info", stream=first)
    log.info("one")
    log.debug("hidden")
    first.close()  # as a test's stream is, once the test is over
    configure_logging("console", "debug", stream=second)
    log.debug("two")
    text = written(second)
    assert text.count("\n") == 1 and "two" in text and "[cached]" in text


def test_bound_child_logger_follows_stream(reset_structlog: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("json", "info", stream=first)
    child = get_logger("conn").bind(peer="192.0.2.1:5060")
    child.info("one")
    first.close()
    configure_logging("json", "info", stream=second)
    child.info("two")
    record = json.loads(written(second))
    assert (record["event"], record["peer"], record["logger"]) == ("two", "192.0.2.1:5060", "conn")


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "loud")])
def test_configure_logging_rejects_unknown(fmt: str, level: str) -> None:
    with pytest.raises(ValueError):
        configure_logging(fmt, level, stream=io.StringIO())


def test_log_line_is_flushed_before_exit() -> None:
    # The child logs one line, then waits on stdin: the line must reach the
    # pipe while the process is still alive (a block-buffered stdout would
    # hold it until exit).
    script = (
        "import sys\n"
        "from sbc.io.logsetup import configure_logging, get_logger\n"
        "configure_logging('json', 'info')\n"
        "get_logger('child').info('ready', port=5060)\n"
        "sys.stdin.read()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONUNBUFFERED", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "no log line within 20 s"
        line = proc.stdout.readline()
        assert proc.poll() is None
        record = json.loads(line)
        assert record["event"] == "ready"
        assert record["port"] == 5060
    finally:
        proc.kill()
        proc.communicate()


def test_the_call_record_writer_writes_structlogs_line_key_for_key() -> None:
    """info_writer skips structlog for JSON lines written per call: the line
    must be the one structlog writes (same keys in the same order, the same
    fallback for what JSON cannot hold), and structlog's own in console mode."""
    from sbc.io.logsetup import info_writer

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    fields = {"call_id": "c1@x", "duration_s": 0.5, "peer": ("127.0.0.1", 5060), "what": Opaque()}
    for fmt in ("json", "console"):
        buf = io.StringIO()
        configure_logging(fmt, "info", buf)
        get_logger("sbc.test").info("call_end", **fields)
        info_writer("sbc.test")("call_end", dict(fields))
        flush_logs()
        first, second = buf.getvalue().splitlines()
        if fmt == "json":
            a, b = json.loads(first), json.loads(second)
            assert list(a) == list(b) and a.pop("timestamp")[:19] == b.pop("timestamp")[:19]
            assert a == b and a["what"] == "<opaque>"
        else:
            assert first.split(" ", 1)[1] == second.split(" ", 1)[1]
    configure_logging("json", "info", buf)
    buf.truncate(0)
    configure_logging("json", "warning", buf)
    info_writer("sbc.test")("call_end", dict(fields))  # below the level: nothing
    flush_logs()
    assert buf.getvalue() == ""
    configure_logging("json", "info")
