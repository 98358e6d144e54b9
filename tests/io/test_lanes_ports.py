"""Two ports, on real loopback sockets: `lanes.trusted_port` without
nftables. A gateway told to send to the trusted port is answered from it; a
stranger who sends there gains nothing (screened and counted like any
other, served from the untrusted budget); TCP keeps connection slots for
gateways when strangers fill the rest."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncio_dgram

from sbc.config import parse_config, summary
from sbc.core.reasons import DropReason, TransportEvent
from sbc.io.server import Server
from tests.io.test_transport import free_port
from tests.io.test_transport_limits import closed_by_sbc, connect

GATEWAY = "127.0.0.4"
STRANGER = "127.0.0.9"


def invite(port: int, n: int) -> bytes:
    return (
        f"INVITE sip:1000@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {GATEWAY}:{port};branch=z9hG4bK-lane-{n}\r\n"
        f"From: <sip:alice@{GATEWAY}>;tag=a{n}\r\nTo: <sip:1000@127.0.0.1>\r\n"
        f"Call-ID: lane-{n}@test\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{GATEWAY}:{port}>\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


OPTIONS = (f"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {STRANGER}:5555;branch=z9hG4bK-o\r\n"
           f"From: <sip:x@{STRANGER}>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o@test\r\n"
           "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


@asynccontextmanager
async def running(tmp_path: Path, extra: str = "") -> AsyncIterator[tuple[Server, int, int, object]]:
    pub, trusted, priv, back = free_port(), free_port(), free_port(), free_port()
    cfg = parse_config(
        f"gateways: [{{name: carrier, ip: [{GATEWAY}]}}]\n"
        "admin: {enabled: false}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        f"public: {{host: 127.0.0.1, port: {pub}, transports: [udp, tcp]}}\n"
        f"private: {{host: 127.0.0.1, port: {priv}}}\n"
        f"backend: {{host: 127.0.0.1, port: {back}}}\n"
        f"lanes: {{trusted_port: {trusted}}}\n" + extra)
    assert summary(cfg)["lanes"] == "two_ports"
    backend = await asyncio_dgram.bind(("127.0.0.1", back))
    server = Server(cfg)
    await server.start()
    try:
        yield server, pub, trusted, backend
    finally:
        await server.stop()
        backend.close()


async def recv(sock: asyncio_dgram.DatagramServer, timeout: float = 5.0) -> tuple[bytes, tuple]:  # type: ignore[name-defined]
    return await asyncio.wait_for(sock.recv(), timeout)


async def test_a_gateway_on_the_trusted_port_is_answered_from_it(tmp_path: Path) -> None:
    async with running(tmp_path) as (server, pub, trusted, backend):
        gw = await asyncio_dgram.bind((GATEWAY, 0))
        port = gw.sockname[1]
        try:
            await gw.send(invite(port, 1), ("127.0.0.1", trusted))
            data, addr = await recv(gw)
            assert data.startswith(b"SIP/2.0 100") and addr == ("127.0.0.1", trusted)
            sent, _ = await recv(backend)  # type: ignore[attr-defined]
            assert sent.startswith(b"INVITE ")
            # The same gateway on the public port: answered from the public port.
            await gw.send(invite(port, 2), ("127.0.0.1", pub))
            data, addr = await recv(gw)
            assert data.startswith(b"SIP/2.0 100") and addr == ("127.0.0.1", pub)
            lanes = server.stats()["lanes"]
            assert lanes["trusted"] == 1 and lanes["untrusted"] == 1
            assert lanes["strangers_on_trusted_port"] == 0
        finally:
            gw.close()


async def test_a_stranger_on_the_trusted_port_is_treated_as_untrusted(tmp_path: Path) -> None:
    async with running(tmp_path) as (server, pub, trusted, backend):
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger.bind((STRANGER, 0))
        try:
            stranger.sendto(OPTIONS, ("127.0.0.1", trusted))
            tally = server.engine.tally
            deadline = asyncio.get_running_loop().time() + 5
            while tally.screen_drops().get(DropReason.UNTRUSTED_OPTIONS, 0) < 1:
                assert asyncio.get_running_loop().time() < deadline, server.stats()
                await asyncio.sleep(0.01)
            lanes = server.stats()["lanes"]
            assert lanes["strangers_on_trusted_port"] == 1 and lanes["trusted"] == 0
            assert lanes["untrusted"] == 1  # served from the untrusted budget
        finally:
            stranger.close()


async def test_reserved_connection_slots_let_a_gateway_in(tmp_path: Path) -> None:
    extra = ("limits: {max_tcp_connections: 10, max_tcp_connections_per_source: 10}\n"
             "screen: {rate_per_ip: {rate: 100, burst: 100}}\n")
    async with running(tmp_path, extra) as (server, pub, _trusted, _backend):
        assert server.engine.conn_limits.reserved == 1  # a tenth of the cap at most
        kept = [await connect(pub, STRANGER) for _ in range(9)]
        reader, writer = await connect(pub, STRANGER)
        assert await closed_by_sbc(reader)  # the tenth slot is the gateway's
        assert server.engine.tally.transport[TransportEvent.TCP_CONNECTION_CAP] == 1
        gw_reader, gw_writer = await connect(pub, GATEWAY)
        assert not await closed_by_sbc(gw_reader, timeout=0.3)
        assert server.engine.conn_counts.total == 10
        for _, w in [*kept, (reader, writer), (gw_reader, gw_writer)]:
            w.close()
