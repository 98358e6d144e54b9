"""Ban and unban events as nodes exchange them through Redis, and the strict
reading of what comes back.

An event is one small JSON object, the same bytes whether it is announced on
the channel or kept under the banned host's key. Redis is trusted
infrastructure, but what a node reads from it is still checked field by field
before it touches the ban table: a malformed entry (wrong type, an address that
is not one, an expiry in the past or centuries ahead, an oversized payload)
is refused with a named reason, never a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["BanEvent", "Invalid", "MAX_BAN_S", "MAX_EVENT_BYTES", "Op", "decode", "encode",
           "normal_host"]

VERSION = 1
MAX_EVENT_BYTES = 4096
MAX_BAN_S = 366 * 86400.0  # the admin API's longest ban is a year
MAX_LEVEL = 1000
MAX_COUNTS = 32
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_INSTANCE = re.compile(r"[0-9a-f]{8,32}")


class Op(StrEnum):
    BAN = "ban"
    UNBAN = "unban"


class Invalid(ValueError):
    """A payload that is not a valid event; `reason` names what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def read_object(payload: bytes | str, limit: int, version: int = VERSION) -> dict[str, Any]:
    """A JSON object of at most `limit` bytes with `"v": version`, as every
    record the nodes exchange starts; raises Invalid(reason)."""
    if len(payload) > limit:
        raise Invalid("too_large")
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("not_json") from None
    if not isinstance(data, dict):
        raise Invalid("not_an_object")
    if data.get("v") != version:
        raise Invalid("version")
    return data


@dataclass(frozen=True, slots=True)
class BanEvent:
    """A ban (or the lifting of one) in wall-clock seconds, as every node reads it.

    `at_wall` is when it happened (a ban: when it was made). For an unban,
    `expires_wall` is when the lifted ban would have ended (how long the
    lifting must be remembered). `node` made it; `instance` is the process
    that published it (a node ignores its own announcements)."""

    op: Op
    host: str
    at_wall: float
    node: str
    instance: str
    reason: str = "manual"
    level: int = 1
    expires_wall: float = 0.0
    first_seen_wall: float = 0.0
    manual: bool = False
    counts: Mapping[str, int] = field(default_factory=dict)


def normal_host(value: object) -> str | None:
    """The canonical text of an IP address (IPv4-mapped IPv6 as IPv4), or None."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def encode(event: BanEvent) -> bytes:
    data: dict[str, Any] = {"v": VERSION, "op": event.op.value, "host": event.host,
                            "at": round(event.at_wall, 3), "node": event.node,
                            "instance": event.instance, "reason": event.reason,
                            "level": event.level, "expires": round(event.expires_wall, 3)}
    if event.op is Op.BAN:
        data.update(first_seen=round(event.first_seen_wall, 3), manual=event.manual,
                    counts=dict(event.counts))
    return json.dumps(data, separators=(",", ":")).encode()


def decode(payload: bytes | str, wall_now: float) -> BanEvent:
    """The event in `payload`, checked; raises Invalid(reason)."""
    data = read_object(payload, MAX_EVENT_BYTES)
    op_text = data.get("op")
    if op_text not in ("ban", "unban"):
        raise Invalid("op")
    op = Op(op_text)
    host = normal_host(data.get("host"))
    if host is None:
        raise Invalid("host")
    node, instance, reason = data.get("node"), data.get("instance"), data.get("reason")
    if not isinstance(node, str) or not _NAME.fullmatch(node):
        raise Invalid("node")
    if not isinstance(instance, str) or not _INSTANCE.fullmatch(instance):
        raise Invalid("instance")
    if not isinstance(reason, str) or not _NAME.fullmatch(reason):
        raise Invalid("reason")
    at, expires = _time(data.get("at"), wall_now), _time(data.get("expires"), wall_now)
    if at is None or at > wall_now + MAX_BAN_S:
        raise Invalid("at")
    if expires is None or expires - at > MAX_BAN_S:
        raise Invalid("expires")
    level = data.get("level")
    if not _int(level, 1, MAX_LEVEL):
        raise Invalid("level")
    assert isinstance(level, int)
    if op is Op.UNBAN:
        return BanEvent(op, host, at, node, instance, reason, level, expires)
    if expires <= at:
        raise Invalid("expires")
    first_seen, manual, counts = _time(data.get("first_seen"), wall_now), data.get("manual"), \
        data.get("counts")
    if first_seen is None or first_seen > at:
        raise Invalid("first_seen")
    if not isinstance(manual, bool):
        raise Invalid("manual")
    if not isinstance(counts, dict) or len(counts) > MAX_COUNTS or not all(
            isinstance(k, str) and _NAME.fullmatch(k) and _int(v, 0, 10**9)
            for k, v in counts.items()):
        raise Invalid("counts")
    return BanEvent(op, host, at, node, instance, reason, level, expires, first_seen, manual,
                    dict(counts))


def _int(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _time(value: object, wall_now: float) -> float | None:
    """A wall-clock time within a year and a bit of `wall_now`, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    t = float(value)
    if not math.isfinite(t) or abs(t - wall_now) > 2 * MAX_BAN_S:
        return None
    return t
