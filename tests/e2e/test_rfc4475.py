"""The RFC 4475 messages sbc must refuse, on real sockets (issue 14 item 6).

    gateway (127.0.0.1) ──udp / tcp──► sbc public ─ sbc private ──udp──► VOS3000 stand-in
    stranger (127.0.0.3) ──udp / tcp──►

Each file of tests/data/rfc4475/ that no proxy may pass on (§3.1.2, and the
§3.3 ones sbc refuses itself) goes to a running sbc over UDP and over TCP,
one connection per message. The gateway gets the answer the in-memory table
(tests/core/test_rfc4475.py) says, a TCP connection that cannot be framed is
closed after it; the stranger gets nothing; and the VOS3000 stand-in, a bare
UDP socket on the backend port, receives not one datagram.
"""

from __future__ import annotations

import select
import socket
import time

import pytest

from loadtest.harness import LOOPBACK

from ..core.test_rfc4475 import CASES, DATA, INVALID, SEMANTIC, Case, Got, expected
from .conftest import Ports, SbcFactory

pytestmark = pytest.mark.e2e

STRANGER = "127.0.0.3"
REFUSED = sorted(name for name, case in {**INVALID, **SEMANTIC}.items()
                 if not case.gateway_udp.forwarded)
QUIET_S = 0.4  # how long silence is waited for
ANSWER_S = 5.0  # bound on any answer


def _sip_messages(buf: bytes) -> list[bytes]:
    """Whole messages in `buf` (each of sbc's answers ends its head with
    Content-Length: 0 and has no body)."""
    return [m + b"\r\n\r\n" for m in buf.split(b"\r\n\r\n")[:-1]]


def _over_udp(port: int, data: bytes, source: str, want: Got) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(ANSWER_S if want.status else QUIET_S)
        sock.sendto(data, (LOOPBACK, port))
        try:
            return sock.recv(65536)
        except TimeoutError:
            return None


def _over_tcp(port: int, data: bytes, source: str, want: Got) -> tuple[bytes, bool]:
    """(what came back, whether sbc closed the connection)."""
    with socket.create_connection((LOOPBACK, port), timeout=ANSWER_S,
                                  source_address=(source, 0)) as sock:
        sock.sendall(data)
        got = b""
        deadline = time.monotonic() + (ANSWER_S if want.status or want.closed else QUIET_S)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got, False
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return got, False
            except ConnectionResetError:
                return got, True
            if not chunk:
                return got, True
            got += chunk
            if want.status and not want.closed and _sip_messages(got):
                return got, False


def _check(name: str, case: Case, want: Got, answer: bytes | None) -> None:
    where = f"RFC 4475 §{case.section} {name}"
    if not want.status:
        assert not answer, f"{where}: {answer!r}"
        return
    assert answer, f"{where}: no answer"
    (reply,) = _sip_messages(answer)
    assert reply.startswith(b"SIP/2.0 %d %s\r\n" % (want.status, want.phrase.encode())), \
        f"{where}: {reply[:80]!r}"


def _stranger_hears_nothing(port: int) -> None:
    """Every file at once from the stranger, a datagram each and a connection
    each; then one wait: no answer on any, and a connection closed only where
    the stream cannot be framed."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((STRANGER, 0))
    conns: dict[str, socket.socket] = {}
    try:
        for name in REFUSED:
            data = (DATA / f"{name}.dat").read_bytes()
            udp.sendto(data, (LOOPBACK, port))
            conn = conns[name] = socket.create_connection((LOOPBACK, port), timeout=ANSWER_S,
                                                          source_address=(STRANGER, 0))
            conn.sendall(data)
        # The streams sbc must close end first (each waited for, with a
        # deadline); then one window of silence over every socket left.
        for name, conn in conns.items():
            if expected(CASES[name], "stranger", "tcp").closed:
                try:
                    heard = conn.recv(65536)
                except ConnectionResetError:
                    heard = b""
                assert heard == b"", f"{name}: the stranger heard {heard!r}"
        open_ones = {conn: name for name, conn in conns.items()
                     if not expected(CASES[name], "stranger", "tcp").closed}
        readable, _, _ = select.select([udp, *open_ones], [], [], 1.0)
        assert not readable, (
            f"the stranger heard something on {[open_ones.get(r, 'udp') for r in readable]}")
    finally:
        udp.close()
        for conn in conns.values():
            conn.close()


def test_refused_messages_never_reach_vos3000(ports: Ports, sbc: SbcFactory) -> None:
    vos = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    vos.bind((LOOPBACK, ports.backend))
    try:
        proc = sbc({"gateways": [{"name": "gw", "ip": ["127.0.0.1/32"]}],
                    # the stranger is to meet silence from the parser, not a ban
                    # or a rate limit (it sends everything at once)
                    "bans": {"max_offenses": 1000},
                    "screen": {"rate_per_ip": {"rate": 1000.0, "burst": 1000}}})
        for name in REFUSED:
            case = CASES[name]
            data = (DATA / f"{name}.dat").read_bytes()
            _check(name, case, expected(case, "gateway", "udp"),
                   _over_udp(ports.public, data, LOOPBACK, expected(case, "gateway", "udp")))
            want = expected(case, "gateway", "tcp")
            answer, closed = _over_tcp(ports.public, data, LOOPBACK, want)
            _check(name, case, want, answer)
            assert closed == want.closed, f"{name}: closed={closed}"
        _stranger_hears_nothing(ports.public)
        # Whatever sbc were to send on (or retransmit) has long arrived by now.
        vos.settimeout(1.0)
        received: list[bytes] = []
        try:
            while True:
                received.append(vos.recv(65536))
        except TimeoutError:
            pass
        assert received == [], received[0][:200]
        assert proc.proc is not None and proc.proc.poll() is None  # still serving
    finally:
        vos.close()
