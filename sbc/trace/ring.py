"""The per-call SIP trace: recent calls' messages in a ring bounded by bytes.

Pure: messages in (with the time the shell read), nothing out but what is
asked for. The ring owns two pools, each oldest-call-first:

- calls: a Call-ID that sbc forwarded at least one message of (a call VOS3000
  saw, or a caller saw answered by it). Its every later message is kept,
  whatever the verdict (absorbed retransmissions, sbc's own 408, BYEs).
- refused: Call-IDs only ever refused or dropped (a scanner, a flood, a call
  over a limit). The shell samples these before they get here, and the pool
  holds at most `refused_share` of the byte cap, so a flood of refused
  messages churns this pool and never evicts a real call's trace. A refused
  Call-ID that is later forwarded (an INVITE challenged with 407, then sent
  with credentials) moves to the calls pool with what it had.

Every table here is keyed by attacker-controlled Call-IDs: both pools are
bounded by bytes and by number of calls, a Call-ID is cut at
MAX_CALL_ID bytes, and one call keeps at most `max_call_bytes`; what does not
fit is counted. Authorization and Proxy-Authorization values are redacted
before a message is stored: the ring, the pcap and HEP never hold credentials.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

Addr = tuple[str, int]

MAX_CALL_ID = 256
# What a stored message and a call cost beyond their bytes (objects, tuples,
# strings): counted so that the byte cap bounds memory, not only payloads.
MESSAGE_OVERHEAD = 240
CALL_OVERHEAD = 400
REDACTED = b"[redacted]"

# Call-ID (RFC 3261 §20.8, compact form `i`, §7.3.3), searched without a
# parse, at a line start, in the first SEARCH_LIMIT bytes only.
_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
SEARCH_LIMIT = 16384
_AUTH = re.compile(rb"(\n(?:proxy-)?authorization[ \t]*:)[^\r\n]*", re.IGNORECASE)


def call_id_of(data: bytes) -> bytes:
    """The Call-ID of a SIP message by a bounded byte search ("" when none),
    cut at MAX_CALL_ID bytes."""
    at = data.find(b"\nCall-ID:", 0, SEARCH_LIMIT)  # the usual spelling, without a regex
    if at >= 0:
        end = data.find(b"\r", at)
        return data[at + 9: end if end >= 0 else None].strip()[:MAX_CALL_ID]
    m = _CALL_ID.search(data, 0, SEARCH_LIMIT)
    if m is None:
        return b""
    return m.group(1).rstrip()[:MAX_CALL_ID]


def redact(data: bytes) -> bytes:
    """The message with the values of its Authorization and
    Proxy-Authorization headers replaced (the header names stay, so the
    trace shows that credentials were sent)."""
    head_end = data.find(b"\r\n\r\n")
    head_end = len(data) if head_end < 0 else head_end
    if b"thorization" not in data[:head_end].lower():  # one C pass, no regex, when none
        return data
    head = _AUTH.sub(lambda m: m.group(1) + b" " + REDACTED, data[:head_end])
    return head + data[head_end:]


class Message(NamedTuple):
    """One SIP message as sbc saw it: `leg` "public" (a gateway) or
    "private" (VOS3000), `direction` "in" (to sbc) or "out" (from sbc).
    A named tuple: one is made per traced message."""

    ts_us: int
    leg: str
    direction: str
    transport: str
    src: Addr
    dst: Addr
    data: bytes
    note: str = ""  # sbc's verdict on an inbound message it did not forward

    @property
    def size(self) -> int:
        return len(self.data) + MESSAGE_OVERHEAD


@dataclass(slots=True)
class CallTrace:
    call_id: bytes
    messages: list[Message] = field(default_factory=list)
    size: int = CALL_OVERHEAD
    dropped: int = 0  # messages over the call's own cap, not kept
    info: dict[str, Any] = field(default_factory=dict)  # the engine's events (gateway, end)
    refused: bool = False


class _Pool:
    """Calls oldest first, bounded by bytes and by count."""

    def __init__(self, max_bytes: int, max_calls: int) -> None:
        self.max_bytes = max_bytes
        self.max_calls = max_calls
        self.calls: OrderedDict[bytes, CallTrace] = OrderedDict()
        self.bytes = 0
        self.evicted = 0

    def shrink(self, keep: CallTrace | None = None) -> None:
        calls = self.calls
        while calls and (self.bytes > self.max_bytes or len(calls) > self.max_calls):
            oldest = next(iter(calls.values()))
            if oldest is keep:
                if len(calls) == 1:
                    return
                calls.move_to_end(oldest.call_id)
                continue
            del calls[oldest.call_id]
            self.bytes -= oldest.size
            self.evicted += 1

    def take(self, call_id: bytes) -> CallTrace | None:
        trace = self.calls.pop(call_id, None)
        if trace is not None:
            self.bytes -= trace.size
        return trace

    def put(self, trace: CallTrace) -> None:
        self.calls[trace.call_id] = trace
        self.bytes += trace.size
        self.shrink(trace)


class TraceRing:
    """The two pools over one byte cap (see the module's docstring)."""

    def __init__(self, max_bytes: int, max_calls: int, max_call_bytes: int,
                 refused_share: float) -> None:
        refused_bytes = int(max_bytes * refused_share)
        refused_calls = max(1, int(max_calls * refused_share)) if refused_share > 0 else 0
        self.calls = _Pool(max_bytes - refused_bytes, max(1, max_calls - refused_calls))
        self.refused = _Pool(refused_bytes, refused_calls)
        self.max_call_bytes = max_call_bytes

    def configure(self, max_bytes: int, max_calls: int, max_call_bytes: int,
                  refused_share: float) -> None:
        """New caps (a reload): what is over them goes now, oldest first."""
        new = TraceRing(max_bytes, max_calls, max_call_bytes, refused_share)
        for mine, theirs in ((self.calls, new.calls), (self.refused, new.refused)):
            mine.max_bytes, mine.max_calls = theirs.max_bytes, theirs.max_calls
            mine.shrink()
        self.max_call_bytes = max_call_bytes

    def __contains__(self, call_id: bytes) -> bool:
        return call_id in self.calls.calls

    def __len__(self) -> int:
        return len(self.calls.calls) + len(self.refused.calls)

    @property
    def size(self) -> int:
        return self.calls.bytes + self.refused.bytes

    def add(self, call_id: bytes, messages: list[Message], forwarded: bool) -> bool:
        """Keep `messages` (already redacted) under `call_id`: in the calls
        pool when `forwarded` or when the call is there already, else in the
        refused pool. False when nothing was kept."""
        if not call_id:
            return False
        pool = self.calls
        trace = pool.calls.get(call_id)
        if trace is None:
            refused = self.refused.take(call_id)
            if forwarded:
                trace = refused or CallTrace(call_id)
                trace.refused = False
                pool.put(trace)
            else:
                pool = self.refused
                if pool.max_calls == 0:
                    return False
                trace = refused or CallTrace(call_id, refused=True)
                pool.put(trace)
        grown = 0
        room = self.max_call_bytes - trace.size
        kept = trace.messages
        for msg in messages:
            size = len(msg[6]) + MESSAGE_OVERHEAD
            if size > room:
                trace.dropped += 1
                continue
            kept.append(msg)
            room -= size
            grown += size
        trace.size += grown
        pool.bytes += grown
        if pool.bytes > pool.max_bytes:
            pool.shrink(trace)
        return grown > 0

    def note(self, call_id: bytes, **info: Any) -> None:
        """What the engine said about a call it traces (gateway, end): kept
        only for a call already in the ring (an event makes no entry)."""
        trace = self.get(call_id)
        if trace is not None and len(trace.info) < 16:
            trace.info.update(info)

    def get(self, call_id: bytes) -> CallTrace | None:
        return self.calls.calls.get(call_id) or self.refused.calls.get(call_id)

    def recent(self) -> list[CallTrace]:
        """Every call, newest first (the calls pool before the refused one)."""
        return [*reversed(self.calls.calls.values()), *reversed(self.refused.calls.values())]

    def figures(self) -> dict[str, int]:
        return {"calls": len(self.calls.calls), "refused_calls": len(self.refused.calls),
                "bytes": self.size, "evicted": self.calls.evicted,
                "refused_evicted": self.refused.evicted,
                "max_bytes": self.calls.max_bytes + self.refused.max_bytes}


class Sampler:
    """Keeps `rate` of what it is shown (0 to 1), evenly and deterministically:
    0.1 keeps the 10th, 20th, ... of a flood, never a burst of them."""

    __slots__ = ("_step", "_acc", "kept", "skipped")
    ONE = 1_000_000  # in millionths, so that 0.1 is exact

    def __init__(self, rate: float) -> None:
        self._step = 0
        self._acc = 0
        self.kept = 0
        self.skipped = 0
        self.rate = rate

    @property
    def rate(self) -> float:
        return self._step / self.ONE

    @rate.setter
    def rate(self, rate: float) -> None:
        self._step = round(rate * self.ONE)

    def __call__(self) -> bool:
        self._acc += self._step
        if self._acc >= self.ONE:
            self._acc -= self.ONE
            self.kept += 1
            return True
        self.skipped += 1
        return False
