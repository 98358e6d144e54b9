"""The RFC 4475 torture messages through the engine, in memory (issue 14 item 6).

The messages of §3.1.2 (invalid) and §3.3 (well-formed, yet refused by a
proxy's own rules or passed on), and six of §3.1.1 (valid: strictness must
not refuse them), byte for byte as the RFC's appendix has them
(tests/data/rfc4475/), each sent from an IP gateway and from an unknown
source, over UDP and over TCP. Per file: what the sender gets (a reply naming
the fault, a silent drop by reason, or the message forwarded, for those §3.3
calls valid), and that nothing invalid reaches VOS3000, then or later: the
engine's timers run on for minutes, and nothing is sent again.

Over TCP the bytes go through a StreamFramer first, as sbc.io.tcp
does: a Content-Length that cannot frame the stream closes the connection
(after the refusal, to a gateway), and one larger than the bytes sent leaves
sbc waiting for the rest (RFC 4475 §3.1.2.2: there is not much else to do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sbc.core.screen.bans import BanTable
from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayInfo, GatewayTable
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_UDP, Send, Source
from sbc.sip import SipParseError, StreamFramer, parse_message

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
GATEWAY_HOST = "192.0.2.10"
STRANGER_HOST = "203.0.113.66"


@dataclass(frozen=True)
class Got:
    """What one message gets: `status` and `phrase` of sbc's reply (0: none),
    `drop` the reason of a silent drop, `forwarded` when it goes to VOS3000,
    `closed` when a stream is closed after it, `waiting` when sbc waits for
    more of the stream."""

    status: int = 0
    phrase: str = ""
    drop: str = ""
    forwarded: bool = False
    closed: bool = False
    waiting: bool = False


def refused(status: int, phrase: str, closed: bool = False) -> Got:
    return Got(status, phrase, closed=closed)


MALFORMED = Got(drop="malformed")
FORWARDED = Got(forwarded=True)
WAITING = Got(waiting=True)
CLOSED = Got(closed=True)


@dataclass(frozen=True)
class Case:
    section: str
    gateway_udp: Got
    gateway_tcp: Got | None = None  # None: as over UDP
    stranger_udp: Got = MALFORMED
    stranger_tcp: Got | None = None  # None: as over UDP


BAD_REQUEST_LINE_SPACE = refused(400, "Extra Space In Request-Line")
# RFC 4475 §3.1.2: "invalid messages". None may reach VOS3000.
INVALID = {
    "badinv01": Case("3.1.2.1", refused(400, "Bad Via")),
    "clerr": Case("3.1.2.2", refused(400, "Body Shorter Than Content-Length"), WAITING,
                  stranger_tcp=WAITING),
    "ncl": Case("3.1.2.3", refused(400, "Bad Content-Length"),
                refused(400, "Bad Content-Length", closed=True), stranger_tcp=CLOSED),
    "scalar02": Case("3.1.2.4", refused(400, "Bad Max-Forwards")),
    "scalarlg": Case("3.1.2.5", MALFORMED),  # a response: never answered
    "quotbal": Case("3.1.2.6", refused(400, "Bad Quoted String")),
    "ltgtruri": Case("3.1.2.7", refused(400, "Request-URI In Angle Brackets")),
    "lwsruri": Case("3.1.2.8", refused(400, "Space In Request-URI")),
    "lwsstart": Case("3.1.2.9", BAD_REQUEST_LINE_SPACE),
    "trws": Case("3.1.2.10", BAD_REQUEST_LINE_SPACE),
    "escruri": Case("3.1.2.11", refused(400, "Headers In Request-URI")),
    "baddate": Case("3.1.2.12", refused(400, "Bad Date")),
    "regbadct": Case("3.1.2.13", refused(400, "Bad Name-Addr")),
    "badaspec": Case("3.1.2.14", refused(400, "Bad Name-Addr")),
    "baddn": Case("3.1.2.15", refused(400, "Bad Display Name")),
    "badvers": Case("3.1.2.16", refused(505, "Version Not Supported")),
    "mismatch01": Case("3.1.2.17", refused(400, "CSeq Method Mismatch")),
    "mismatch02": Case("3.1.2.18", refused(400, "CSeq Method Mismatch")),
    "bigcode": Case("3.1.2.19", MALFORMED),  # a response: never answered
}
# RFC 4475 §3.3: application-layer semantics. Those a proxy refuses must not
# reach VOS3000 either; the others are VOS3000's to judge, from a gateway.
STRANGER_VALID = Got(drop="unknown_source")
SEMANTIC = {
    "insuf": Case("3.3.1", refused(400, "Missing Required Header")),
    "unkscm": Case("3.3.2", refused(416, "Unsupported URI Scheme")),
    "novelsc": Case("3.3.3", refused(416, "Unsupported URI Scheme")),
    "unksm2": Case("3.3.4", FORWARDED, stranger_udp=STRANGER_VALID),
    "bext01": Case("3.3.5", refused(420, "Bad Extension")),
    "invut": Case("3.3.6", FORWARDED, stranger_udp=STRANGER_VALID),
    "regaut01": Case("3.3.7", FORWARDED, stranger_udp=STRANGER_VALID),
    "multi01": Case("3.3.8", refused(400, "Duplicate CSeq")),
    "mcl01": Case("3.3.9", refused(400, "Duplicate Content-Length"),
                  refused(400, "Duplicate Content-Length", closed=True), stranger_tcp=CLOSED),
    # A 200 whose next Via is a broadcast address: not a response to anything
    # sbc sent, so it goes nowhere (least of all to 255.255.255.255).
    "bcast": Case("3.3.10", Got(drop="via_not_ours"), stranger_udp=Got(drop="via_not_ours")),
    "zeromf": Case("3.3.11", refused(483, "Too Many Hops"), stranger_udp=STRANGER_VALID),
    "cparam01": Case("3.3.12", FORWARDED, stranger_udp=STRANGER_VALID),
    "cparam02": Case("3.3.13", FORWARDED, stranger_udp=STRANGER_VALID),
    "regescrt": Case("3.3.14", FORWARDED, stranger_udp=STRANGER_VALID),
    "sdp01": Case("3.3.15", FORWARDED, stranger_udp=STRANGER_VALID),
}
# RFC 4475 §3.1.1: valid messages, some of them (the short ones). Strictness
# must not cost these: each parses, and goes where sbc's rules send it.
VALID = {
    # Its To has a tag: a request in a dialog sbc does not know (RFC 3261 §12.2.2).
    "wsinv": Case("3.1.1.1", refused(481, "Call/Transaction Does Not Exist"),
                  stranger_udp=STRANGER_VALID),
    # A method sbc does not forward (405), with a quoted NUL, BEL and DEL in To.
    "intmeth": Case("3.1.1.2", refused(405, "Method Not Allowed"), stranger_udp=STRANGER_VALID),
    "escnull": Case("3.1.1.4", FORWARDED, stranger_udp=STRANGER_VALID),
    "lwsdisp": Case("3.1.1.6", FORWARDED, stranger_udp=STRANGER_VALID),
    "transports": Case("3.1.1.10", FORWARDED, stranger_udp=STRANGER_VALID),
    "unreason": Case("3.1.1.12", Got(drop="via_not_ours"), stranger_udp=Got(drop="via_not_ours")),
}
CASES = {**INVALID, **SEMANTIC, **VALID}
TRANSPORTS = {"udp": PUBLIC_UDP, "tcp": PUBLIC_TCP}
SENDERS = {"gateway": GATEWAY_HOST, "stranger": STRANGER_HOST}


def make_engine() -> Engine:
    return Engine(ProxySettings(), secret=b"k" * 16,
                  gateways=GatewayTable([("gw", [GATEWAY_HOST], [])]),
                  gateway_info={"gw": GatewayInfo("gw", 0, "pass")},
                  bans=BanTable(max_offenses=1000))


def expected(case: Case, sender: str, transport: str) -> Got:
    if sender == "gateway":
        return case.gateway_tcp if transport == "tcp" and case.gateway_tcp else case.gateway_udp
    return case.stranger_tcp if transport == "tcp" and case.stranger_tcp else case.stranger_udp


def deliver(eng: Engine, data: bytes, src: Source, now: float) -> tuple[Got, list[Send]]:
    """`data` into the engine as the transport of `src` would hand it over."""
    if src.channel == PUBLIC_UDP:
        return judged(eng, [data], src, now)
    framer = StreamFramer(eng.s.max_tcp_message)
    try:
        frames = framer.feed(data)
    except SipParseError as e:  # sbc.io.tcp: refuse (to a gateway), then close
        sends = eng.refuse_unframed(framer.pending, src, e, now)
        if not sends:
            return CLOSED, []
        return refused(*status_phrase(sends[0][2]), closed=True), sends
    if not [f for f in frames if f]:
        return WAITING, []
    return judged(eng, [f for f in frames if f], src, now)


def judged(eng: Engine, frames: list[bytes], src: Source, now: float) -> tuple[Got, list[Send]]:
    (frame,) = frames  # one message per file
    v = eng.receive(frame, src, now)
    if any(channel >= PRIVATE for channel, _, _ in v.sends):
        return FORWARDED, v.sends
    if v.kind == "drop":
        return Got(drop=v.reason), v.sends  # type: ignore[union-attr]
    assert v.kind == "reply", v
    return refused(*status_phrase(v.sends[0][2])), v.sends


def status_phrase(reply: bytes) -> tuple[int, str]:
    line = reply.split(b"\r\n", 1)[0].decode()
    assert line.startswith("SIP/2.0 ")
    return int(line[8:11]), line[12:]


def test_the_corpus_is_here_byte_for_byte() -> None:
    """40 files, CRLF line ends kept (tests/data/rfc4475/.gitattributes)."""
    names = sorted(p.stem for p in DATA.glob("*.dat"))
    assert names == sorted(CASES)
    for name in names:
        data = (DATA / f"{name}.dat").read_bytes()
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.count(b"\n") == head.count(b"\r\n") > 3, name
    # Spot checks of what the RFC describes in words.
    assert (DATA / "lwsstart.dat").read_bytes().startswith(b"INVITE  sip:user@example.com  SIP/2.0\r\n")
    assert (DATA / "trws.dat").read_bytes().startswith(
        b"OPTIONS sip:remote-target@example.com SIP/2.0  \r\n")
    assert b"\r\nExpires: 1" + b"0" * 88 + b"\r\n" in (DATA / "scalar02.dat").read_bytes()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("sender", SENDERS)
@pytest.mark.parametrize("name", CASES)
def test_what_each_message_gets(name: str, sender: str, transport: str) -> None:
    case = CASES[name]
    data = (DATA / f"{name}.dat").read_bytes()
    eng = make_engine()
    src = Source(TRANSPORTS[transport], SENDERS[sender], 5099 if transport == "udp" else 40123)
    got, sends = deliver(eng, data, src, 0.0)
    assert got == expected(case, sender, transport), f"RFC 4475 §{case.section} {name}"

    if got.forwarded:
        return  # VOS3000 judges it; its INVITE transaction is the engine's to retransmit
    # Anything sbc says goes back to the sender only, on the flow it came by.
    assert [s[:2] for s in sends] == ([(src.channel, (src.host, src.port))] if got.status else [])
    if got.status:
        reply = sends[0][2]
        assert reply.endswith(b"\r\nContent-Length: 0\r\n\r\n")
        call_id = [ln for ln in data.split(b"\r\n\r\n")[0].split(b"\r\n") if ln.startswith(b"Call-ID:")]
        assert not call_id or call_id[0] + b"\r\n" in reply
        if got.status == 420:  # RFC 3261 §16.3 step 5: the option tags sbc lacks
            assert b"\r\nUnsupported: noProxiesSupportThis, norDoAnyProxiesSupportThis\r\n" in reply
    # Nothing of it is kept, so nothing is ever sent again, to anyone.
    assert not eng.txs and len(eng.dialogs) == 0
    for now in (0.5, 1.0, 4.0, 32.0, 64.0, 300.0):
        assert eng.on_timer(now) == [], name


@pytest.mark.parametrize("name", VALID)
def test_a_valid_message_parses_whole(name: str) -> None:
    data = (DATA / f"{name}.dat").read_bytes()
    msg = parse_message(data)
    assert msg.to_bytes() == data[: len(msg.to_bytes())]  # up to Content-Length (dblreq)
    (frame, *_) = StreamFramer().feed(data)
    assert parse_message(frame, stream=True).to_bytes() == frame


@pytest.mark.parametrize("name", INVALID)
def test_an_invalid_message_is_counted_and_an_offense_of_its_sender(name: str) -> None:
    data = (DATA / f"{name}.dat").read_bytes()
    for host in SENDERS.values():
        eng = make_engine()
        got, _ = deliver(eng, data, Source(PUBLIC_UDP, host, 5099), 0.0)
        assert sum(eng.tally.parse_errors.values()) == 1, name
        assert eng.bans.offenses.count(host, 0.0) == 1, name
        if got.status:  # gateways only
            assert host == GATEWAY_HOST and eng.tally.refusals["malformed"] == 1
        else:
            assert eng.tally.dropped["malformed"] == 1


def test_nothing_invalid_is_forwarded_in_any_order_or_mix() -> None:
    """Every file, from both senders over both transports, into one engine in
    a row (interleaved with a valid call's INVITE): VOS3000 gets exactly the
    messages §3.3 lets through, from the gateway, and nothing else, ever."""
    eng = make_engine()
    to_vos: list[bytes] = []
    now = 0.0
    for name, case in CASES.items():
        data = (DATA / f"{name}.dat").read_bytes()
        for sender, host in SENDERS.items():
            for transport, channel in TRANSPORTS.items():
                now += 0.01
                _, sends = deliver(eng, data, Source(channel, host, 7000), now)
                sent = [out for ch, _, out in sends if ch >= PRIVATE]
                to_vos += sent
                # (An INVITE forwarded over UDP is, over TCP, its retransmission: absorbed.)
                assert not sent or (name not in INVALID
                                    and expected(case, sender, transport).forwarded), name
    forwarded = {parse_message(out).call_id.split(b".")[0].decode() for out in to_vos}
    assert forwarded == {n for n, c in CASES.items() if c.gateway_udp.forwarded}
    assert not forwarded & set(INVALID)
    # Retransmissions go to VOS3000 only for the INVITEs it was given (invut,
    # sdp01), and only copies of what it already got.
    for t in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5, 64.0, 200.0):
        for channel, _, out in eng.on_timer(now + t):
            if channel >= PRIVATE:
                assert out in to_vos
