"""Call state under attack, end to end (issue 13: spec13 findings 1, 2, 4, 5 and 7).

    callers (SIPp / UDP peers) ──udp──► sbc public ─ sbc private ──udp──► VOS3000 stand-in

sbc runs as a real subprocess on loopback (the `sbc` fixture).  Real SIPp is
the caller wherever a real client can send what the test needs, and the
VOS3000 stand-in for the call to a registered phone.  Where no real client
sends the message (an INVITE reusing another call's Call-ID, an invented
To-tag, a forged response, a BYE answered 481 or never), the party is a small
UDP user agent under the test's control (`Peer`, on asyncio-dgram in a thread
of its own) bound to its own loopback address, so that gateways are told
apart by source address:

    127.0.0.21  gateway A        127.0.0.22  gateway B
    127.0.0.25  a digest phone   127.0.0.66  a stranger (configured nowhere)

The VOS3000 stand-in (`Vos3000`) keys calls by Call-ID *and* From-tag, as
RFC 3261 §12 identifies dialogs, so that two calls sharing a Call-ID are two
calls to it; it answers sbc's OPTIONS pings, so tests may read the live
per-gateway figures from the admin API (`/api/stats`).

Every wait has a deadline and is a poll for an event (a datagram, a SIPp
trace line, an sbc log line, an admin figure); "nothing arrives" is checked
by watching until a deadline, after a barrier: an OPTIONS from a gateway
address, answered by sbc from the same socket, so its 200 means sbc has read
every datagram sent before it.  Traffic goes to 127.0.0.0/8 only.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import asyncio_dgram
import pytest

from loadtest.harness import (
    LOOPBACK,
    SbcProcess,
    Sipp,
    SippResult,
    TracedMessage,
    free_ports,
    parse_trace,
    report,
)

from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e

Addr = tuple[str, int]

GW_A_IP = "127.0.0.21"
GW_B_IP = "127.0.0.22"
PHONE_IP = "127.0.0.25"
STRANGER_IP = "127.0.0.66"

GW_A = {"name": "gw-a", "ip": [GW_A_IP]}
GW_B = {"name": "gw-b", "ip": [GW_B_IP]}

USER, PASSWORD = "1001", "secret"
MD5_ONLY = {"algorithms": ["MD5"]}  # SIPp 3.6 computes MD5 digests only
PHONES = {"name": "phones", "digest": [{"username": USER, "password": PASSWORD}]}

ADMIN_TOKEN = "call-state-e2e-admin-token"
CONCURRENT_LIMIT = "Gateway Concurrent Call Limit"

SIPP_BOUND_S = 60  # bound on any one SIPp run of these tests (its -timeout)
STEP_S = 10.0  # bound on waiting for a reaction to one step
QUIET_S = 1.0  # how long a socket is watched to show that nothing arrives


# --------------------------------------------------------------------------
# Checks that do not stop the test (so a report shows every broken property)


class Findings:
    def __init__(self, context: Callable[[], str]) -> None:
        self.problems: list[str] = []
        self._context = context

    def check(self, ok: bool, problem: str) -> bool:
        if not ok:
            self.problems.append(problem)
        return ok

    def done(self) -> None:
        if self.problems:
            listed = "\n".join(f"- {p}" for p in self.problems)
            pytest.fail(f"{len(self.problems)} problem(s):\n{listed}\n\n{self._context()}",
                        pytrace=False)


def _until(what: str, check: Callable[[], Any], timeout: float = STEP_S) -> Any:
    """Poll `check` until it returns something truthy (returned) or the deadline (None)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


# --------------------------------------------------------------------------
# SIP text

COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact",
           "l": "content-length", "c": "content-type"}
MULTI = {"via", "record-route", "route", "contact"}  # comma-separated lists


def _split_commas(value: str) -> list[str]:
    out: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


class Sip:
    """A parsed SIP message (enough of it for these tests)."""

    def __init__(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        head, _, self.body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.start = lines[0]
        self.text = text
        self.fields: list[tuple[str, str, str]] = []  # (name, raw line, value)
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                key = name.strip().lower()
                self.fields.append((COMPACT.get(key, key), line, value.strip()))

    @property
    def method(self) -> str | None:
        word = self.start.split(" ", 1)[0]
        return None if word.startswith("SIP/") else word

    @property
    def status(self) -> int | None:
        parts = self.start.split(" ", 2)
        return int(parts[1]) if parts[0].startswith("SIP/") and len(parts) > 1 else None

    @property
    def uri(self) -> str:
        return self.start.split(" ")[1]

    def lines(self, name: str) -> list[str]:
        return [raw for key, raw, _ in self.fields if key == name]

    def values(self, name: str) -> list[str]:
        out: list[str] = []
        for key, _, value in self.fields:
            if key == name:
                out.extend(_split_commas(value) if name in MULTI else [value])
        return out

    def header(self, name: str) -> str:
        values = self.values(name)
        return values[0] if values else ""

    def tag(self, name: str) -> str | None:
        """The tag parameter of From or To."""
        for param in self.header(name).split(">")[-1].split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "tag":
                return value.strip()
        return None

    @property
    def call_id(self) -> str:
        return self.header("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        number, _, method = self.header("cseq").partition(" ")
        return int(number or 0), method.strip()

    @property
    def branch(self) -> str:
        for param in self.header("via").split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "branch":
                return value.strip()
        return ""


def uri_of(name_addr: str) -> str:
    """The URI of a name-addr (`<sip:...>;params`) or of a bare URI."""
    if "<" in name_addr:
        return name_addr[name_addr.index("<") + 1 : name_addr.index(">")]
    return name_addr.split(";", 1)[0].strip()


def addr_of(uri: str) -> Addr:
    """Where a SIP URI points (host and port, 5060 by default)."""
    rest = uri.split(":", 1)[1] if uri.lower().startswith("sip:") else uri
    rest = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    host, _, port = rest.partition(":")
    return host, int(port or 5060)


SDP = ("v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _message(start: str, lines: Iterable[str], body: str = "") -> bytes:
    extra = ["Content-Type: application/sdp"] if body else []
    head = "\r\n".join([start, *lines, *extra, f"Content-Length: {len(body.encode())}"])
    return (head + "\r\n\r\n" + body).encode()


def response(req: Sip, status: int, reason: str, *, to_tag: str | None = None,
             record_route: bool = False, extra: Sequence[str] = (), body: str = "") -> bytes:
    """A response copying Via, From, To, Call-ID, CSeq (and Record-Route) from the
    request (RFC 3261 §8.2.6.2, §12.1.1)."""
    keep = {"via", "from", "call-id", "cseq"} | ({"record-route"} if record_route else set())
    lines = []
    for key, raw, _ in req.fields:
        if key == "to":
            lines.append(raw if to_tag is None or req.tag("to") else f"{raw};tag={to_tag}")
        elif key in keep:
            lines.append(raw)
    return _message(f"SIP/2.0 {status} {reason}", [*lines, *extra], body)


_branches = itertools.count(1)


def new_branch(who: str) -> str:
    return f"z9hG4bK-{who}-{os.getpid()}-{next(_branches)}"


# --------------------------------------------------------------------------
# A UDP party on a loopback address


@dataclass(frozen=True)
class Datagram:
    data: bytes
    source: Addr
    at: float  # time.monotonic() when it was read
    msg: Sip | None  # None: not SIP


Outgoing = list[tuple[bytes, Addr]]


class Peer:
    """A UDP socket on a loopback address, served by asyncio-dgram in a thread.

    Every datagram is kept (at most `limit`; later ones are ignored) with its
    source; `handle` (for subclasses) returns what to send in reaction, and
    where.  Use as a
    context manager: the socket and the thread end with the block.
    """

    def __init__(self, host: str, port: int = 0, *, limit: int = 5000) -> None:
        self.host = host
        self.port = port
        self.address: Addr = (host, port)
        self.limit = limit
        self.lock = threading.RLock()
        self._got: list[Datagram] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"peer-{host}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(STEP_S) or self._stream is None:
            self._stop.set()
            raise AssertionError(f"peer {self.host}:{self.port} did not bind: {self.errors}")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(STEP_S)
        if self.errors and kind is None:
            raise AssertionError(f"peer {self.address} failed: {self.errors}")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported to the test thread
            self.errors.append(repr(e))
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        stream = await asyncio_dgram.bind((self.host, self.port))
        self._stream = stream
        self.address = stream.sockname[:2]
        self._ready.set()
        try:
            while not self._stop.is_set():
                try:
                    received: Any = await asyncio.wait_for(stream.recv(), 0.1)
                except TimeoutError:
                    continue
                except OSError:
                    continue  # an ICMP error for something sent earlier
                data: bytes = received[0]
                src_host, src_port = received[1][0], received[1][1]
                msg: Sip | None
                try:
                    msg = Sip(data)
                    if msg.method is None and msg.status is None:
                        msg = None
                except (ValueError, IndexError):
                    msg = None
                got = Datagram(data, (str(src_host), int(src_port)), time.monotonic(), msg)
                with self.lock:
                    if len(self._got) >= self.limit:
                        continue  # bounded: past `limit` datagrams the peer goes deaf
                    self._got.append(got)
                    try:
                        outgoing = self.handle(got) if msg is not None else []
                    except Exception as e:  # noqa: BLE001 - a bug of the test's peer, reported
                        self.errors.append(f"handling {data[:80]!r}: {e!r}")
                        outgoing = []
                for out, dest in outgoing:
                    await self._send(out, dest)
        finally:
            stream.close()

    async def _send(self, data: bytes, dest: Addr) -> None:
        for _ in range(2):
            try:
                await self._stream.send(data, dest)
                return
            except OSError:
                continue  # a pending ICMP error surfaced here; the send is retried once

    def handle(self, got: Datagram) -> Outgoing:
        return []

    def send(self, data: bytes, dest: Addr) -> None:
        """Send from the peer's socket (from the test's thread)."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._send(data, dest), self._loop).result(STEP_S)

    @property
    def received(self) -> list[Datagram]:
        with self.lock:
            return list(self._got)

    def wait_for(self, match: Callable[[Datagram], bool], timeout: float = STEP_S,
                 count: int = 1) -> list[Datagram]:
        """Datagrams that `match`, once `count` are in or the deadline has passed."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [d for d in self.received if match(d)]
            if len(hits) >= count or time.monotonic() >= deadline:
                return hits
            time.sleep(0.01)

    def quiet(self, match: Callable[[Datagram], bool], within: float = QUIET_S) -> list[Datagram]:
        """Watch until the deadline; the datagrams that `match` (empty: none came)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            hits = [d for d in self.received if match(d)]
            if hits:
                return hits
            time.sleep(0.02)
        return [d for d in self.received if match(d)]

    def requests(self, method: str | None = None, call_id: str | None = None) -> list[Sip]:
        return [d.msg for d in self.received
                if d.msg is not None and d.msg.method is not None
                and (method is None or d.msg.method == method)
                and (call_id is None or d.msg.call_id == call_id)]


def is_request(method: str, call_id: str | None = None,
               from_tag: str | None = None) -> Callable[[Datagram], bool]:
    def match(d: Datagram) -> bool:
        m = d.msg
        return (m is not None and m.method == method
                and (call_id is None or m.call_id == call_id)
                and (from_tag is None or m.tag("from") == from_tag))
    return match


def is_final_for(branch: str) -> Callable[[Datagram], bool]:
    def match(d: Datagram) -> bool:
        return d.msg is not None and (d.msg.status or 0) >= 200 and d.msg.branch == branch
    return match


@dataclass
class VosCall:
    invite: Sip
    tag: str
    answers: list[bytes]


class Vos3000(Peer):
    """VOS3000 as a UDP user agent server on the backend address.

    A call is a Call-ID *and* a From-tag (RFC 3261 §12): INVITE -> 100, 180,
    200 (SDP, Record-Route copied, Contact here); a retransmitted INVITE gets
    the same answers.  ACK: nothing.  BYE: `bye_answer(request)` gives the
    status (None: no answer at all); 200 by default.  OPTIONS (sbc's pings):
    200.  An INVITE or other request with a To-tag of no call here: 481.
    `hang_up` sends VOS3000's own BYE for a call, along its route set.
    """

    CONTACT_USER = "vos3000"

    def __init__(self, port: int, bye_answer: Callable[[Sip], int | None] | None = None) -> None:
        super().__init__(LOOPBACK, port)
        self.bye_answer = bye_answer or (lambda _req: 200)
        self.calls: dict[tuple[str, str], VosCall] = {}

    def _contact(self) -> str:
        return f"Contact: <sip:{self.CONTACT_USER}@{self.address[0]}:{self.address[1]}>"

    def _known(self, msg: Sip) -> bool:
        """Whether a request's tags name a call here (either direction)."""
        pairs = {(msg.call_id, msg.tag("from") or ""), (msg.call_id, msg.tag("to") or "")}
        return any(key in self.calls and self.calls[key].tag in (msg.tag("to"), msg.tag("from"))
                   for key in pairs)

    def handle(self, got: Datagram) -> Outgoing:
        msg = got.msg
        assert msg is not None
        back = got.source
        method = msg.method
        if method is None or method == "ACK":
            return []
        if method == "OPTIONS" and msg.tag("to") is None:
            return [(response(msg, 200, "OK", to_tag="vos-ping"), back)]
        if method == "INVITE" and msg.tag("to") is None:
            key = (msg.call_id, msg.tag("from") or "")
            call = self.calls.get(key)
            if call is None:
                tag = f"vos-{len(self.calls) + 1}"
                contact = self._contact()
                call = VosCall(msg, tag, [
                    response(msg, 100, "Trying"),
                    response(msg, 180, "Ringing", to_tag=tag, record_route=True,
                             extra=[contact]),
                    response(msg, 200, "OK", to_tag=tag, record_route=True, extra=[contact],
                             body=SDP),
                ])
                self.calls[key] = call
            return [(a, back) for a in call.answers]
        if not self._known(msg):
            return [(response(msg, 481, "Call/Transaction Does Not Exist", to_tag="vos-none"),
                      back)]
        if method == "BYE":
            status = self.bye_answer(msg)
            if status is None:
                return []
            phrase = {200: "OK", 481: "Call/Transaction Does Not Exist"}.get(status, "Whatever")
            return [(response(msg, status, phrase), back)]
        return [(response(msg, 200, "OK"), back)]

    def call(self, call_id: str, from_tag: str) -> VosCall:
        with self.lock:
            return self.calls[(call_id, from_tag)]

    def hang_up(self, call_id: str, from_tag: str) -> str:
        """VOS3000's BYE for the call (Call-ID, the caller's From-tag): to the
        caller's Contact along the Record-Route set, as received (RFC 3261
        §12.1.1, §12.2.1.1).  Returns the BYE's branch."""
        call = self.call(call_id, from_tag)
        inv = call.invite
        routes = inv.values("record-route")
        target = uri_of(inv.header("contact"))
        hop = addr_of(uri_of(routes[0])) if routes else addr_of(target)
        branch = new_branch("vos-bye")
        lines = [
            f"Via: SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={branch}",
            *(f"Route: {r}" for r in routes),
            "Max-Forwards: 70",
            f"From: {inv.header('to')};tag={call.tag}",
            f"To: {inv.header('from')}",
            f"Call-ID: {call_id}",
            "CSeq: 1 BYE",
            self._contact(),
        ]
        self.send(_message(f"BYE {target} SIP/2.0", lines), hop)
        return branch


@dataclass
class Sent:
    method: str
    ruri: str
    from_value: str
    to_value: str
    call_id: str
    cseq: int


class Gateway(Peer):
    """A gateway's user agent on its own loopback address, sending to sbc's public port.

    Acts as a conforming UAC: every final answer to its INVITEs is ACKed (2xx
    along the route set to the Contact, RFC 3261 §13.2.2.4; others hop by hop
    with the INVITE's branch, §17.1.1.3).  A BYE for one of its calls gets
    200, a BYE for anything else 481.
    """

    def __init__(self, host: str, server: Addr, port: int = 0) -> None:
        super().__init__(host, port)
        self.server = server
        self.sent: dict[str, Sent] = {}  # by branch
        self.dialogs: set[tuple[str, str]] = set()  # (Call-ID, our From-tag) of answered calls

    def request(self, method: str, user: str, *, call_id: str, from_tag: str,
                to_tag: str | None = None, cseq: int = 1, body: str = "") -> str:
        """An out-of-dialog request (or, with `to_tag`, one claiming a dialog) to sbc."""
        branch = new_branch(f"gw{self.host.rsplit('.', 1)[-1]}")
        ruri = f"sip:{user}@{self.server[0]}:{self.server[1]}"
        from_value = f"<sip:gw@{self.address[0]}:{self.address[1]}>;tag={from_tag}"
        to_value = f"<{ruri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"Via: SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: {from_value}",
            f"To: {to_value}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:gw@{self.address[0]}:{self.address[1]}>",
        ]
        with self.lock:
            self.sent[branch] = Sent(method, ruri, from_value, to_value, call_id, cseq)
        self.send(_message(f"{method} {ruri} SIP/2.0", lines, body), self.server)
        return branch

    def invite(self, user: str, *, call_id: str, from_tag: str,
               to_tag: str | None = None) -> str:
        return self.request("INVITE", user, call_id=call_id, from_tag=from_tag, to_tag=to_tag,
                            body=SDP)

    def options_barrier(self) -> None:
        """OPTIONS to sbc and its 200 back: sbc has read every datagram sent to
        its public UDP socket before this one (one socket, read in order)."""
        branch = self.request("OPTIONS", "ping", call_id=f"barrier-{new_branch('b')}",
                              from_tag="barrier")
        if not self.wait_for(is_final_for(branch)):
            raise AssertionError("sbc did not answer the barrier OPTIONS")

    def final(self, branch: str, timeout: float = STEP_S) -> Sip | None:
        hits = self.wait_for(is_final_for(branch), timeout)
        return hits[0].msg if hits else None

    def handle(self, got: Datagram) -> Outgoing:
        msg = got.msg
        assert msg is not None
        if msg.method == "BYE":
            ours = (msg.call_id, msg.tag("to") or "") in self.dialogs
            return [(response(msg, 200, "OK") if ours
                     else response(msg, 481, "Call/Transaction Does Not Exist"), got.source)]
        if msg.method is not None:
            return []
        status = msg.status or 0
        sent = self.sent.get(msg.branch)
        # Only final answers to the INVITE are ACKed (never an answer to an ACK).
        if sent is None or sent.method != "INVITE" or msg.cseq[1] != "INVITE" or status < 200:
            return []
        if status < 300:
            self.dialogs.add((sent.call_id, _tag_of(sent.from_value)))
            routes = list(reversed(msg.values("record-route")))
            target = uri_of(msg.header("contact"))
            hop = addr_of(uri_of(routes[0])) if routes else self.server
            start, via = f"ACK {target} SIP/2.0", new_branch("ack")
            route_lines = [f"Route: {r}" for r in routes]
        else:
            start, via, route_lines, hop = f"ACK {sent.ruri} SIP/2.0", msg.branch, [], self.server
        lines = [
            f"Via: SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={via};rport",
            *route_lines,
            "Max-Forwards: 70",
            f"From: {sent.from_value}",
            f"To: {msg.header('to')}",
            f"Call-ID: {sent.call_id}",
            f"CSeq: {sent.cseq} ACK",
        ]
        return [(_message(start, lines), hop)]


def _tag_of(value: str) -> str:
    return value.rsplit(";tag=", 1)[1].split(";", 1)[0]


# --------------------------------------------------------------------------
# sbc, its admin API, SIPp


def _more_ports(ports: Ports, count: int, host: str = LOOPBACK) -> list[int]:
    taken = {ports.public, ports.private, ports.backend, ports.caller}
    return [p for p in free_ports(count + len(taken), host) if p not in taken][:count]


def _admin(port: int) -> dict[str, Any]:
    return {"admin": {"enabled": True, "host": LOOPBACK, "port": port, "token": ADMIN_TOKEN,
                      "ping_interval_s": 1.0, "ping_timeout_s": 1.0}}


def _stats(port: int) -> dict[str, Any]:
    """sbc's live counters (GET /api/stats): drops, gateways' figures, ..."""
    req = urllib.request.Request(f"http://{LOOPBACK}:{port}/api/stats",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback only
        counters: dict[str, Any] = json.loads(r.read())["counters"]
    return counters


def _concurrent(port: int) -> dict[str, int]:
    return {name: fig.get("concurrent", -1) for name, fig in _stats(port)["gateways"].items()}


def _wait_concurrent(port: int, want: dict[str, int], timeout: float = 3.0) -> dict[str, int]:
    """Poll the admin figures until they are `want`; the last reading."""
    last: dict[str, int] = {}

    def reached() -> bool:
        nonlocal last
        last = _concurrent(port)
        return all(last.get(k) == v for k, v in want.items())

    _until("concurrent figures", reached, timeout)
    return last


def _logged(proxy: SbcProcess, event: str, call_id: str,
            timeout: float = STEP_S) -> dict[str, Any] | None:
    def find() -> dict[str, Any] | None:
        return next((e for e in proxy.named(event) if e.get("call_id") == call_id), None)

    found: dict[str, Any] | None = _until(f"{event} {call_id}", find, timeout)
    return found


def _stopped_figures(proxy: SbcProcess) -> dict[str, dict[str, int]]:
    """Stop sbc by PID (SIGTERM); the per-gateway figures of its `stopped` line."""
    rc = proxy.stop()
    assert rc == 0, f"sbc exited {rc} on SIGTERM\n{proxy.output_tail()}"
    lines = proxy.named("stopped")
    assert lines, f"no 'stopped' line\n{proxy.output_tail()}"
    figures: dict[str, dict[str, int]] = lines[-1]["gateways"]
    return figures


def _trace_so_far(proc: Sipp) -> list[TracedMessage]:
    found = sorted(proc.workdir.glob(f"{proc.scenario}_*_messages.log"))
    return parse_trace(found[-1].read_text("utf-8", "replace")) if found else []


def _caller(sipp: SippFactory, ports: Ports, name: str, scenario: str, host: str, service: str,
            **kwargs: Any) -> Sipp:
    """One SIPp caller (-m 1) on `host`, Call-ID `<name>-1@<host>`."""
    (port,) = _more_ports(ports, 1, host)
    extra = ["-s", service, "-cid_str", f"{name}-%u@%s", *kwargs.pop("extra", [])]
    return sipp(name, scenario, local_ip=host, local_port=port, calls=1, transport="u1",
                remote=(LOOPBACK, ports.public), timeout_s=SIPP_BOUND_S,
                recv_timeout_ms=SIPP_BOUND_S * 1000, extra=extra, **kwargs)


def call_id(caller: Sipp) -> str:
    return f"{caller.name}-1@{caller.local_ip}"


def _ok(result: SippResult, calls: int = 1) -> bool:
    return result.returncode == 0 and result.successful == calls and result.failed == 0


def _outcome(result: SippResult) -> str:
    return f"exit {result.returncode}, {result.successful} ok, {result.failed} failed"


def _received(msgs: Iterable[TracedMessage], *, method: str | None = None,
              status: int | None = None, cseq: str | None = None) -> list[TracedMessage]:
    return [m for m in msgs if m.direction == "received"
            and (method is None or m.method == method)
            and (status is None or m.status == status)
            and (cseq is None or m.cseq_method == cseq)]


def _finish(proc: Sipp, timeout: float = STEP_S + 5) -> SippResult:
    """Wait for a SIPp that should be ending; stopped by PID if it is not."""
    assert proc.proc is not None
    try:
        rc = proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:  # stopped; what it did so far is reported
        proc.stop()
        rc = proc.proc.wait(5)
    return proc.result(rc)


# --------------------------------------------------------------------------
# Finding 1: a Call-ID is not a call; Call-ID + From-tag (+ To-tag) is


def test_reused_call_id_from_another_gateway_leaves_the_call_alone(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """Gateway A's call is up; gateway B sends an INVITE with A's Call-ID and
    its own From-tag.  That is a call of B's (its own dialog, counted for B),
    and A's call is untouched: both gateways count one call, VOS3000's BYE
    for A's call reaches A and nobody else, its BYE for B's call reaches B,
    and both slots free."""
    (admin_port,) = _more_ports(ports, 1)
    with (
        Vos3000(ports.backend) as vos,
        Gateway(GW_B_IP, (LOOPBACK, ports.public)) as gw_b,
    ):
        proxy = sbc({"gateways": [GW_A, GW_B], **_admin(admin_port)})
        a = _caller(sipp, ports, "a", "uac_hold.xml", GW_A_IP, "5551000").start()
        shared = call_id(a)
        done: list[SippResult] = []  # A's result once it has ended
        f = Findings(lambda: report(done or [a.result(-1)], proxy))

        acked = vos.wait_for(is_request("ACK", shared))
        assert acked, "A's call was never set up\n" + report([a.result(-1)], proxy)
        a_tag = vos.requests("INVITE", shared)[0].tag("from")
        assert a_tag, "A's INVITE has no From-tag"
        assert _wait_concurrent(admin_port, {"gw-a": 1, "gw-b": 0}) == {"gw-a": 1, "gw-b": 0}

        # B reuses the live Call-ID, with a From-tag of its own.
        b_tag = "gw-b-reuse"
        b_final = gw_b.final(gw_b.invite("5552000", call_id=shared, from_tag=b_tag))
        assert b_final is not None, "B's INVITE got no final answer\n" + proxy.output_tail()
        at_vos = {m.tag("from") for m in vos.requests("INVITE", shared)}
        f.check(at_vos == {a_tag, b_tag},
                f"INVITEs with Call-ID {shared} at VOS3000 had From-tags {sorted(map(str, at_vos))}"
                f", expected A's and B's: B's INVITE is a call of its own")
        f.check(b_final.status == 200, f"B's call answered {b_final.start!r}, expected 200")

        figures = _wait_concurrent(admin_port, {"gw-a": 1, "gw-b": 1})
        f.check(figures == {"gw-a": 1, "gw-b": 1},
                f"calls in progress after B's INVITE: {figures}; expected one each (B's "
                "INVITE must neither replace A's call nor escape counting)")

        # VOS3000 hangs up A's call: the BYE goes to A, not to B.
        bye_a = vos.hang_up(shared, a_tag)
        a_got_bye = _until("BYE at A", lambda: _received(_trace_so_far(a), method="BYE"))
        f.check(bool(a_got_bye), "VOS3000's BYE for A's call never reached A")
        a_result = _finish(a, 5 if a_got_bye else 0.5)
        done.append(a_result)
        f.check(_ok(a_result), f"A's SIPp did not complete its call ({_outcome(a_result)})")
        f.check(bool(vos.wait_for(is_final_for(bye_a), 2.0)),
                "no answer came back to VOS3000 for its BYE of A's call")
        stray = gw_b.quiet(lambda d: d.msg is not None and d.msg.method is not None, 0.5)
        f.check(not stray, "gateway B received a request meant for A's call:\n"
                + "\n".join(d.data.decode("utf-8", "replace") for d in stray[:2]))

        # VOS3000 hangs up B's call: that BYE goes to B.
        bye_b = vos.hang_up(shared, b_tag)
        b_byes = gw_b.wait_for(is_request("BYE", shared))
        f.check(any(d.msg is not None and d.msg.tag("to") == b_tag for d in b_byes),
                "VOS3000's BYE for B's call never reached B with B's tag")
        f.check(bool(vos.wait_for(is_final_for(bye_b), 2.0)),
                "no answer came back to VOS3000 for its BYE of B's call")
        figures = _wait_concurrent(admin_port, {"gw-a": 0, "gw-b": 0})
        f.check(figures == {"gw-a": 0, "gw-b": 0}, f"calls in progress at the end: {figures}")
        f.done()


def test_ten_invites_sharing_one_call_id_are_ten_calls(ports: Ports, sbc: SbcFactory) -> None:
    """max_concurrent 2; ten INVITEs share one Call-ID (each its own From-tag
    and branch): exactly 2 reach VOS3000, 8 get 503 with Retry-After."""
    retry_after = 7
    with (
        Vos3000(ports.backend) as vos,
        Gateway(GW_A_IP, (LOOPBACK, ports.public)) as gw,
    ):
        proxy = sbc({"calls": {"retry_after_s": retry_after},
                     "gateways": [{**GW_A, "limits": {"max_concurrent": 2}}]})
        shared = f"shared-{os.getpid()}@{GW_A_IP}"
        finals: list[Sip | None] = []
        for i in range(10):
            finals.append(gw.final(gw.invite("5551000", call_id=shared, from_tag=f"leg{i}")))
        gw.options_barrier()
        vos.quiet(lambda d: False, 0.3)  # let a late forwarded INVITE arrive
        at_vos = [m.tag("from") for m in vos.requests("INVITE", shared)]
    figures = _stopped_figures(proxy)["gw-a"]

    f = Findings(proxy.output_tail)
    statuses = [m.status if m is not None else None for m in finals]
    f.check(None not in statuses, f"INVITEs without a final answer: {statuses}")
    distinct = sorted(set(map(str, at_vos)))
    f.check(len(distinct) == 2,
            f"{len(distinct)} of 10 calls sharing Call-ID {shared} reached VOS3000 "
            f"(From-tags {distinct}); max_concurrent 2 allows 2")
    f.check(statuses.count(200) == 2 and statuses.count(503) == 8,
            f"answers to the ten INVITEs: {statuses}; expected 2 x 200 then 8 x 503")
    for m in finals:
        if m is not None and m.status == 503:
            f.check(m.start == f"SIP/2.0 503 {CONCURRENT_LIMIT}", f"503 reason: {m.start!r}")
            f.check(m.header("retry-after") == str(retry_after),
                    f"503 Retry-After: {m.header('retry-after')!r}")
            break
    f.check(figures.get("concurrent") == 2 and figures.get("admitted") == 2
            and figures.get("rejected_gateway_concurrent") == 8,
            f"gateway figures at stop: {figures}")
    f.done()


# --------------------------------------------------------------------------
# Finding 2: an invented To-tag names no dialog


def test_invented_to_tags_get_481_and_never_reach_vos3000(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """cps 1, max_concurrent 1, 900 blocked.  INVITEs (and a BYE) with To-tags
    of no dialog, to the blocked number: each gets 481 from sbc, none reaches
    VOS3000 (nor their ACKs), and they take neither a CPS token nor a slot: a
    real call placed right after them is answered."""
    with (
        Vos3000(ports.backend) as vos,
        Gateway(GW_A_IP, (LOOPBACK, ports.public)) as gw,
    ):
        proxy = sbc({
            "calls": {"blocked_prefixes": ["900"]},
            "gateways": [{**GW_A, "limits": {"cps": 1, "max_concurrent": 1}}],
            # Not the subject here: the offenses of the invented tags must not ban the gateway
            # before its real call.
            "bans": {"max_offenses": 100},
        })
        attack = [f"invented-{i}-{os.getpid()}@{GW_A_IP}" for i in range(4)]
        branches = [gw.invite("900123", call_id=cid, from_tag=f"atk{i}", to_tag=f"made-up-{i}")
                    for i, cid in enumerate(attack[:3])]
        branches.append(gw.request("BYE", "900123", call_id=attack[3], from_tag="atk3",
                                   to_tag="made-up-3", cseq=2))
        finals = [gw.final(b) for b in branches]
        # Right away (within the same second: the one CPS token), a real call.
        caller = _caller(sipp, ports, "real", "uac_limit.xml", GW_A_IP, "800123",
                         duration_ms=100).start()
        result = _finish(caller, SIPP_BOUND_S)
        gw.options_barrier()
        leaked = vos.quiet(lambda d: d.msg is not None and d.msg.call_id in attack)

    f = Findings(lambda: report([result], proxy))
    for i, m in enumerate(finals):
        what = "BYE" if i == 3 else "INVITE"
        f.check(m is not None and m.status == 481,
                f"{what} with an invented To-tag answered "
                f"{m.start if m is not None else 'nothing'!r}; expected 481 from sbc")
    f.check(not leaked, f"{len(leaked)} request(s) with invented To-tags reached VOS3000, "
            f"the first:\n{leaked[0].data.decode('utf-8', 'replace') if leaked else ''}")
    msgs = result.messages()
    refused = _received(msgs, status=503)
    f.check(_ok(result) and bool(_received(msgs, status=200, cseq="INVITE")) and not refused,
            "the real call right after the attack was not answered"
            + (f": {refused[0].first_line}" if refused else ""))
    f.done()


# --------------------------------------------------------------------------
# Finding 4: forged responses from the public side change nothing


def _forged_bye_ok(public: Addr, next_hop: Addr, call: str, vos_side: str, gw_side: str) -> bytes:
    """A "200 OK" to a BYE VOS3000 never sent through sbc: sbc's public Via on
    top (with a branch sbc never made), then a Via naming `next_hop`."""
    fake = os.urandom(16).hex()  # the length of sbc's own branches
    lines = [
        f"Via: SIP/2.0/UDP {public[0]}:{public[1]};branch=z9hG4bK{fake}",
        f"Via: SIP/2.0/UDP {next_hop[0]}:{next_hop[1]};branch=z9hG4bK-forged-{fake[:8]}",
        f"From: {vos_side}",
        f"To: {gw_side}",
        f"Call-ID: {call}",
        "CSeq: 1 BYE",
    ]
    return _message("SIP/2.0 200 OK", lines)


def test_forged_bye_answer_from_a_stranger_changes_nothing(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """A's call is up (max_duration_s 4).  Parties that are not the call's peer
    (an address configured nowhere, and gateway B) send sbc "200 OK" answers
    to a BYE for that call, naming as next hop a non-SIP port on the VOS3000
    host, or VOS3000's SIP port.  None is relayed anywhere, the call stays
    counted, and sbc's own duration-limit BYE still ends it on time.

    A digest account is configured, as in any deployment with registered
    phones: sbc's screen then lets datagrams of unknown sources through to the
    engine (with only address-based gateways it drops them unparsed)."""
    duration_s = 4
    admin_port, non_sip = _more_ports(ports, 2)
    with (
        Vos3000(ports.backend) as vos,
        Peer(LOOPBACK, non_sip) as other_service,
        Peer(STRANGER_IP) as stranger,
        Peer(GW_B_IP) as gw_b,
        Gateway(GW_A_IP, (LOOPBACK, ports.public)) as barrier,
    ):
        proxy = sbc({"gateways": [{**GW_A, "limits": {"max_duration_s": duration_s}}, GW_B,
                                  PHONES],
                     "auth": MD5_ONLY, **_admin(admin_port)})
        a = _caller(sipp, ports, "a", "uac_hold.xml", GW_A_IP, "5551000").start()
        call = call_id(a)
        done: list[SippResult] = []  # A's result once it has ended
        f = Findings(lambda: report(done or [a.result(-1)], proxy))
        acked = vos.wait_for(is_request("ACK", call))
        assert acked, "A's call was never set up\n" + report([a.result(-1)], proxy)
        answered_at = acked[0].at
        invite = vos.requests("INVITE", call)[0]
        vos_side = f"{invite.header('to')};tag={vos.call(call, invite.tag('from') or '').tag}"
        up = _wait_concurrent(admin_port, {"gw-a": 1})
        assert up.get("gw-a") == 1, f"A's call not counted once it is up: {up}"

        for sender in (stranger, gw_b):
            for hop in ((LOOPBACK, non_sip), (LOOPBACK, ports.backend)):
                forged = _forged_bye_ok((LOOPBACK, ports.public), hop, call, vos_side,
                                        invite.header("from"))
                sender.send(forged, (LOOPBACK, ports.public))
        barrier.options_barrier()

        figures = _concurrent(admin_port)
        f.check(figures.get("gw-a") == 1,
                f"calls in progress after the forged answers: {figures}; the forged 200 "
                "freed A's slot")
        reached = other_service.quiet(lambda d: True)
        f.check(not reached, f"the non-SIP port {LOOPBACK}:{non_sip} on the VOS3000 host got "
                f"{len(reached)} datagram(s) from {reached[0].source if reached else None}")
        relayed = [d for d in vos.received if d.msg is not None and d.msg.status is not None
                   and d.msg.cseq[1] == "BYE"]
        f.check(not relayed, f"VOS3000 got {len(relayed)} answer(s) to a BYE it never sent")

        # The call is still live: the duration limit ends it, BYE to both sides.
        left = duration_s + 3 - (time.monotonic() - answered_at)
        bye = vos.wait_for(is_request("BYE", call), max(left, 0.1))
        f.check(bool(bye), f"no duration-limit BYE at VOS3000 within {duration_s + 3}s of the "
                "answer: the forged 200 ended the call in sbc")
        if bye:
            late = bye[0].at - answered_at
            f.check(abs(late - duration_s) <= 1.5, f"duration-limit BYE {late:.2f}s after the ACK")
        a_result = _finish(a, 5 if bye else 1)
        done.append(a_result)
        f.check(_ok(a_result) and bool(_received(a_result.messages(), method="BYE")),
                "A was not sent the duration-limit BYE")
        end = _logged(proxy, "call_end", call, 2.0 if bye else 0.5)
        f.check(end is not None and end.get("reason") == "max_duration",
                f"sbc's call_end for A: {end}; expected reason max_duration")
        f.done()


# --------------------------------------------------------------------------
# Finding 5: the slot frees on the BYE request, whatever answers it


@pytest.mark.parametrize("answer", ["481", "no_answer"])
def test_slot_frees_on_the_bye_whatever_answers_it(
    answer: str, ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """max_concurrent 1.  The caller hangs up; VOS3000 answers the BYE 481, or
    never.  The slot is free once the BYE is relayed: the gateway's next call,
    placed as soon as VOS3000 has the BYE, is answered (not 503)."""
    first_call = f"first-1@{GW_A_IP}"

    def bye_answer(req: Sip) -> int | None:
        if req.call_id != first_call:
            return 200
        return 481 if answer == "481" else None

    with Vos3000(ports.backend, bye_answer) as vos:
        proxy = sbc({"gateways": [{**GW_A, "limits": {"max_concurrent": 1}}]})
        first = _caller(sipp, ports, "first", "attack_bye_unanswered.xml", GW_A_IP, "5551000",
                        duration_ms=200).start()
        assert call_id(first) == first_call
        bye = vos.wait_for(is_request("BYE", first_call))
        assert bye, "the caller's BYE never reached VOS3000\n" + report([first.result(-1)], proxy)
        second = _caller(sipp, ports, "second", "uac_limit.xml", GW_A_IP, "5551001",
                         duration_ms=100).start()
        second_result = _finish(second, SIPP_BOUND_S)
        first_result = _finish(first, STEP_S)
        reached = {m.call_id for m in vos.requests("INVITE")}
    end = _logged(proxy, "call_end", first_call, 2.0)
    figures = _stopped_figures(proxy)["gw-a"]

    f = Findings(lambda: report([first_result, second_result], proxy))
    f.check(_ok(first_result), f"the first caller's SIPp failed ({_outcome(first_result)})")
    msgs = second_result.messages()
    refused = _received(msgs, status=503)
    f.check(not refused, "the next call was refused right after the BYE: "
            + (refused[0].first_line if refused else "") + f" (VOS3000 answered the BYE with "
            f"{'481' if answer == '481' else 'nothing'}: the slot is still held)")
    f.check(_ok(second_result) and bool(_received(msgs, status=200, cseq="INVITE")),
            "the next call was not answered")
    f.check(call_id(second) in reached, "the next call's INVITE never reached VOS3000")
    f.check(end is not None and end.get("reason") == "bye_caller",
            f"sbc's call_end for the first call: {end}; expected reason bye_caller")
    f.check(figures.get("concurrent") == 0 and figures.get("rejected_gateway_concurrent", 0) == 0,
            f"gateway figures at stop: {figures}")
    f.done()


# --------------------------------------------------------------------------
# Finding 7: VOS3000 cancels a call to a registered digest phone


def test_vos3000_cancels_a_call_to_a_registered_phone(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    """A digest phone (max_concurrent 1) registers; VOS3000 calls it and
    cancels while it rings.  The phone gets the CANCEL with the INVITE's
    branch; VOS3000 gets 200 for the CANCEL and the phone's 487; the slot
    frees, so the phone's own next call is admitted under its limit."""
    proxy = sbc({
        "gateways": [{**PHONES, "limits": {"max_concurrent": 1}}],
        "auth": MD5_ONLY,
    })
    (phone_port,) = free_ports(1, PHONE_IP)
    reg = sipp("register", "register_auth.xml", local_ip=PHONE_IP, local_port=phone_port,
               calls=1, remote=(LOOPBACK, ports.public), timeout_s=20,
               extra=["-s", USER, "-au", USER, "-ap", PASSWORD])
    registered = _finish(reg.start(), 25)
    assert _ok(registered), "the phone could not register\n" + report([registered], proxy)

    # Neither SIPp may end a failed call with a BYE of its own (SIPp's default on
    # an unexpected message): a real VOS3000 does not BYE a call never answered,
    # and that BYE would free the slot this test watches.
    no_bye = ["-default_behaviors", "all,-bye"]
    phone = sipp("phone", "uas_ring.xml", local_ip=PHONE_IP, local_port=phone_port, calls=1,
                 timeout_s=SIPP_BOUND_S, extra=no_bye)
    vos = sipp("vos3000", "uac_cancel.xml", local_port=ports.backend, calls=1,
               remote=(LOOPBACK, ports.private), timeout_s=SIPP_BOUND_S,
               extra=["-s", USER, *no_bye])
    phone.start().wait_bound()
    vos_result = _finish(vos.start(), STEP_S + 10)
    cancel = _until("CANCEL at the phone",
                    lambda: _received(_trace_so_far(phone), method="CANCEL"), STEP_S)
    phone_result = _finish(phone, STEP_S if cancel else 0.5)

    f = Findings(lambda: report([vos_result, phone_result], proxy))
    vos_msgs = vos_result.messages()
    cancel_answers = [m.first_line for m in _received(vos_msgs, cseq="CANCEL") if m.status]
    f.check(cancel_answers[:1] == ["SIP/2.0 200 OK"],
            f"VOS3000's CANCEL was answered {cancel_answers}; expected the phone's 200")
    f.check(bool(cancel), "the phone never got VOS3000's CANCEL")
    invite = _received(phone_result.messages(), method="INVITE")
    f.check(bool(invite), "VOS3000's INVITE never reached the phone")
    if cancel and invite:
        def top_branch(m: TracedMessage) -> str:
            return (m.headers("Via") or [""])[0].split("branch=")[-1].split(";")[0]

        f.check(top_branch(cancel[0]) == top_branch(invite[0]),
                f"the CANCEL at the phone has branch {top_branch(cancel[0])!r}, the INVITE "
                f"{top_branch(invite[0])!r} (RFC 3261 §9.1, §16.10)")
    f.check(bool(_received(vos_msgs, status=487, cseq="INVITE")),
            "the phone's 487 never reached VOS3000")
    f.check(_ok(vos_result), f"VOS3000's SIPp failed its call ({_outcome(vos_result)})")
    f.check(_ok(phone_result), f"the phone's SIPp failed its call ({_outcome(phone_result)})")

    # The slot is free: the phone's own call is admitted under max_concurrent 1.
    vos2 = sipp("vos3000-2", "uas.xml", local_port=ports.backend, calls=1, timeout_s=30)
    out = sipp("phone-out", "uac_auth.xml", local_ip=PHONE_IP, local_port=phone_port, calls=1,
               remote=(LOOPBACK, ports.public), timeout_s=30, duration_ms=100,
               recv_timeout_ms=5000, extra=["-s", "5551234", "-au", USER, "-ap", PASSWORD,
                      "-auth_uri", f"5551234@{LOOPBACK}:{ports.public}"])
    vos2.start().wait_bound()
    out_result = _finish(out.start(), 20)
    refused = _received(out_result.messages(), status=503)
    f.check(not refused and _ok(out_result),
            "the phone's next call was not admitted: "
            + (refused[0].first_line if refused else _outcome(out_result))
            + " (the cancelled call still holds the slot)")
    vos2_result = _finish(vos2, 5 if not refused else 0.5)
    if not refused:
        f.check(_ok(vos2_result), "VOS3000 did not complete the phone's next call")
    figures = _stopped_figures(proxy).get("phones", {})
    f.check(figures.get("concurrent") == 0, f"phones' figures at stop: {figures}")
    f.done()
