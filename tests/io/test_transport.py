"""The I/O shell on real loopback sockets: a Server in the test's own loop,
a raw TCP client on the public side, an asyncio-dgram socket as VOS3000."""

from __future__ import annotations

import asyncio
import socket

import asyncio_dgram
import pytest

from sbc.config import parse_config
from sbc.io.server import Server
from sbc.sip import parse_message
from tools.standin import answer


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port")


@pytest.fixture
async def env(tmp_path):
    pub, priv, back = free_port(), free_port(), free_port()
    cfg = parse_config(
        "gateways: [{name: loopback, ip: [127.0.0.0/8]}]\n"
        "admin: {enabled: false}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        f"public: {{host: 127.0.0.1, port: {pub}}}\n"
        f"private: {{host: 127.0.0.1, port: {priv}}}\n"
        f"backend: {{host: 127.0.0.1, port: {back}}}\n"
        "limits: {max_tcp_message: 2048, tcp_buffer: 4096}\n"
    )
    backend = await asyncio_dgram.bind(("127.0.0.1", back))
    server = Server(cfg)
    await server.start()
    try:
        yield server, pub, backend
    finally:
        await server.stop()
        backend.close()


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + (await asyncio.wait_for(reader.readexactly(length), 5) if length else b"")


INVITE = (
    "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bK-tcp-1\r\n"
    "From: <sip:alice@127.0.0.1>;tag=a\r\nTo: <sip:1000@127.0.0.1>\r\n"
    "Call-ID: tcp-1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port};transport=tcp>\r\n"
    "Content-Length: 0\r\n\r\n"
)


async def test_tcp_caller_reaches_udp_backend_and_back(env) -> None:
    server, pub, backend = env
    reader, writer = await asyncio.open_connection("127.0.0.1", pub)
    port = writer.get_extra_info("sockname")[1]
    writer.write(INVITE.format(port=port).encode())
    trying = await read_message(reader)
    assert trying.startswith(b"SIP/2.0 100")
    data, addr = await asyncio.wait_for(backend.recv(), 5)
    assert data.startswith(b"INVITE ") and b";transport=tcp;lr" in data
    for resp in answer(data, "127.0.0.1", backend.sockname[1]):
        await backend.send(resp, addr)
    ringing = await read_message(reader)
    ok = await read_message(reader)
    assert ringing.startswith(b"SIP/2.0 180") and ok.startswith(b"SIP/2.0 200")
    assert parse_message(ok).get("via") == b"SIP/2.0/TCP 127.0.0.1:%d;branch=z9hG4bK-tcp-1;received=127.0.0.1;rport=%d" % (port, port)
    writer.close()


async def test_keepalive_ping_gets_pong(env) -> None:
    server, pub, _ = env
    reader, writer = await asyncio.open_connection("127.0.0.1", pub)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
    writer.close()


@pytest.mark.parametrize("junk", [
    b"INVITE sip:x SIP/2.0\r\nVia: a\r\n\r\n",           # no Content-Length on a stream
    b"X" * 5000,                                          # over the buffer cap, no header end
    b"INVITE sip:x SIP/2.0\r\nContent-Length: 9999\r\n\r\n",  # larger than a TCP message may be
])
async def test_bad_stream_closes_connection(env, junk: bytes) -> None:
    server, pub, _ = env
    reader, writer = await asyncio.open_connection("127.0.0.1", pub)
    writer.write(junk)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # EOF: closed by sbc
    tally = server.engine.tally
    assert tally.transport["tcp_framing"] == 1 and sum(tally.parse_errors.values()) == 1
    writer.close()


async def test_udp_datagram_over_cap_is_refused_never_forwarded(env) -> None:
    server, pub, backend = env
    client = await asyncio_dgram.connect(("127.0.0.1", pub))
    big = INVITE.format(port=1).replace("Content-Length: 0", "X-Pad: " + "p" * 20000 + "\r\nContent-Length: 0")
    await client.send(big.encode())
    small = INVITE.format(port=client.sockname[1]).replace("tcp-1@test", "udp-1@test").replace("TCP", "UDP")
    await client.send(small.encode())
    # The caller is a gateway: told why (RFC 3261 §21.5.14), then served as usual.
    data, _ = await asyncio.wait_for(client.recv(), 5)
    assert data.startswith(b"SIP/2.0 513 Message Too Large\r\n") and b"tcp-1@test" in data
    data, _ = await asyncio.wait_for(client.recv(), 5)
    assert data.startswith(b"SIP/2.0 100")
    assert server.engine.tally.parse_errors["too_large"] == 1
    client.close()


async def test_dual_stack_listener_knows_ipv4_peers_by_their_own_address(tmp_path) -> None:
    """Listening on '::', an IPv4 caller arrives as ::ffff:a.b.c.d; sbc names it
    a.b.c.d everywhere (its per-source rate, its /24, its ban) and answers it."""
    pub, priv, back = free_port(), free_port(), free_port()
    cfg = parse_config(
        "gateways: [{name: loopback, ip: [127.0.0.1/32]}]\n"
        "admin: {enabled: false}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        f"public: {{host: '::', port: {pub}, advertise_host: 127.0.0.1}}\n"
        f"private: {{host: 127.0.0.1, port: {priv}}}\n"
        f"backend: {{host: 127.0.0.1, port: {back}}}\n"
        "screen: {rate_per_ip: {rate: 1, burst: 2}}\n"
    )
    backend = await asyncio_dgram.bind(("127.0.0.1", back))
    server = Server(cfg)
    await server.start()
    caller = await asyncio_dgram.bind(("127.0.0.9", 0))
    try:
        for n in range(3):  # from an address that is no gateway: over its rate at the third
            await caller.send(
                f"MESSAGE sip:1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.9:5062;branch=z9hG4bK{n}\r\n"
                f"From: <sip:a@127.0.0.9>;tag={n}\r\nTo: <sip:1@127.0.0.1>\r\nCall-ID: m{n}\r\n"
                "CSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n".encode(), ("127.0.0.1", pub))
        deadline = asyncio.get_running_loop().time() + 5
        while not server.engine.tally.screen_drops().get("rate_per_ip"):
            assert asyncio.get_running_loop().time() < deadline, server.stats()
            await asyncio.sleep(0.01)
        assert list(server.screen.per_ip) == ["127.0.0.9"]
        assert list(server.screen.per_net) == ["127.0.0"]  # its /24, not one /64 for all of IPv4
        # A gateway on IPv4 gets its answer through the IPv6 socket.
        gw = await asyncio_dgram.bind(("127.0.0.1", 0))
        try:
            port = gw.sockname[1]
            await gw.send(
                f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKo\r\n"
                "From: <sip:gw@127.0.0.1>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode(), ("127.0.0.1", pub))
            data, _ = await asyncio.wait_for(gw.recv(), 5)
            assert data.startswith(b"SIP/2.0 200")
        finally:
            gw.close()
    finally:
        caller.close()
        await server.stop()
        backend.close()
