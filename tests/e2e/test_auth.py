"""Who may send calls through sbc, end to end with real clients.

    SIPp / sipsak / baresip / raw UDP client ──► sbc public ─ sbc private or egress ──► VOS3000 stand-in

Gateways are known by source address (`ip`), by address and port
(`ip_port`), or by digest credentials; each may have its own egress socket
towards VOS3000.  Digest accounts register with sbc itself, and VOS3000's
calls to them are sent where they registered from, also after a restart.
Everything else is an unknown source: dropped without a word, or refused
with 403 when configured, and never answered anywhere but at the packet's
source address, within a reply budget.

VOS3000 is played by SIPp where only the call flow matters, and by a Python
UDP socket (`UdpPeer`) where the source address of each datagram matters:
SIPp's message traces do not record it.  "Nothing arrives" is checked by
watching every socket involved until a deadline.

Over UDP a challenge offers the first configured algorithm only (MD5 by
default; a forged source must not get a large answer, see README
"Reflection and amplification"); over TCP and TLS one challenge per
algorithm (MD5, then SHA-256).  SIPp 3.6 and Debian's sipsak compute MD5
digests only and read only the first challenge header: the default serves
them.  baresip 1.0 (its libre) reads every challenge and gives up on the
whole 401/407 when any of them is not MD5, in whatever order: over UDP the
default serves it, over TCP it needs `auth.algorithms: [MD5]`, as the README
tells operators; its call tests configure that.  The raw client computes its
answers with `sbc.sip.digest`, and the attacks: an answer moved to another
Request-URI, guessed user names, a borrowed caller ID.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from loadtest.harness import (
    LOOPBACK,
    SbcProcess,
    Sipp,
    SippResult,
    TracedMessage,
    end_process,
    free_ports,
    report,
    run_pair,
    sipsak_binary,
)
from sbc.sip.digest import canonical_algorithm, expected_response, ha1, parse_credentials

from .conftest import Ports, SbcFactory, SippFactory

pytestmark = pytest.mark.e2e

Addr = tuple[str, int]

# Loopback addresses with a role in these tests (all in 127.0.0.0/8).
GATEWAY_IP = "127.0.0.2"  # a carrier known by its address
STRANGER_IP = "127.0.0.3"  # configured nowhere
PBX_IP = "127.0.0.4"  # a PBX known by address and port
PHONE_IP = "127.0.0.5"  # a digest account's phone
SPOOFER_IP = "127.0.0.6"  # an unknown source sending forged Vias
FLOODER_IP = "127.0.0.7"  # an unknown source sending a burst
VICTIM_IP = "127.0.0.9"  # the third party a forged Via names

USER, PASSWORD = "1001", "secret"
PHONES = {"name": "phones", "digest": [{"username": USER, "password": PASSWORD}]}
# baresip 1.0 refuses a 401/407 that offers any algorithm but MD5 (see above);
# over UDP the default offers MD5 only, over TCP and TLS it needs this.
BARESIP_AUTH = {"algorithms": ["MD5"]}

QUIET_S = 2.0  # how long a socket is watched to show that nothing arrives there


# --------------------------------------------------------------------------
# A UDP socket standing in for VOS3000, a phone, or a third party


@dataclass(frozen=True)
class Datagram:
    data: bytes
    source: Addr
    at: float  # time.monotonic() when it was read

    @property
    def msg(self) -> TracedMessage:
        return TracedMessage("", "UDP", "received", self.data.decode("utf-8", "replace"))


Answer = Callable[[TracedMessage], list[bytes]]


class UdpPeer:
    """A UDP socket on a loopback address, read by one thread.

    Every datagram is kept with its source address (at most `limit`).  When
    `answer` is given, what it returns for a message is sent back to the
    datagram's source.  Use as a context manager: the thread and the socket
    end with the block.
    """

    def __init__(
        self, host: str, port: int = 0, answer: Answer | None = None, limit: int = 5000
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.05)
        self.address: Addr = self.sock.getsockname()
        self._answer = answer
        self._limit = limit
        self._got: list[Datagram] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"udp-{host}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            got = Datagram(data, (source[0], source[1]), time.monotonic())
            with self._lock:
                if len(self._got) < self._limit:
                    self._got.append(got)
            if self._answer is not None:
                for out in self._answer(got.msg):
                    self.sock.sendto(out, source)

    @property
    def received(self) -> list[Datagram]:
        with self._lock:
            return list(self._got)

    def send(self, data: bytes, dest: Addr) -> None:
        self.sock.sendto(data, dest)

    def wait_for(
        self, match: Callable[[Datagram], bool], timeout: float, count: int = 1, start: int = 0
    ) -> list[Datagram]:
        """Datagrams from index `start` on that `match`, once `count` of them
        are in or the deadline has passed."""
        deadline = time.monotonic() + timeout
        while True:
            hits = [d for d in self.received[start:] if match(d)]
            if len(hits) >= count or time.monotonic() >= deadline:
                return hits
            time.sleep(0.01)


def _assert_nothing_arrives(peers: dict[str, UdpPeer], within: float = QUIET_S) -> None:
    """Watch every socket until the deadline; fail at the first datagram."""
    deadline = time.monotonic() + within
    while True:
        for role, peer in peers.items():
            got = peer.received
            if got:
                pytest.fail(
                    f"{role} at {peer.address[0]}:{peer.address[1]} got {len(got)} datagram(s), "
                    f"the first from {got[0].source}:\n{got[0].data.decode('utf-8', 'replace')}",
                    pytrace=False,
                )
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------
# SIP text


def _head(msg: TracedMessage) -> list[str]:
    return msg.text.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")


def _response(
    req: TracedMessage,
    status: int,
    reason: str,
    to_tag: str | None = None,
    extra: Sequence[str] = (),
    record_route: bool = False,
) -> bytes:
    """A response copying Via, From, To, Call-ID, CSeq (and Record-Route) as
    they are in the request (RFC 3261 §8.2.6.2, §12.1.1)."""
    keep = {"via", "from", "call-id", "cseq"} | ({"record-route"} if record_route else set())
    lines = [f"SIP/2.0 {status} {reason}"]
    for line in _head(req)[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name == "to":
            lines.append(line if to_tag is None or ";tag=" in line else f"{line};tag={to_tag}")
        elif name in keep:
            lines.append(line)
    lines += [*extra, "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def vos3000_answer(contact: Addr) -> Answer:
    """VOS3000 answering every call at once: 100, 180, 200; 200 for BYE and
    the rest; nothing for ACK.  Retransmissions get the same answers."""
    contact_line = f"Contact: <sip:vos3000@{contact[0]}:{contact[1]}>"

    def answer(req: TracedMessage) -> list[bytes]:
        if req.method is None or req.method == "ACK":
            return []
        call_id = req.header("Call-ID") or ""
        tag = "vos-" + hashlib.sha256(call_id.encode()).hexdigest()[:10]
        if req.method == "INVITE":
            return [
                _response(req, 100, "Trying"),
                _response(req, 180, "Ringing", tag, (contact_line,), record_route=True),
                _response(req, 200, "OK", tag, (contact_line,), record_route=True),
            ]
        return [_response(req, 200, "OK", tag)]

    return answer


_branches = itertools.count(1)


def _request(
    method: str,
    ruri: str,
    client: Addr,
    *,
    call_id: str,
    cseq: int,
    via: Addr | None = None,
    rport: bool = True,
    extra: Sequence[str] = (),
) -> bytes:
    """An out-of-dialog request from `client`; its Via names `via` (default: the client)."""
    via_host, via_port = via or client
    branch = f"z9hG4bK-auth-{os.getpid()}-{next(_branches)}"
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {via_host}:{via_port};branch={branch}" + (";rport" if rport else ""),
        "Max-Forwards: 70",
        f"From: <sip:{USER}@{LOOPBACK}>;tag=t{cseq}-{os.getpid()}",
        f"To: <sip:{USER}@{LOOPBACK}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:{USER}@{client[0]}:{client[1]}>",
        *extra,
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _challenges(msg: TracedMessage, header: str) -> list[dict[str, str]]:
    """The challenge header lines of a 401/407, parsed; each must offer qop="auth"."""
    values = msg.headers(header)
    assert values, f"no {header} in:\n{msg.text}"
    for value in values:
        # RFC 7616 §3.3: without qop there is no nonce-count, and no replay protection.
        assert 'qop="auth"' in value, f'a challenge without qop="auth": {value}'
    return [parse_credentials(v.encode()) for v in values]


def _authorization(
    challenge: dict[str, str],
    method: str,
    uri: str,
    nc: int,
    cnonce: str,
    username: str = USER,
    password: str = PASSWORD,
) -> str:
    """A Digest answer to `challenge` with qop=auth (RFC 7616 §3.4)."""
    algorithm = canonical_algorithm(challenge.get("algorithm"))
    assert algorithm is not None, challenge
    realm, nonce = challenge["realm"], challenge["nonce"]
    count = f"{nc:08x}"
    response = expected_response(
        algorithm,
        ha1(algorithm, username, realm, password),
        nonce,
        method,
        uri,
        "auth",
        count,
        cnonce,
    )
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'algorithm={algorithm}, qop=auth, nc={count}, cnonce="{cnonce}", response="{response}"'
    )


class Phone:
    """A digest account's phone speaking raw UDP: one REGISTER dialog (Call-ID)."""

    def __init__(self, peer: UdpPeer, server: Addr) -> None:
        self.peer = peer
        self.server = server
        self.uri = f"sip:{server[0]}:{server[1]}"
        self.call_id = f"reg-{os.getpid()}-{time.monotonic_ns()}@{peer.address[0]}"
        self.cseq = 0
        self.seen: list[TracedMessage] = []

    def register(self, authorization: str | None = None) -> bytes:
        self.cseq += 1
        extra = ["Expires: 600"]
        if authorization is not None:
            extra.append(f"Authorization: {authorization}")
        return _request(
            "REGISTER",
            self.uri,
            self.peer.address,
            call_id=self.call_id,
            cseq=self.cseq,
            extra=extra,
        )

    def exchange(self, data: bytes, timeout: float = 3.0) -> TracedMessage:
        """Send `data` and return the first final response to it that arrives afterwards."""
        cseq = next(ln for ln in data.decode().split("\r\n") if ln.startswith("CSeq:"))[5:].strip()
        start = len(self.peer.received)
        self.peer.send(data, self.server)
        hits = self.peer.wait_for(
            lambda d: (d.msg.status or 0) >= 200 and d.msg.header("CSeq") == cseq,
            timeout,
            start=start,
        )
        assert hits, f"no final response to CSeq {cseq} within {timeout:.0f}s"
        assert all(d.source == self.server for d in hits), [d.source for d in hits]
        self.seen.append(hits[0].msg)
        return hits[0].msg


# --------------------------------------------------------------------------
# SIPp and sipsak


def _more_ports(ports: Ports, count: int, host: str = LOOPBACK) -> list[int]:
    """`count` free ports on `host`, none of them one of the test's named ports."""
    taken = {ports.public, ports.private, ports.backend, ports.caller}
    return [p for p in free_ports(count + len(taken), host) if p not in taken][:count]


def _caller(
    sipp: SippFactory,
    name: str,
    ports: Ports,
    local: Addr,
    scenario: str = "uac.xml",
    calls: int = 1,
    **kwargs: Any,
) -> Sipp:
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("duration_ms", 100)
    return sipp(
        name,
        scenario,
        local_ip=local[0],
        local_port=local[1],
        calls=calls,
        remote=(LOOPBACK, ports.public),
        **kwargs,
    )


def _sipp_auth_uri(ports: Ports, service: str = "service") -> list[str]:
    """SIPp's digest `uri` is `sip:remote_ip:remote_port` unless told: for an
    INVITE that is not the Request-URI (`sip:[service]@...`), and sbc answers
    such an answer 400 (RFC 7616 §3.4.6). A phone hashes its Request-URI."""
    return ["-auth_uri", f"{service}@{LOOPBACK}:{ports.public}"]


def _stranger(sipp: SippFactory, name: str, ports: Ports, local: Addr) -> SippResult:
    """A caller sbc must not answer: one INVITE, given up after 2 s without a reply."""
    proc = _caller(sipp, name, ports, local, timeout_s=10, recv_timeout_ms=2000)
    try:
        return proc.start().wait()
    finally:
        proc.stop()


def _vos3000_sipp(sipp: SippFactory, ports: Ports, calls: int = 1, name: str = "vos3000") -> Sipp:
    return sipp(name, "uas.xml", local_port=ports.backend, calls=calls, timeout_s=30)


def _assert_calls(calls: int, results: Iterable[SippResult], proxy: SbcProcess) -> None:
    results = list(results)
    if not all(r.returncode == 0 and r.successful == calls and r.failed == 0 for r in results):
        summary = ", ".join(
            f"{r.name}: exit {r.returncode}, {r.successful} ok, {r.failed} failed" for r in results
        )
        pytest.fail(
            f"expected {calls} successful call(s) on each side; {summary}\n\n"
            + report(results, proxy),
            pytrace=False,
        )


def _assert_unanswered(result: SippResult, proxy: SbcProcess) -> None:
    heard = [m for m in result.messages() if m.direction == "received"]
    assert result.returncode != 0 and result.successful == 0 and not heard, (
        f"an unknown caller got {len(heard)} message(s) back\n" + report([result], proxy)
    )
    assert any(m.method == "INVITE" for m in result.messages()), report([result], proxy)


def _received(result: SippResult, method: str) -> list[TracedMessage]:
    return [m for m in result.messages() if m.direction == "received" and m.method == method]


def _has_credentials(data: bytes) -> bool:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        if line.split(b":", 1)[0].strip().lower() in (b"authorization", b"proxy-authorization"):
            return True
    return False


def _sipsak(args: Sequence[str], cwd: Path, timeout: float = 30.0) -> tuple[int, str]:
    binary = sipsak_binary()
    if binary is None:
        pytest.fail("sipsak not installed (apt-get install sipsak, or run `make test`)")
    # -k: listen on loopback only (sipsak binds every address otherwise).
    cmd = [binary, "-k", LOOPBACK, *args]
    done = subprocess.run(
        cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
    )
    out = done.stdout.decode("utf-8", "replace") + done.stderr.decode("utf-8", "replace")
    return done.returncode, f"$ {' '.join(cmd)}\n(exit {done.returncode})\n{out}"


# --------------------------------------------------------------------------
# 1. Gateways by address


def test_ip_gateway_calls_and_unknown_address_gets_nothing(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    proxy = sbc({"gateways": [{"name": "carrier", "ip": [GATEWAY_IP]}]})
    uas, uac = run_pair(
        _vos3000_sipp(sipp, ports), _caller(sipp, "carrier", ports, (GATEWAY_IP, ports.caller))
    )
    _assert_calls(1, [uac, uas], proxy)

    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        stranger = _stranger(sipp, "stranger", ports, (STRANGER_IP, ports.caller))
        _assert_unanswered(stranger, proxy)
        _assert_nothing_arrives({"VOS3000": vos3000}, within=0.5)


def test_ip_port_gateway_only_from_that_port(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    known, other = free_ports(2, PBX_IP)
    proxy = sbc({"gateways": [{"name": "pbx", "ip_port": [f"{PBX_IP}:{known}"]}]})
    uas, uac = run_pair(_vos3000_sipp(sipp, ports), _caller(sipp, "pbx", ports, (PBX_IP, known)))
    _assert_calls(1, [uac, uas], proxy)

    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        stranger = _stranger(sipp, "pbx-other-port", ports, (PBX_IP, other))
        _assert_unanswered(stranger, proxy)
        _assert_nothing_arrives({"VOS3000": vos3000}, within=0.5)


# --------------------------------------------------------------------------
# 3. Each gateway's own egress towards VOS3000


def test_each_gateway_reaches_vos3000_from_its_egress(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    egress_a, egress_b, port_a, port_b = _more_ports(ports, 4)
    proxy = sbc(
        {
            "gateways": [
                {
                    "name": "carrier-a",
                    "ip": [GATEWAY_IP],
                    "egress": {"host": LOOPBACK, "port": egress_a},
                },
                {
                    "name": "pbx-b",
                    "digest": [{"username": "2001", "password": "b-secret"}],
                    "egress": {"host": LOOPBACK, "port": egress_b},
                },
            ],
        }
    )
    calls = 2
    with UdpPeer(LOOPBACK, ports.backend, vos3000_answer((LOOPBACK, ports.backend))) as vos3000:
        a = _caller(sipp, "carrier-a", ports, (GATEWAY_IP, port_a), calls=calls)
        b = _caller(
            sipp,
            "pbx-b",
            ports,
            (STRANGER_IP, port_b),
            "uac_auth.xml",
            calls=calls,
            extra=["-au", "2001", "-ap", "b-secret", *_sipp_auth_uri(ports)],
        )
        try:
            a.start()
            b.start()
            results = [a.wait(), b.wait()]
        finally:
            a.stop()
            b.stop()
        _assert_calls(calls, results, proxy)
        got = vos3000.received

    expected = {GATEWAY_IP: (LOOPBACK, egress_a), STRANGER_IP: (LOOPBACK, egress_b)}
    invites: dict[str, int] = {GATEWAY_IP: 0, STRANGER_IP: 0}
    for d in got:
        msg = d.msg
        assert not _has_credentials(d.data), f"credentials reached VOS3000:\n{msg.text}"
        caller_ip = (msg.header("Call-ID") or "").rpartition("@")[2]
        assert caller_ip in expected, f"a request of no known call at VOS3000:\n{msg.text}"
        egress = expected[caller_ip]
        assert d.source == egress, (
            f"{msg.method} of {caller_ip} came from {d.source}, not its egress {egress}:\n{msg.text}"
        )
        assert msg.headers("Via")[0].startswith(f"SIP/2.0/UDP {egress[0]}:{egress[1]};"), msg.text
        if msg.method == "INVITE":
            invites[caller_ip] += 1
            rr = msg.headers("Record-Route")
            assert rr and rr[0].startswith(f"<sip:{egress[0]}:{egress[1]};"), (
                f"the Record-Route facing VOS3000 is not the gateway's egress:\n{msg.text}"
            )
            assert msg.header("CSeq") == ("1 INVITE" if caller_ip == GATEWAY_IP else "2 INVITE")
    assert invites == {GATEWAY_IP: calls, STRANGER_IP: calls}, invites
    methods = sorted({d.msg.method or "" for d in got})
    assert methods == ["ACK", "BYE", "INVITE"], methods


# --------------------------------------------------------------------------
# 4. Digest with sipsak (default configuration)


def _sipsak_invite_file(tmp_path: Path, ports: Ports, listen: int, name: str) -> Path:
    # sipsak's own invite mode (-I) crashes before sending anything in the
    # packaged 0.9.8.1; its default mode sends an INVITE read from a file and
    # answers a 407 the same way.
    invite = tmp_path / f"{name}.sip"
    invite.write_text(
        f"INVITE sip:5551234@{LOOPBACK}:{ports.public} SIP/2.0\r\n"
        f"From: <sip:{USER}@{LOOPBACK}>;tag=sipsak-1\r\n"
        f"To: <sip:5551234@{LOOPBACK}:{ports.public}>\r\n"
        f"Call-ID: sipsak-{name}-{os.getpid()}@{LOOPBACK}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:{USER}@{LOOPBACK}:{listen}>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n",
        encoding="ascii",
    )
    return invite


def test_sipsak_registers_with_the_default_challenge(
    ports: Ports, sbc: SbcFactory, tmp_path: Path
) -> None:
    """`sipsak -U -a PASSWORD`: it answers the first challenge, with MD5, and
    calls itself `1001@` (the user of the URI and an empty domain)."""
    proxy = sbc({"gateways": [PHONES]})
    (listen,) = _more_ports(ports, 1)
    target = f"sip:{USER}@{LOOPBACK}:{ports.public}"

    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        rc, out = _sipsak(
            ["-vvv", "-U", "-s", target, "-a", PASSWORD, "-l", str(listen), "-x", "120"],
            tmp_path,
        )
        assert rc == 0, out + proxy.output_tail()
        assert "SIP/2.0 401" in out and "SIP/2.0 200 OK" in out, out
        assert f'username="{USER}@"' in out, out
        assert f"Contact: <sip:{USER}@{LOOPBACK}:{listen}>;expires=120" in out, out

        # Named with -u the same, and its password wrong: 403.
        rc, out = _sipsak(
            ["-vvv", "-U", "-s", target, "-a", "not-the-password", "-u", USER,
             "-l", str(listen), "-x", "120"],
            tmp_path,
        )
        assert rc == 1, out
        assert "SIP/2.0 403" in out and "SIP/2.0 200" not in out, out
        # REGISTER is answered by sbc: VOS3000 never sees one.
        _assert_nothing_arrives({"VOS3000": vos3000}, within=0.2)


def test_sipsak_calls_and_a_wrong_password_reaches_nothing(
    ports: Ports, sbc: SbcFactory, tmp_path: Path
) -> None:
    proxy = sbc({"gateways": [PHONES]})
    (listen,) = _more_ports(ports, 1)
    target = f"sip:5551234@{LOOPBACK}:{ports.public}"

    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        wrong = _sipsak_invite_file(tmp_path, ports, listen, "wrong")
        rc, out = _sipsak(
            ["-vvv", "-f", str(wrong), "-s", target, "-a", "not-the-password", "-u", USER,
             "-l", str(listen)],
            tmp_path,
        )
        assert rc != 0, out
        assert "SIP/2.0 407" in out and "SIP/2.0 403" in out and "SIP/2.0 200" not in out, out
        _assert_nothing_arrives({"VOS3000": vos3000}, within=1.0)

    answer = vos3000_answer((LOOPBACK, ports.backend))
    with UdpPeer(LOOPBACK, ports.backend, answer) as vos3000:
        right = _sipsak_invite_file(tmp_path, ports, listen, "right")
        rc, out = _sipsak(
            ["-vvv", "-f", str(right), "-s", target, "-a", PASSWORD, "-u", USER,
             "-l", str(listen)],
            tmp_path,
        )
        assert rc == 0, out + proxy.output_tail()
        assert "SIP/2.0 407" in out and "SIP/2.0 200 OK" in out, out
        vos3000.wait_for(lambda d: d.msg.method == "ACK", 2.0)
        got = vos3000.received
    invites = [d for d in got if d.msg.method == "INVITE"]
    assert invites, "the authenticated INVITE never reached VOS3000\n" + out
    assert all(d.msg.header("CSeq") == "2 INVITE" for d in invites), [d.msg.text for d in invites]
    assert not [d for d in got if _has_credentials(d.data)], [d.msg.text for d in got]


# --------------------------------------------------------------------------
# 4b. Digest with baresip


class Baresip:
    """baresip 1.0 over UDP with one digest account, configured in `workdir`;
    output read by a thread. Audio comes from a silent 8 kHz file and goes
    nowhere. Stopped by PID."""

    def __init__(self, workdir: Path, server: Addr, password: str, register: bool,
                 transport: str = "udp") -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        silence = workdir / "silence.wav"
        with wave.open(str(silence), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(8000)
            w.writeframes(b"\0\0" * 8000 * 30)  # longer than any call here
        lines = [
            "poll_method epoll", f"sip_listen {LOOPBACK}:0", "call_local_timeout 20",
            "call_max_calls 1", f"audio_source aufile,{silence}",
            "audio_player aufile,/dev/null", "audio_alert aufile,/dev/null",
            f"net_interface {LOOPBACK}", "module_path /usr/lib/baresip/modules",
            "module g711.so", "module aufile.so", "module_tmp account.so", "module_app menu.so",
        ]
        (workdir / "config").write_text("\n".join(lines) + "\n")
        regint = 600 if register else 0
        (workdir / "accounts").write_text(
            f"<sip:{USER}@{server[0]}:{server[1]}"
            + (f";transport={transport}" if transport != "udp" else "")
            + f">;auth_pass={password};regint={regint};"
            "audio_codecs=PCMU\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader = threading.Thread()
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def start(self, dial: str | None = None) -> Baresip:
        # -t: a cap on its life should the test go wrong; the test stops it first.
        cmd = ["baresip", "-f", str(self.workdir), "-t", "60"]
        if dial is not None:
            cmd[3:3] = ["-e", f"/dial {dial}"]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with self.proc.stdout:
            for raw in self.proc.stdout:
                with self._changed:
                    self.lines.append(raw.decode("utf-8", "replace").rstrip())
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 20.0) -> bool:
        """Wait until a line contains `text` (False: not within `timeout`, or baresip exited)."""
        with self._changed:
            return self._changed.wait_for(
                lambda: any(text in line for line in self.lines)
                or (self.proc is not None and self.proc.poll() is not None), timeout
            ) and any(text in line for line in self.lines)

    def output(self) -> str:
        with self._changed:
            return "\n".join(line for line in self.lines if "audio=" not in line)

    def stop(self) -> None:
        if self.proc is None:
            return
        end_process(self.proc)
        self._reader.join(5)


@pytest.fixture
def baresip(tmp_path: Path, ports: Ports) -> Iterator[Callable[..., Baresip]]:
    made: list[Baresip] = []

    def new(password: str = PASSWORD, register: bool = True, transport: str = "udp") -> Baresip:
        b = Baresip(tmp_path / f"baresip{len(made)}", (LOOPBACK, ports.public), password,
                    register, transport)
        made.append(b)
        return b

    yield new
    for b in made:
        b.stop()


def test_baresip_registers_and_calls(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory, baresip: Callable[..., Baresip]
) -> None:
    """baresip registers (401, then 200) and calls (407, then the INVITE goes
    on without credentials); VOS3000 answers, waits a second and hangs up."""
    proxy = sbc({"gateways": [PHONES], "auth": BARESIP_AUTH})
    vos3000 = sipp("vos3000", "uas_hangup.xml", local_port=ports.backend, calls=1,
                   timeout_s=30, transport="u1", duration_ms=1000)
    vos3000.start().wait_bound()
    phone = baresip().start(dial=f"sip:5551234@{LOOPBACK}:{ports.public}")
    uas = vos3000.wait()
    assert uas.returncode == 0 and uas.successful == 1, (
        report([uas], proxy) + "\n\nbaresip:\n" + phone.output())
    assert phone.wait_for(f"{USER}@{LOOPBACK}: {{0/UDP/v4}} 200 OK"), phone.output()  # REGISTER
    assert phone.wait_for("Call established"), phone.output()
    assert phone.wait_for("terminated"), phone.output()  # VOS3000's BYE reached it

    (invite,) = _received(uas, "INVITE")
    assert invite.cseq_method == "INVITE", invite.text
    assert not invite.headers("Proxy-Authorization") and not invite.headers("Authorization"), (
        f"credentials reached VOS3000:\n{invite.text}")
    assert not _received(uas, "REGISTER"), report([uas], proxy)
    assert proxy.wait_named("call_end")


def test_baresip_with_a_wrong_password_reaches_nothing(
    ports: Ports, sbc: SbcFactory, baresip: Callable[..., Baresip]
) -> None:
    proxy = sbc({"gateways": [PHONES], "auth": BARESIP_AUTH})
    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        phone = baresip(password="not-the-password").start(
            dial=f"sip:5551234@{LOOPBACK}:{ports.public}")
        assert phone.wait_for("session closed: 403 Forbidden"), (
            phone.output() + proxy.output_tail())
        assert phone.wait_for(f"reg: sip:{USER}@{LOOPBACK}:{ports.public}: 403 Forbidden"), (
            phone.output())
        _assert_nothing_arrives({"VOS3000": vos3000}, within=QUIET_S)
        phone.stop()
    output = phone.output()
    assert "200 OK" not in output and "Call established" not in output, output


def test_baresip_registers_over_udp_with_the_default_config(
    ports: Ports, sbc: SbcFactory, baresip: Callable[..., Baresip]
) -> None:
    """Over UDP the challenge offers the first configured algorithm only
    (MD5 by default), which baresip 1.0 answers."""
    proxy = sbc({"gateways": [PHONES]})
    phone = baresip(register=True).start()
    assert phone.wait_for(f"{USER}@{LOOPBACK}: {{0/UDP/v4}} 200 OK"), (
        phone.output() + proxy.output_tail())


def test_baresip_gives_up_over_tcp_on_a_challenge_that_offers_sha256(
    ports: Ports, sbc: SbcFactory, baresip: Callable[..., Baresip]
) -> None:
    """Why the README tells operators whose baresip phones use TCP or TLS to
    configure MD5 only: baresip 1.0 (Debian's) reads every challenge of a
    401 and fails the REGISTER with ENOSYS ("Function not implemented") when
    any of them is not MD5, even with MD5 first, as in the default challenge
    over a connection. When a newer baresip passes this, that advice can go."""
    sbc({"gateways": [PHONES]})
    phone = baresip(register=True, transport="tcp").start()
    assert phone.wait_for("Register: Function not implemented"), phone.output()


# --------------------------------------------------------------------------
# 5. Digest with SIPp


def test_sipp_invite_with_proxy_auth_completes(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    proxy = sbc({"gateways": [PHONES]})
    uas, uac = run_pair(
        _vos3000_sipp(sipp, ports),
        _caller(
            sipp,
            "phone",
            ports,
            (LOOPBACK, ports.caller),
            "uac_auth.xml",
            extra=["-au", USER, "-ap", PASSWORD, *_sipp_auth_uri(ports)],
        ),
    )
    _assert_calls(1, [uac, uas], proxy)
    challenges = [m for m in uac.messages() if m.direction == "received" and m.status == 407]
    assert len(challenges) == 1, report([uac], proxy)
    _challenges(challenges[0], "Proxy-Authenticate")
    invites = _received(uas, "INVITE")
    assert len(invites) == 1 and invites[0].header("CSeq") == "2 INVITE", report([uas], proxy)
    for msg in uas.messages():
        assert not msg.headers("Proxy-Authorization") and not msg.headers("Authorization"), (
            f"credentials reached VOS3000:\n{msg.text}"
        )


def test_sipp_register_with_auth(ports: Ports, sbc: SbcFactory, sipp: SippFactory) -> None:
    proxy = sbc({"gateways": [PHONES]})
    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        reg = _caller(
            sipp,
            "register",
            ports,
            (LOOPBACK, ports.caller),
            "register_auth.xml",
            extra=["-s", USER, "-au", USER, "-ap", PASSWORD],
        )
        try:
            result = reg.start().wait()
        finally:
            reg.stop()
        _assert_calls(1, [result], proxy)
        _assert_nothing_arrives({"VOS3000": vos3000}, within=0.2)
    statuses = [m.status for m in result.messages() if m.direction == "received"]
    assert statuses == [401, 200], report([result], proxy)
    unauthorized, ok = (m for m in result.messages() if m.direction == "received")
    _challenges(unauthorized, "WWW-Authenticate")
    assert f"<sip:{USER}@{LOOPBACK}:{ports.caller};transport=UDP>;expires=600" in ok.headers(
        "Contact"
    ), ok.text


# --------------------------------------------------------------------------
# Challenges, stale nonces, replays (raw client, default algorithms)


def test_challenges_over_udp_offer_the_first_algorithm_with_qop(
    ports: Ports, sbc: SbcFactory
) -> None:
    sbc({"gateways": [PHONES]})
    with UdpPeer(PHONE_IP) as peer:
        phone = Phone(peer, (LOOPBACK, ports.public))
        unauthorized = phone.exchange(phone.register())
        assert unauthorized.status == 401, unauthorized.text
        invite = _request(
            "INVITE",
            f"sip:5551234@{LOOPBACK}:{ports.public}",
            peer.address,
            call_id=f"inv-{os.getpid()}@{PHONE_IP}",
            cseq=1,
        )
        start = len(peer.received)
        peer.send(invite, phone.server)
        hits = peer.wait_for(lambda d: d.msg.status == 407, 3.0, start=start)
        assert hits, "no 407 for an INVITE from a digest-only caller"
        for msg, header in (
            (unauthorized, "WWW-Authenticate"),
            (hits[0].msg, "Proxy-Authenticate"),
        ):
            offered = _challenges(msg, header)
            # Over UDP the first of the configured order only (default: MD5);
            # every algorithm over TCP (tests/e2e/test_edge.py).
            assert [c.get("algorithm") for c in offered] == ["MD5"], msg.text
            assert all(c.get("realm") == "sbc" and "stale" not in c for c in offered), msg.text


def test_expired_nonce_gets_stale_challenge(ports: Ports, sbc: SbcFactory) -> None:
    ttl = 1.0
    sbc({"gateways": [PHONES], "auth": {"nonce_ttl_s": ttl}})
    with UdpPeer(PHONE_IP) as peer:
        phone = Phone(peer, (LOOPBACK, ports.public))
        first = phone.exchange(phone.register())
        issued_before = time.monotonic()  # the nonce was made before its 401 arrived
        assert first.status == 401, first.text
        # Over UDP the one challenge: the first configured algorithm (MD5).
        (challenge,) = _challenges(first, "WWW-Authenticate")

        # Wait, by the monotonic clock, until the nonce is surely past its TTL.
        deadline = issued_before + ttl + 0.5
        for _ in range(1000):
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert time.monotonic() > deadline

        late = phone.exchange(
            phone.register(_authorization(challenge, "REGISTER", phone.uri, 1, "c0ffee01"))
        )
        assert late.status == 401, f"an expired nonce was answered {late.status}:\n{late.text}"
        fresh = _challenges(late, "WWW-Authenticate")
        assert all(c.get("stale") == "true" for c in fresh), late.text
        assert all(c["nonce"] != challenge["nonce"] for c in fresh), late.text

        # The same password against the fresh nonce is accepted at once.
        ok = phone.exchange(
            phone.register(_authorization(fresh[0], "REGISTER", phone.uri, 1, "c0ffee02"))
        )
        assert ok.status == 200, ok.text

    for msg in phone.seen:
        if msg.status in (401, 407):
            _challenges(msg, "WWW-Authenticate" if msg.status == 401 else "Proxy-Authenticate")


def test_replayed_nonce_count_is_challenged_again(ports: Ports, sbc: SbcFactory) -> None:
    sbc({"gateways": [PHONES]})
    with UdpPeer(PHONE_IP) as peer:
        phone = Phone(peer, (LOOPBACK, ports.public))
        first = phone.exchange(phone.register())
        assert first.status == 401, first.text
        challenge = _challenges(first, "WWW-Authenticate")[0]

        answered = phone.register(_authorization(challenge, "REGISTER", phone.uri, 1, "5eed0001"))
        ok = phone.exchange(answered)
        assert ok.status == 200, ok.text

        replay = phone.exchange(answered)  # the same bytes: same nonce, same nc
        assert replay.status == 401, f"a replayed nonce-count got {replay.status}:\n{replay.text}"
        # The digest was right, the nonce-count is spent: a fresh nonce with
        # stale=true (RFC 7616 §3.3), so an honest phone retries at once.
        fresh = _challenges(replay, "WWW-Authenticate")
        assert fresh and all(c.get("stale", "").lower() == "true" for c in fresh), fresh
        assert all(c["nonce"] != challenge["nonce"] for c in fresh), fresh

        # A higher count on the same nonce is a legitimate next request.
        later = phone.exchange(
            phone.register(_authorization(challenge, "REGISTER", phone.uri, 2, "5eed0002"))
        )
        assert later.status == 200, later.text


# --------------------------------------------------------------------------
# Attacks with valid-looking answers (raw client, default configuration)


def _invite(peer: UdpPeer, ruri: str, cseq: int, call_id: str, authorization: str | None = None,
            from_user: str = USER) -> bytes:
    extra = [f"Proxy-Authorization: {authorization}"] if authorization else []
    data = _request("INVITE", ruri, peer.address, call_id=call_id, cseq=cseq, extra=extra)
    return data.replace(f"From: <sip:{USER}@".encode(), f"From: <sip:{from_user}@".encode(), 1)


def _final(peer: UdpPeer, data: bytes, server: Addr, timeout: float = 3.0) -> TracedMessage:
    """Send an INVITE; its first answer other than 100 (a 180 counts)."""
    cseq = next(ln for ln in data.decode().split("\r\n") if ln.startswith("CSeq:"))[5:].strip()
    start = len(peer.received)
    peer.send(data, server)
    hits = peer.wait_for(
        lambda d: (d.msg.status or 0) > 100 and d.msg.header("CSeq") == cseq, timeout, start=start)
    assert hits, f"no answer to CSeq {cseq} within {timeout:.0f}s"
    return hits[0].msg


def test_answer_moved_to_another_number_is_400_and_goes_nowhere(
    ports: Ports, sbc: SbcFactory
) -> None:
    """An answer made for one number, put on an INVITE to another (RFC 7616
    §3.4.6): 400, and VOS3000 hears nothing; the number it was made for is
    then reached with it."""
    sbc({"gateways": [PHONES]})
    server = (LOOPBACK, ports.public)
    wanted = f"sip:5551234@{LOOPBACK}:{ports.public}"
    premium = f"sip:00882123456@{LOOPBACK}:{ports.public}"
    call_id = f"moved-{os.getpid()}@{PHONE_IP}"
    with UdpPeer(PHONE_IP) as peer:
        with UdpPeer(LOOPBACK, ports.backend) as vos3000:
            challenge = _final(peer, _invite(peer, wanted, 1, call_id), server)
            assert challenge.status == 407, challenge.text
            (md5,) = [c for c in _challenges(challenge, "Proxy-Authenticate")
                      if c["algorithm"] == "MD5"]
            creds = _authorization(md5, "INVITE", wanted, 1, "c0ffee01")
            moved = _final(peer, _invite(peer, premium, 2, call_id, creds), server)
            assert moved.status == 400, moved.text
            _assert_nothing_arrives({"VOS3000": vos3000}, within=1.0)
        answer = vos3000_answer((LOOPBACK, ports.backend))
        with UdpPeer(LOOPBACK, ports.backend, answer) as vos3000:
            ok = _final(peer, _invite(peer, wanted, 3, call_id, creds), server)
            assert ok.status in (180, 200), ok.text
            invites = vos3000.wait_for(lambda d: d.msg.method == "INVITE", 2.0)
    assert [d.msg.first_line for d in invites] == [f"INVITE {wanted} SIP/2.0"]


def test_unknown_user_and_wrong_password_get_the_same_answer(
    ports: Ports, sbc: SbcFactory
) -> None:
    """A scanner guessing user names cannot tell a name that exists from one
    that does not: both get 403 Forbidden, nothing else differs."""
    sbc({"gateways": [PHONES]})
    answers = []
    # One source per guess: each stays within its own reply budget.
    guesses = (("127.0.0.21", USER, "not-the-password"), ("127.0.0.22", "1999", PASSWORD),
               ("127.0.0.23", "admin", "admin"))
    for host, username, password in guesses:
        with UdpPeer(host) as peer:
            phone = Phone(peer, (LOOPBACK, ports.public))
            challenge = _challenges(phone.exchange(phone.register()), "WWW-Authenticate")[0]
            guess = _authorization(challenge, "REGISTER", phone.uri, 1, "5eed0001",
                                   username=username, password=password)
            refused = phone.exchange(phone.register(guess))
            names = sorted({ln.split(":", 1)[0].lower() for ln in _head(refused)[1:]})
            answers.append((refused.first_line, names))
    assert answers == [("SIP/2.0 403 Forbidden", answers[0][1])] * 3, answers


def test_from_must_match_refuses_a_borrowed_caller_id(ports: Ports, sbc: SbcFactory) -> None:
    phones = {"name": "phones",
              "digest": [{"username": USER, "password": PASSWORD, "from_must_match": True}]}
    sbc({"gateways": [phones]})
    server = (LOOPBACK, ports.public)
    ruri = f"sip:5551234@{LOOPBACK}:{ports.public}"
    answer = vos3000_answer((LOOPBACK, ports.backend))
    with UdpPeer(PHONE_IP) as peer, UdpPeer(LOOPBACK, ports.backend, answer) as vos3000:
        call_id = f"cid-{os.getpid()}@{PHONE_IP}"
        challenge = _final(peer, _invite(peer, ruri, 1, call_id, from_user="4420794960000"),
                           server)
        (md5,) = [c for c in _challenges(challenge, "Proxy-Authenticate")
                  if c["algorithm"] == "MD5"]
        creds = _authorization(md5, "INVITE", ruri, 1, "c0ffee02")
        refused = _final(peer, _invite(peer, ruri, 2, call_id, creds, "4420794960000"), server)
        assert refused.status == 403, refused.text
        _assert_nothing_arrives({"VOS3000": vos3000}, within=1.0)
        # As itself, the same account goes through.
        own = _final(peer, _invite(peer, ruri, 3, call_id, _authorization(
            md5, "INVITE", ruri, 2, "c0ffee03")), server)
        assert own.status in (180, 200), own.text
        invites = vos3000.wait_for(lambda d: d.msg.method == "INVITE", 2.0)
    assert len(invites) == 1 and f"sip:{USER}@" in (invites[0].msg.header("From") or "")


# --------------------------------------------------------------------------
# 8. VOS3000 calls a registered account, also after a restart


def test_vos3000_calls_registered_account_across_restart(
    ports: Ports, sbc: SbcFactory, sipp: SippFactory
) -> None:
    proxy = sbc({"gateways": [PHONES]})
    (phone_port,) = free_ports(1, PHONE_IP)
    phone = (PHONE_IP, phone_port)
    contact = f"sip:{USER}@{PHONE_IP}:{phone_port};transport=UDP"

    reg = _caller(
        sipp,
        "phone-register",
        ports,
        phone,
        "register_auth.xml",
        extra=["-s", USER, "-au", USER, "-ap", PASSWORD],
    )
    try:
        registered = reg.start().wait()
    finally:
        reg.stop()
    _assert_calls(1, [registered], proxy)

    def call_from_vos3000(round_: int, current: SbcProcess) -> None:
        # The account answers on the address it registered from; VOS3000
        # (SIPp on the backend address) calls it through sbc's private port.
        account = sipp(
            f"phone-{round_}",
            "uas.xml",
            local_ip=PHONE_IP,
            local_port=phone_port,
            calls=1,
            timeout_s=30,
        )
        vos3000 = sipp(
            f"vos3000-{round_}",
            "uac.xml",
            local_port=ports.backend,
            calls=1,
            timeout_s=30,
            remote=(LOOPBACK, ports.private),
            duration_ms=100,
            extra=["-s", USER],
        )
        answered, placed = run_pair(account, vos3000)
        _assert_calls(1, [placed, answered], current)
        invites = _received(answered, "INVITE")
        assert len(invites) == 1, report([answered], current)
        assert invites[0].first_line == f"INVITE {contact} SIP/2.0", (
            f"the Request-URI is not the registered contact {contact}:\n{invites[0].text}"
        )
        assert invites[0].headers("Record-Route"), f"sbc did not record-route:\n{invites[0].text}"

    call_from_vos3000(1, proxy)

    assert proxy.stop() == 0, proxy.output_tail()
    restarted = sbc(config_path=proxy.config_path)
    call_from_vos3000(2, restarted)


# --------------------------------------------------------------------------
# 9. No reflection: replies to unknown sources go to the packet's source only


@pytest.mark.parametrize("mode", ["drop", "reject", "digest"])
def test_unknown_source_never_answered_at_its_via(mode: str, ports: Ports, sbc: SbcFactory) -> None:
    gateways: list[dict[str, Any]] = [{"name": "carrier", "ip": [GATEWAY_IP]}]
    if mode == "digest":
        gateways.append(PHONES)
    sbc(
        {"gateways": gateways, "auth": {"unknown_source": "reject" if mode == "reject" else "drop"}}
    )

    (via_port,) = free_ports(1, VICTIM_IP)
    with (
        UdpPeer(SPOOFER_IP) as spoofer,
        UdpPeer(VICTIM_IP, via_port) as victim,
        # Where a server that trusted the Via port but not its host would answer.
        UdpPeer(SPOOFER_IP, via_port) as victim_port,
        UdpPeer(LOOPBACK, ports.backend) as vos3000,
    ):
        for cseq, method in enumerate(("INVITE", "REGISTER", "MESSAGE"), start=1):
            spoofer.send(
                _request(
                    method,
                    f"sip:5551234@{LOOPBACK}:{ports.public}",
                    spoofer.address,
                    call_id=f"spoof-{cseq}-{os.getpid()}@{VICTIM_IP}",
                    cseq=cseq,
                    via=(VICTIM_IP, via_port),
                    rport=False,
                ),
                (LOOPBACK, ports.public),
            )
        quiet = {"the Via address": victim, "the Via port": victim_port, "VOS3000": vos3000}
        if mode == "drop":
            _assert_nothing_arrives({"the source": spoofer, **quiet})
            return
        want = {"INVITE": 403, "REGISTER": 403, "MESSAGE": 403}
        if mode == "digest":
            want = {"INVITE": 407, "REGISTER": 401, "MESSAGE": 407}
        replies = spoofer.wait_for(lambda d: d.msg.status is not None, 3.0, count=len(want))
        _assert_nothing_arrives(quiet)
        got = {(d.msg.cseq_method or ""): d.msg.status for d in spoofer.received}
        assert got == want, [d.msg.text for d in replies]
        assert all(d.source == (LOOPBACK, ports.public) for d in replies)


def test_reply_budget_caps_replies_to_a_burst(ports: Ports, sbc: SbcFactory) -> None:
    rate, burst, requests, sources = 10.0, 20, 500, 25
    # The screen's per-source packet limits would stop most of the burst
    # before it is read; lifted here, the reply budget alone bounds the replies.
    # A real flood comes from many addresses: 25 here, each under its own
    # reply budget (5 at once), so the global budget is the one that binds.
    unlimited = {"rate": 100_000.0, "burst": 100_000}
    sbc(
        {
            "gateways": [{"name": "carrier", "ip": [GATEWAY_IP]}],
            "auth": {
                "unknown_source": "reject",
                "reply_budget_per_s": rate,
                "reply_budget_burst": burst,
            },
            "screen": {"rate_per_ip": unlimited, "rate_per_net": unlimited},
        }
    )
    (via_port,) = free_ports(1, VICTIM_IP)
    with contextlib.ExitStack() as stack:
        flooders = [stack.enter_context(UdpPeer(f"127.0.0.{100 + n}")) for n in range(sources)]
        victim = stack.enter_context(UdpPeer(VICTIM_IP, via_port))
        started = time.monotonic()
        for i in range(requests):
            flooder = flooders[i % sources]
            flooder.send(
                _request(
                    "INVITE",
                    f"sip:5551234@{LOOPBACK}:{ports.public}",
                    flooder.address,
                    call_id=f"flood-{i}-{os.getpid()}@{flooder.address[0]}",
                    cseq=1,
                    via=(VICTIM_IP, via_port),
                ),
                (LOOPBACK, ports.public),
            )
        sent_for = time.monotonic() - started

        def replies_now() -> list[Datagram]:
            return sorted((d for f in flooders for d in f.received), key=lambda d: d.at)

        # Collect until no reply has come for 0.5 s (bounded by a deadline).
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            got = replies_now()
            if got and time.monotonic() - got[-1].at > 0.5:
                break
            time.sleep(0.02)
        replies = replies_now()
        # Tokens accrue from the first request to the last reply granted.
        elapsed = max((d.at for d in replies), default=started) - started
        _assert_nothing_arrives({"the Via address": victim}, within=0.2)

    statuses = {d.msg.status for d in replies}
    allowed = burst + rate * elapsed + 2
    assert statuses <= {403}, statuses
    assert burst <= len(replies) <= allowed, (
        f"{len(replies)} replies to {requests} requests sent in {sent_for:.2f}s, "
        f"collected over {elapsed:.2f}s; budget {rate:g}/s, burst {burst}: at most {allowed:.0f}"
    )
