"""Connection limits on real loopback sockets: slow senders, silent and
half-open clients, TLS clients that never shake hands, too many connections
from one address. Each is closed by sbc (the client sees EOF or a reset),
counted by reason, and recorded as an offense; repeated, they earn a ban.

Deadlines are 0.3 s here; clients come from their own 127.0.0.x address,
which is not a gateway (gateway sources are never banned)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import asyncio_dgram
import pytest

from sbc.config import parse_config
from sbc.io.server import Server

from .test_transport import free_port
from ..tlscerts import make_certs

DEADLINE = 0.3


@contextlib.asynccontextmanager
async def running(tmp_path, extra: str = "") -> AsyncIterator[tuple[Server, int, int]]:
    pub, tls, priv, back = free_port(), free_port(), free_port(), free_port()
    certs = make_certs(tmp_path / "certs")
    cfg = parse_config(
        "gateways: [{name: carrier, ip: [127.0.0.9]}]\n"
        "admin: {enabled: false}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        f"public: {{host: 127.0.0.1, port: {pub}, tls_port: {tls}, "
        "transports: [udp, tcp, tls]}\n"
        f"tls: {{cert_file: {certs.server.cert}, key_file: {certs.server.key}}}\n"
        f"private: {{host: 127.0.0.1, port: {priv}}}\n"
        f"backend: {{host: 127.0.0.1, port: {back}}}\n"
        + extra
    )
    backend = await asyncio_dgram.bind(("127.0.0.1", back))
    server = Server(cfg)
    await server.start()
    try:
        yield server, pub, tls
    finally:
        await server.stop()
        backend.close()


def limits(**values: object) -> str:
    base = {"tcp_message_deadline_s": DEADLINE, "tls_handshake_timeout_s": DEADLINE,
            "tcp_idle_timeout_s": 60.0, "max_tcp_message": 2048, "tcp_buffer": 4096}
    base.update(values)
    return "limits: {" + ", ".join(f"{k}: {v}" for k, v in base.items()) + "}\n"


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_sbc(reader: asyncio.StreamReader, timeout: float = 5.0) -> bool:
    """Read until sbc closes the connection (EOF or reset); False if it stays open."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):  # a reset, or a TLS alert before the close
        pass
    return True


def offenses(server: Server, host: str) -> dict[str, int]:
    rec = server.engine.bans.offenses.get(host, server.loop.time())
    return dict(rec.kinds) if rec is not None else {}


async def test_slow_sender_closed_at_message_deadline(tmp_path) -> None:
    async with running(tmp_path, limits()) as (server, pub, _):
        reader, writer = await connect(pub, "127.0.0.5")
        head = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.5:1;branch=z9hG4bKs\r\n"

        async def trickle() -> None:  # one byte every 50 ms, far past the deadline
            with contextlib.suppress(ConnectionError):
                for byte in head:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        assert await closed_by_sbc(reader)
        sender.cancel()
        assert server.engine.tally.transport["tcp_message_deadline"] == 1
        assert offenses(server, "127.0.0.5") == {"tcp_message_deadline": 1}
        assert not server.tcp_conns and server.engine.conn_counts.total == 0
        writer.close()


async def test_silent_client_closed(tmp_path) -> None:
    async with running(tmp_path, limits()) as (server, pub, _):
        reader, writer = await connect(pub, "127.0.0.5")
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tcp_no_message"] == 1
        assert offenses(server, "127.0.0.5") == {"tcp_no_message": 1}
        writer.close()


async def test_tls_client_without_handshake_closed(tmp_path) -> None:
    async with running(tmp_path, limits()) as (server, _, tls):
        reader, writer = await connect(tls, "127.0.0.5")  # plain TCP: no ClientHello
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tls_handshake_timeout"] == 1
        assert offenses(server, "127.0.0.5") == {"tls_handshake_timeout": 1}
        assert not server.tls_conns and server.engine.conn_counts.total == 0
        writer.close()


async def test_tls_client_sending_garbage_closed(tmp_path) -> None:
    async with running(tmp_path, limits()) as (server, _, tls):
        reader, writer = await connect(tls, "127.0.0.5")
        writer.write(b"OPTIONS sip:x SIP/2.0\r\n\r\n")  # SIP in the clear on the TLS port
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tls_handshake_failed"] == 1
        assert offenses(server, "127.0.0.5") == {"tls_handshake_failed": 1}
        writer.close()


async def test_too_many_connections_from_one_source(tmp_path) -> None:
    async with running(tmp_path, limits(max_tcp_connections_per_source=3)) as (server, pub, tls):
        kept = [await connect(pub, "127.0.0.6") for _ in range(2)] + [await connect(tls, "127.0.0.6")]
        reader, writer = await connect(pub, "127.0.0.6")  # the fourth, TCP and TLS together
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tcp_per_source_cap"] == 1
        assert offenses(server, "127.0.0.6") == {"tcp_per_source_cap": 1}
        # The first three are untouched, and another source is still welcome.
        r, w = kept[0]
        w.write(b"\r\n\r\n")
        assert await asyncio.wait_for(r.readexactly(2), 5) == b"\r\n"
        other_r, other_w = await connect(pub, "127.0.0.7")
        other_w.write(b"\r\n\r\n")
        assert await asyncio.wait_for(other_r.readexactly(2), 5) == b"\r\n"
        assert server.engine.conn_counts.get("127.0.0.6") == 3
        for _, w in [*kept, (reader, writer), (other_r, other_w)]:
            w.close()


async def test_opening_connections_too_fast_is_rate_limited(tmp_path) -> None:
    """Each new connection spends a token of its source's screen rate (burst 3
    here): the fourth in a row is closed at once, counted and an offense,
    while the open ones and other sources are untouched."""
    screen = "screen: {rate_per_ip: {rate: 0.1, burst: 3}}\n"
    async with running(tmp_path, limits() + screen) as (server, pub, tls):
        kept = [await connect(pub, "127.0.0.8") for _ in range(2)] + [await connect(tls, "127.0.0.8")]
        reader, writer = await connect(pub, "127.0.0.8")
        assert await closed_by_sbc(reader)
        assert server.engine.tally.screen_drops().get("rate_per_ip") == 1
        assert offenses(server, "127.0.0.8") == {"rate_limit": 1}
        assert server.engine.conn_counts.get("127.0.0.8") == 3
        other_r, other_w = await connect(pub, "127.0.0.7")
        other_w.write(b"\r\n\r\n")
        assert await asyncio.wait_for(other_r.readexactly(2), 5) == b"\r\n"
        for _, w in [*kept, (reader, writer), (other_r, other_w)]:
            w.close()


async def test_global_cap_is_counted_but_no_offense(tmp_path) -> None:
    extra = limits(max_tcp_connections=2, max_tcp_connections_per_source=2)
    async with running(tmp_path, extra) as (server, pub, _):
        kept = [await connect(pub, "127.0.0.6"), await connect(pub, "127.0.0.7")]
        reader, writer = await connect(pub, "127.0.0.8")
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tcp_connection_cap"] == 1
        assert offenses(server, "127.0.0.8") == {}
        for _, w in [*kept, (reader, writer)]:
            w.close()


async def test_over_the_buffer_closed_and_an_offense(tmp_path) -> None:
    async with running(tmp_path, limits()) as (server, pub, _):
        reader, writer = await connect(pub, "127.0.0.5")
        writer.write(b"X" * 5000)  # no header end within tcp_buffer
        assert await closed_by_sbc(reader)
        tally = server.engine.tally
        assert tally.transport["tcp_framing"] == 1
        assert tally.parse_errors == {"stream_buffer_full": 1}  # the framing fault, by parse reason
        assert offenses(server, "127.0.0.5") == {"tcp_framing": 1}
        writer.close()


async def test_idle_connection_closed_by_the_sweep_without_offense(tmp_path) -> None:
    async with running(tmp_path, limits(tcp_idle_timeout_s=0.4)) as (server, pub, _):
        reader, writer = await connect(pub, "127.0.0.5")
        writer.write(b"\r\n\r\n")  # a keepalive counts as traffic
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tcp_idle_closed"] == 1
        assert offenses(server, "127.0.0.5") == {}
        writer.close()


async def test_repeated_violations_earn_a_ban(tmp_path) -> None:
    async with running(tmp_path, limits() + "bans: {max_offenses: 2}\n") as (server, pub, tls):
        for port in (pub, tls):
            reader, writer = await connect(port, "127.0.0.5")
            assert await closed_by_sbc(reader)
            writer.close()
        assert server.engine.bans.is_banned("127.0.0.5", server.loop.time())
        assert server.engine.bans.bans["127.0.0.5"].counts == {
            "tcp_no_message": 1, "tls_handshake_timeout": 1}
        reader, writer = await connect(pub, "127.0.0.5")  # refused at once now
        assert await closed_by_sbc(reader, timeout=DEADLINE / 2)
        assert server.engine.tally.screen_drops()["banned"] == 1
        writer.close()


async def test_gateway_sources_are_closed_but_never_banned(tmp_path) -> None:
    async with running(tmp_path, limits() + "bans: {max_offenses: 1}\n") as (server, pub, _):
        reader, writer = await connect(pub, "127.0.0.9")
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tcp_no_message"] == 1
        assert not server.engine.bans.is_banned("127.0.0.9", server.loop.time())
        writer.close()


@pytest.mark.parametrize("offense", [False, True])
async def test_connection_offenses_can_be_switched_off(tmp_path, offense: bool) -> None:
    extra = limits() + f"bans: {{offenses: {{connection: {str(offense).lower()}}}}}\n"
    async with running(tmp_path, extra) as (server, pub, _):
        reader, writer = await connect(pub, "127.0.0.5")
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tcp_no_message"] == 1
        assert offenses(server, "127.0.0.5") == ({"tcp_no_message": 1} if offense else {})
        writer.close()

