"""The edge refuses what does not belong (issue 14, items 8-11), through a
real sbc process on loopback sockets:

    attacker / gateway (UDP, TCP, TLS) ──► sbc public ─ sbc private ──► VOS3000 (a UDP socket)

8. a preloaded Route header never reaches VOS3000;
9. a gateway that requires a client certificate is refused over UDP and TCP
   from its own address, and admitted over TLS with its certificate;
10. a CANCEL that matches nothing gets silence from a stranger, 481 from a
    gateway;
11. a challenge to a UDP stranger is one line, and its size is measured
    against the request that caused it (real sipsak's REGISTER and the
    smallest request the parser accepts).
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from loadtest.harness import LOOPBACK, end_process, free_ports, sipsak_binary
from sbc.sip import parse_message

from ..tlscerts import Certs, make_certs
from .conftest import Ports, SbcFactory
from .test_auth import PHONES, UdpPeer, _assert_nothing_arrives, _request

pytestmark = pytest.mark.e2e

Addr = tuple[str, int]

GATEWAY_IP = "127.0.0.2"  # a carrier known by its address
STRANGER_IP = "127.0.0.3"  # configured nowhere
CERT_GW_IP = "127.0.0.20"  # a gateway that must show a client certificate
QUIET_S = 1.5

# The README's bound: a challenge over UDP adds at most this many bytes to
# the request it answers (IPv4 source, default realm); see tests/core/test_edge.py.
OVERHEAD_V4 = 200
MAX_FACTOR = 3.6
MIN_INVITE = b"INVITE sip:b SIP/2.0\r\nv:SIP/2.0/UDP a\r\nf:sip:a\r\nt:sip:a\r\ni:1\r\nCSeq:1 INVITE\r\n\r\n"


def _ruri(ports: Ports) -> str:
    return f"sip:5551234@{LOOPBACK}:{ports.public}"


def _call_id(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.monotonic_ns()}"


def _first(peer: UdpPeer, timeout: float = 3.0, start: int = 0) -> bytes:
    hits = peer.wait_for(lambda d: True, timeout, start=start)
    assert hits, f"nothing arrived at {peer.address} within {timeout}s"
    return hits[0].data


def _read_message(sock: socket.socket | ssl.SSLSocket, timeout: float = 5.0) -> bytes:
    """One SIP message without a body from a stream."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def _challenges(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\r\n") if b"-Authenticate:" in ln]


# --------------------------------------------------------------------------
# 8. Preloaded Route headers


def test_a_preloaded_route_never_reaches_vos3000(ports: Ports, sbc: SbcFactory) -> None:
    """The customer's INVITE names a Route of its own and one naming sbc:
    VOS3000 gets the INVITE with neither."""
    proxy = sbc()
    with UdpPeer(GATEWAY_IP) as caller, UdpPeer(LOOPBACK, ports.backend) as vos3000:
        route = (f"Route: <sip:{LOOPBACK}:{ports.public};lr>, <sip:evil.example.com;lr>\r\n"
                 "Route: <sip:203.0.113.9:5060;lr>")
        invite = _request("INVITE", _ruri(ports), caller.address, call_id=_call_id("route"),
                          cseq=1, extra=[route])
        caller.send(invite, (LOOPBACK, ports.public))
        got = parse_message(_first(vos3000))
        assert got.method == "INVITE", proxy.output_tail()
        assert got.get_all("route") == [], got
        assert got.uri == _ruri(ports).encode()
        assert parse_message(_first(caller)).status == 100


# --------------------------------------------------------------------------
# 9. A gateway that requires a client certificate


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def tls_port(ports: Ports) -> int:
    taken = {ports.public, ports.private, ports.backend, ports.caller}
    return next(p for p in free_ports(6) if p not in taken)


def test_a_certificate_gateway_is_refused_over_udp_and_tcp_and_admitted_over_tls(
    ports: Ports, sbc: SbcFactory, certs: Certs, tls_port: int
) -> None:
    proxy = sbc({
        "public": {"transports": ["udp", "tcp", "tls"], "tls_port": tls_port},
        "tls": {"cert_file": str(certs.server.cert), "key_file": str(certs.server.key),
                "ca_file": str(certs.ca)},
        "gateways": [{"name": "acme", "ip": [CERT_GW_IP],
                      "tls": {"require_client_cert": True, "subject": "acme.test"}}],
    })
    server = (LOOPBACK, ports.public)
    with UdpPeer(LOOPBACK, ports.backend) as vos3000:
        # UDP from the gateway's own address: 403 with the reason, nothing on.
        with UdpPeer(CERT_GW_IP) as udp:
            udp.send(_request("INVITE", _ruri(ports), udp.address, call_id=_call_id("udp"),
                              cseq=1), server)
            refused = _first(udp)
        assert refused.startswith(b"SIP/2.0 403 TLS Client Certificate Required\r\n"), (
            refused + proxy.output_tail().encode())

        # TCP from the gateway's own address: the same.
        with socket.create_connection(server, timeout=5, source_address=(CERT_GW_IP, 0)) as tcp:
            tcp.sendall(_request("INVITE", _ruri(ports), tcp.getsockname(),
                                 call_id=_call_id("tcp"), cseq=1).replace(b"/UDP ", b"/TCP ", 1))
            refused = _read_message(tcp)
        assert refused.startswith(b"SIP/2.0 403 TLS Client Certificate Required\r\n"), refused
        _assert_nothing_arrives({"VOS3000": vos3000}, within=0.5)

        # TLS with its certificate: admitted, the INVITE reaches VOS3000.
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        ctx.load_cert_chain(certs.client.cert, certs.client.key)
        raw = socket.create_connection((LOOPBACK, tls_port), timeout=5,
                                       source_address=(CERT_GW_IP, 0))
        with ctx.wrap_socket(raw, server_hostname="sbc.test") as tls:
            tls.sendall(_request("INVITE", _ruri(ports), tls.getsockname(),
                                 call_id=_call_id("tls"), cseq=1).replace(b"/UDP ", b"/TLS ", 1))
            assert _read_message(tls).startswith(b"SIP/2.0 100 "), proxy.output_tail()
            got = parse_message(_first(vos3000))
            assert got.method == "INVITE" and got.uri == _ruri(ports).encode()


# --------------------------------------------------------------------------
# 10. A CANCEL that matches no transaction


def test_unknown_cancel_is_silence_for_a_stranger_and_481_for_a_gateway(
    ports: Ports, sbc: SbcFactory
) -> None:
    sbc({"gateways": [{"name": "carrier", "ip": [GATEWAY_IP]}, PHONES]})
    server = (LOOPBACK, ports.public)
    with UdpPeer(STRANGER_IP) as stranger, UdpPeer(GATEWAY_IP) as carrier:
        stranger.send(_request("CANCEL", _ruri(ports), stranger.address,
                               call_id=_call_id("probe"), cseq=1), server)
        _assert_nothing_arrives({"stranger": stranger}, within=QUIET_S)
        carrier.send(_request("CANCEL", _ruri(ports), carrier.address,
                              call_id=_call_id("late"), cseq=1), server)
        assert _first(carrier).startswith(b"SIP/2.0 481 ")


# --------------------------------------------------------------------------
# 11. Amplification, measured


def _sipsak_register(tmp_path: Path) -> bytes:
    """The REGISTER real sipsak sends (`sipsak -U -a ...`), caught on a socket of ours."""
    binary = sipsak_binary()
    if binary is None:
        pytest.fail("sipsak not installed (apt-get install sipsak, or run `make test`)")
    with UdpPeer(LOOPBACK) as target:
        proc = subprocess.Popen(
            [binary, "-k", LOOPBACK, "-U", "-s", f"sip:1001@{LOOPBACK}:{target.address[1]}",
             "-a", "secret", "-x", "120"],
            cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            data = _first(target, 5.0)
        finally:
            end_process(proc)
    assert data.startswith(b"REGISTER "), data
    return data


def test_a_challenge_to_a_udp_stranger_is_one_line_and_measured(
    ports: Ports, sbc: SbcFactory, tmp_path: Path
) -> None:
    """Real sipsak's REGISTER (about 340 bytes) is answered with about as
    much; the smallest request the parser accepts (79 bytes) with at most
    OVERHEAD_V4 bytes more, MAX_FACTOR times its size. One challenge line:
    the first configured algorithm, MD5 by default."""
    proxy = sbc({"gateways": [PHONES]})
    server = (LOOPBACK, ports.public)
    register = _sipsak_register(tmp_path)
    with UdpPeer(STRANGER_IP) as stranger:
        stranger.send(register, server)
        reply = _first(stranger)
        assert reply.startswith(b"SIP/2.0 401 "), reply + proxy.output_tail().encode()
        (line,) = _challenges(reply)
        assert b"algorithm=MD5" in line
        assert len(reply) <= 2 * len(register), (len(register), len(reply))
        assert len(reply) - len(register) <= OVERHEAD_V4

        start = len(stranger.received)
        stranger.send(MIN_INVITE, server)
        reply = _first(stranger, start=start)
        assert reply.startswith(b"SIP/2.0 407 "), reply
        assert len(_challenges(reply)) == 1
        assert len(reply) - len(MIN_INVITE) <= OVERHEAD_V4
        assert len(reply) <= MAX_FACTOR * len(MIN_INVITE), (len(MIN_INVITE), len(reply))


def test_over_tcp_the_challenge_offers_every_algorithm(ports: Ports, sbc: SbcFactory) -> None:
    """A TCP source is at its address: no reflection, so MD5 and SHA-256."""
    sbc({"gateways": [PHONES]})
    with socket.create_connection((LOOPBACK, ports.public), timeout=5,
                                  source_address=(STRANGER_IP, 0)) as tcp:
        tcp.sendall(_request("INVITE", _ruri(ports), tcp.getsockname(), call_id=_call_id("tcp"),
                             cseq=1).replace(b"/UDP ", b"/TCP ", 1))
        reply = _read_message(tcp)
    assert reply.startswith(b"SIP/2.0 407 "), reply
    algorithms = [ln.split(b"algorithm=")[1].split(b",")[0] for ln in _challenges(reply)]
    assert algorithms == [b"MD5", b"SHA-256"]
