"""Registrations shared by the nodes: which node holds a binding of which
account, and where each live node takes requests on its private side. The
pure half; the Redis shell is sbc.cluster.registrations_link.

A node announces its own bindings, one record per account (`RegEvent`: the
account, the node, until when; "unbind" when the last binding went), and
its private address (`NodeRecord`), with the time as an argument. Every other
node keeps what it heard in `RemoteBindings`, which answers the core's two
questions (sbc.core.proxy.relay.Nodes) without waiting for anything:
- `owner(aor)`: the private address of the live node holding `aor`: a record
  names a node, never an address, and the address is the one that node
  announced itself, so no record can send a call anywhere but to a node;
- `is_node(host, port)`: the requests (and answers) a node may relay.

Both tables are bounded and expire: a binding at its own expiry, a node when
its heartbeat is not seen again within `node_ttl_s` (so with Redis gone, the
other nodes' phones are unknown after that and a call to one is answered
like a call to any unknown account). A full binding table refuses what does
not fit, counted; what Redis holds is checked field by field first.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .events import Invalid, normal_host, read_object

__all__ = ["MAX_RECORD_BYTES", "NodeRecord", "Outbox", "RegEvent", "RegOp", "RemoteBindings",
           "decode", "decode_node", "encode", "encode_node"]

VERSION = 1
MAX_RECORD_BYTES = 1024
MAX_LIFETIME_S = 2**32 / 1000  # longer than any registrar's max_expires may be (it is capped)
NODES_PER_AOR = 4  # nodes one account may be bound at, at once, in the table
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_INSTANCE = re.compile(r"[0-9a-f]{8,32}")
_AOR = re.compile(r"[\x21-\x7e]{1,128}")


class RegOp(StrEnum):
    BIND = "bind"
    UNBIND = "unbind"


@dataclass(frozen=True, slots=True)
class RegEvent:
    """`node` holds (BIND) or no longer holds (UNBIND) a binding of `aor`,
    as of `at_wall`, until `expires_wall` (wall-clock seconds)."""

    op: RegOp
    aor: str
    node: str
    instance: str
    at_wall: float
    expires_wall: float


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A live node, and the private address where the others relay to it."""

    node: str
    instance: str
    host: str
    port: int


def encode(event: RegEvent) -> bytes:
    return json.dumps({"v": VERSION, "op": event.op.value, "aor": event.aor, "node": event.node,
                       "instance": event.instance, "at": round(event.at_wall, 3),
                       "expires": round(event.expires_wall, 3)},
                      separators=(",", ":")).encode()


def encode_node(record: NodeRecord) -> bytes:
    return json.dumps({"v": VERSION, "op": "node", "node": record.node,
                       "instance": record.instance, "host": record.host, "port": record.port},
                      separators=(",", ":")).encode()


def _object(payload: bytes | str) -> dict[str, Any]:
    data = read_object(payload, MAX_RECORD_BYTES, VERSION)
    node, instance = data.get("node"), data.get("instance")
    if not isinstance(node, str) or not _NAME.fullmatch(node):
        raise Invalid("node")
    if not isinstance(instance, str) or not _INSTANCE.fullmatch(instance):
        raise Invalid("instance")
    return data


def is_node_payload(payload: bytes | str) -> bool:
    """Whether an announcement is a node's (else a binding's): a cheap look."""
    if isinstance(payload, bytes):
        return b'"op":"node"' in payload
    return '"op":"node"' in payload


def decode(payload: bytes | str, wall_now: float) -> RegEvent:
    """The binding event in `payload`, checked; raises Invalid(reason)."""
    data = _object(payload)
    op = data.get("op")
    if op not in ("bind", "unbind"):
        raise Invalid("op")
    aor = data.get("aor")
    if not isinstance(aor, str) or not _AOR.fullmatch(aor):
        raise Invalid("aor")
    at, expires = _time(data.get("at"), wall_now), _time(data.get("expires"), wall_now)
    if at is None:
        raise Invalid("at")
    if expires is None or expires - at > MAX_LIFETIME_S or (op == "bind" and expires <= at):
        raise Invalid("expires")
    return RegEvent(RegOp(op), aor, data["node"], data["instance"], at, expires)


def decode_node(payload: bytes | str) -> NodeRecord:
    """The node record in `payload`: a unicast IP address and a port."""
    data = _object(payload)
    if data.get("op") != "node":
        raise Invalid("op")
    host, port = normal_host(data.get("host")), data.get("port")
    if host is None:
        raise Invalid("host")
    addr = ipaddress.ip_address(host)
    if addr.is_unspecified or addr.is_multicast:
        raise Invalid("host")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise Invalid("port")
    return NodeRecord(data["node"], data["instance"], host, port)


def _time(value: object, wall_now: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    t = float(value)
    if not math.isfinite(t) or abs(t - wall_now) > 2 * MAX_LIFETIME_S:
        return None
    return t


@dataclass(slots=True)
class _Remote:
    expires_at: float  # monotonic
    at_wall: float  # when the node announced it: the newest registration wins


class RemoteBindings:
    """The other nodes' bindings and addresses, as this node last heard them."""

    def __init__(self, node: str, *, max_entries: int = 100_000, node_ttl_s: float = 6.0,
                 own: frozenset[tuple[str, int]] = frozenset()) -> None:
        self.node = node
        self.max_entries = max_entries
        self.node_ttl_s = node_ttl_s
        self.own = own  # this node's own addresses: never a relay target
        self._table: dict[str, dict[str, _Remote]] = {}
        self._count = 0
        self._nodes: dict[str, tuple[str, int, float]] = {}  # node -> host, port, until (mono)
        self._addrs: dict[tuple[str, int], float] = {}  # address -> until (mono)
        self._next_sweep = 0.0
        self.counts: Counter[str] = Counter()  # outcomes of what was heard, and of lookups

    def __len__(self) -> int:
        return self._count

    # ------------------------------------------------------------ the core's questions

    def owner(self, aor: str, now: float) -> tuple[str, int] | None:
        entries = self._table.get(aor)
        if not entries:
            return None
        best: tuple[float, tuple[str, int]] | None = None
        for node, entry in entries.items():
            where = self._nodes.get(node)
            if entry.expires_at > now and where is not None and where[2] > now \
                    and (best is None or entry.at_wall > best[0]):
                best = (entry.at_wall, (where[0], where[1]))
        if best is None:
            return None
        self.counts["routed"] += 1
        return best[1]

    def is_node(self, host: str, port: int, now: float) -> bool:
        until = self._addrs.get((host, port))
        return until is not None and until > now

    # ------------------------------------------------------------ what was heard

    def node_seen(self, record: NodeRecord, now: float) -> str:
        """A node's heartbeat: its address is a relay target for `node_ttl_s`."""
        if record.node == self.node:
            return "own"
        addr = (record.host, record.port)
        if addr in self.own:
            self.counts["node_own_address"] += 1
            return "own_address"
        old = self._nodes.get(record.node)
        if old is not None and (old[0], old[1]) != addr:
            self._addrs.pop((old[0], old[1]), None)
        if old is None and len(self._nodes) >= 1000:
            self.counts["nodes_full"] += 1
            return "full"
        until = now + self.node_ttl_s
        self._nodes[record.node] = (record.host, record.port, until)
        self._addrs[addr] = until
        return "node"

    def nodes_seen(self, records: list[NodeRecord], now: float) -> None:
        """Every live node at once (a scan of the heartbeats): those missing are gone."""
        live = {r.node for r in records}
        for name in [n for n in self._nodes if n not in live]:
            host, port, _ = self._nodes.pop(name)
            self._addrs.pop((host, port), None)
        for r in records:
            self.node_seen(r, now)

    def apply(self, event: RegEvent, now: float, wall_now: float) -> str:
        """One binding event of another node; what became of it."""
        if event.node == self.node:
            return "own"
        entries = self._table.get(event.aor)
        old = entries.get(event.node) if entries else None
        if old is not None and old.at_wall > event.at_wall:
            return "late"  # a newer event for the same binding came first
        if event.op is RegOp.UNBIND or event.expires_wall <= wall_now:
            if old is not None:
                self._remove(event.aor, event.node)
            return "removed"
        expires_at = now + (event.expires_wall - wall_now)
        if old is not None:
            old.expires_at, old.at_wall = expires_at, event.at_wall
            return "updated"
        if self._count >= self.max_entries:
            if now >= self._next_sweep:
                self._next_sweep = now + 1.0  # at most one full sweep a second
                self.expire(now)
            if self._count >= self.max_entries:
                self.counts["full"] += 1
                return "full"
        entries = self._table.setdefault(event.aor, {})
        if len(entries) >= NODES_PER_AOR:
            oldest = min(entries, key=lambda n: entries[n].at_wall)
            del entries[oldest]
            self._count -= 1
        entries[event.node] = _Remote(expires_at, event.at_wall)
        self._count += 1
        return "added"

    def expire(self, now: float) -> int:
        """Forget expired bindings and silent nodes; how many bindings went."""
        gone = 0
        for aor in list(self._table):
            entries = self._table[aor]
            for node in [n for n, e in entries.items() if e.expires_at <= now]:
                del entries[node]
                gone += 1
            if not entries:
                del self._table[aor]
        self._count -= gone
        for name in [n for n, (_, _, until) in self._nodes.items() if until <= now]:
            host, port, _ = self._nodes.pop(name)
            self._addrs.pop((host, port), None)
        return gone

    def _remove(self, aor: str, node: str) -> None:
        entries = self._table[aor]
        del entries[node]
        self._count -= 1
        if not entries:
            del self._table[aor]

    # ------------------------------------------------------------ for the admin

    def rows(self, now: float, limit: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for aor, entries in self._table.items():
            for node, e in entries.items():
                if e.expires_at > now:
                    out.append({"aor": aor, "node": node, "expires_s": round(e.expires_at - now),
                                "live": node in self._nodes and self._nodes[node][2] > now})
                if len(out) >= limit:
                    return out
        return out

    def nodes(self, now: float) -> dict[str, str]:
        return {name: f"{host}:{port}" for name, (host, port, until) in self._nodes.items()
                if until > now}


class Outbox:
    """This node's binding changes waiting to be announced: one per account
    (the newer replaces the older), at most `max_pending`."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._queue: OrderedDict[str, RegEvent] = OrderedDict()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, event: RegEvent) -> bool:
        if event.aor in self._queue:
            del self._queue[event.aor]
        elif len(self._queue) >= self.max_pending:
            self.dropped += 1
            return False
        self._queue[event.aor] = event
        return True

    def take(self, n: int) -> list[RegEvent]:
        return [self._queue.popitem(last=False)[1] for _ in range(min(n, len(self._queue)))]

    def put_back(self, events: list[RegEvent]) -> None:
        for event in reversed(events):
            if event.aor in self._queue or len(self._queue) >= self.max_pending:
                continue
            self._queue[event.aor] = event
            self._queue.move_to_end(event.aor, last=False)
