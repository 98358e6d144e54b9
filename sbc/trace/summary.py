"""A call record read off its trace: who called whom, through which
gateway, when, how it ended and who ended it. Pure, and run only when the
admin asks (never per packet): the first lines and a few headers of the
messages the ring kept are read here, not when they passed."""

from __future__ import annotations

import re
from typing import Any

from .ring import CallTrace, Message

_USER = re.compile(rb"sips?:(?:\+)?([^@;>\s]*)@", re.IGNORECASE)
_CSEQ = re.compile(rb"\n(?:cseq)[ \t]*:[ \t]*\d+[ \t]+([A-Za-z]+)", re.IGNORECASE)


def first_line(data: bytes) -> str:
    end = data.find(b"\r\n")
    return data[: end if end >= 0 else 200][:200].decode("utf-8", "replace")


def _header(data: bytes, names: tuple[bytes, ...]) -> bytes:
    head_end = data.find(b"\r\n\r\n")
    for line in data[: head_end if head_end >= 0 else len(data)].split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in names:
            return value.strip()
    return b""


def _user(value: bytes) -> str:
    m = _USER.search(value)
    return m.group(1).decode("utf-8", "replace")[:64] if m else ""


def _status(msg: Message) -> int:
    line = msg.data[:12]
    if line.startswith(b"SIP/2.0 ") and line[8:11].isdigit():
        return int(line[8:11])
    return 0


def _method(msg: Message) -> bytes:
    return msg.data[: msg.data.find(b" ", 0, 32)] if not msg.data.startswith(b"SIP/") else b""


def _cseq_method(msg: Message) -> bytes:
    m = _CSEQ.search(msg.data)
    return m.group(1).upper() if m else b""


def summarize(trace: CallTrace, gateway: str | None = None) -> dict[str, Any]:
    """The call record of `trace`: gateway (as the engine named it, else
    `gateway`, found by the shell from the caller's address), numbers,
    setup time, final status, who ended it, duration and, for a call sbc
    refused itself, why."""
    msgs = trace.messages
    info = trace.info
    invite = next((m for m in msgs if _method(m) == b"INVITE"), None)
    first = msgs[0] if msgs else None
    caller_leg = invite.leg if invite is not None and invite.direction == "in" else "public"
    record: dict[str, Any] = {
        "call_id": trace.call_id.decode("utf-8", "replace"),
        "gateway": info.get("gateway") or gateway or "",
        "from": "", "to": "",
        "start_us": first.ts_us if first else 0,
        "status": None, "status_text": "", "answered_us": None,
        "ended_by": "", "end_reason": info.get("reason", ""),
        "duration_s": None, "refusal": "",
        "messages": len(msgs), "dropped_messages": trace.dropped,
        "refused_only": trace.refused,
        "direction": "inbound" if caller_leg == "public" else "outbound",
    }
    if invite is not None:
        record["from"] = _user(_header(invite.data, (b"from", b"f")))
        record["to"] = _user(_header(invite.data, (b"to", b"t"))) or _user(invite.data[:300])
    bye_at = None
    for m in msgs:
        status = _status(m)
        if status >= 200 and m.direction == "out" and m.leg == caller_leg \
                and _cseq_method(m) == b"INVITE" and record["status"] is None:
            record["status"] = status
            record["status_text"] = first_line(m.data)[12:]
            if status < 300:
                record["answered_us"] = m.ts_us
        if m.note and not record["refusal"]:
            record["refusal"] = m.note
        method = _method(m)
        if method in (b"BYE", b"CANCEL") and not record["ended_by"]:
            if m.direction == "in":
                record["ended_by"] = "caller" if m.leg == caller_leg else (
                    "vos3000" if m.leg == "private" else "callee")
            else:
                record["ended_by"] = "sbc"
            bye_at = m.ts_us
    if record["status"] is not None and record["status"] >= 300 and not record["ended_by"]:
        refused_by_sbc = not any(m.leg != caller_leg and m.direction == "in" and _status(m) >= 300
                                 for m in msgs)
        record["ended_by"] = "sbc" if refused_by_sbc else ("vos3000" if caller_leg == "public"
                                                            else "callee")
        if refused_by_sbc and not record["refusal"]:
            record["refusal"] = record["status_text"] and f"{record['status']} {record['status_text']}"
    if "duration_s" in info:
        record["duration_s"] = info["duration_s"] if record["answered_us"] else 0.0
    elif record["answered_us"] is not None and bye_at is not None:
        record["duration_s"] = round((bye_at - record["answered_us"]) / 1e6, 3)
    return record


def message_rows(trace: CallTrace) -> list[dict[str, Any]]:
    """The messages of a call for the API and the ladder."""
    return [{"ts_us": m.ts_us, "leg": m.leg, "direction": m.direction,
             "transport": m.transport, "src": f"{m.src[0]}:{m.src[1]}",
             "dst": f"{m.dst[0]}:{m.dst[1]}", "first_line": first_line(m.data),
             "note": m.note, "size": len(m.data),
             "text": m.data.decode("utf-8", "replace")} for m in trace.messages]
