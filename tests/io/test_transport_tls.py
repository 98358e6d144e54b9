"""SIP over TLS on real loopback sockets: a raw TLS client (Python's ssl) as
the caller, an asyncio-dgram socket as a UDP VOS3000. A whole dialog goes
through (INVITE/100/180/200/ACK, then VOS3000's BYE back over the caller's
TLS connection); client certificates are required per gateway."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import asyncio_dgram
import pytest
import yaml

from sbc.config import parse_config
from sbc.io.server import Server
from sbc.sip import name_addr_uri, parse_message, parse_via, split_values
from tools.standin import answer

from .test_transport import free_port, read_message
from .test_transport_limits import closed_by_sbc, offenses
from ..tlscerts import Certs, Pem, make_certs

OPEN = "127.0.0.21"  # gateway "open": no client certificate asked of it
ACME = "127.0.0.20"  # gateway "acme": a certificate naming acme.test required


@contextlib.asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[tuple[Server, int, asyncio_dgram.DatagramServer, Certs]]:
    tls, pub, priv, back = free_port(), free_port(), free_port(), free_port()
    certs = make_certs(tmp_path / "certs")
    cfg = parse_config(
        "gateways:\n"
        f"  - {{name: open, ip: [{OPEN}]}}\n"
        f"  - {{name: acme, ip: [{ACME}], tls: {{require_client_cert: true, subject: acme.test}}}}\n"
        "admin: {enabled: false}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        f"public: {{host: 127.0.0.1, port: {pub}, tls_port: {tls}, transports: [udp, tls]}}\n"
        f"tls: {{cert_file: {certs.server.cert}, key_file: {certs.server.key}, "
        f"ca_file: {certs.ca}}}\n"
        f"private: {{host: 127.0.0.1, port: {priv}}}\n"
        f"backend: {{host: 127.0.0.1, port: {back}}}\n"
        "limits: {tls_handshake_timeout_s: 2.0, tcp_message_deadline_s: 2.0}\n"
    )
    backend = await asyncio_dgram.bind(("127.0.0.1", back))
    server = Server(cfg)
    await server.start()
    try:
        yield server, tls, backend, certs
    finally:
        await server.stop()
        backend.close()


def client_context(certs: Certs, cert: Pem | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


async def tls_connect(port: int, source: str, ctx: ssl.SSLContext
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="sbc.test", local_addr=(source, 0)), 5)


def invite(source: str, port: int, call_id: str) -> bytes:
    return (
        f"INVITE sip:1000@sbc.test SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {source}:{port};branch=z9hG4bK-tls-{call_id}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@acme.test>;tag=a\r\nTo: <sip:1000@sbc.test>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@{source}:{port};transport=tls>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def test_tls_call_through_udp_backend_and_back(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, backend, certs):
        reader, writer = await tls_connect(tls, OPEN, client_context(certs))
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
        port = writer.get_extra_info("sockname")[1]
        writer.write(invite(OPEN, port, "tls-1"))
        assert (await read_message(reader)).startswith(b"SIP/2.0 100")

        data, vos_addr = await asyncio.wait_for(backend.recv(), 5)
        fwd = parse_message(data)
        caller_via = parse_via(split_values(fwd.get_all("via")[1])[0])
        assert caller_via.transport == "TLS"
        assert caller_via.params[b"received"] == OPEN.encode()
        assert caller_via.params[b"rport"] == str(port).encode()
        assert fwd.get_all("record-route")[-1] == (
            f"<sip:127.0.0.1:{tls};transport=tls;lr;r2=on>".encode())
        for resp in answer(data, "127.0.0.1", backend.sockname[1]):
            await backend.send(resp, vos_addr)
        assert (await read_message(reader)).startswith(b"SIP/2.0 180")
        ok = parse_message(await read_message(reader))
        assert ok.status == 200 and len(ok.get_all("via")) == 1

        # ACK along the route set (reversed Record-Route, RFC 3261 §12.1.2).
        routes = [v for raw in ok.get_all("record-route") for v in split_values(raw)]
        to = (ok.get("to") or b"").decode()
        contact = name_addr_uri(ok.get("contact") or b"").decode()
        writer.write((
            f"ACK {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {OPEN}:{port};branch=z9hG4bK-tls-ack\r\n"
            + "".join(f"Route: {r.decode()}\r\n" for r in reversed(routes))
            + f"Max-Forwards: 70\r\nFrom: <sip:alice@acme.test>;tag=a\r\nTo: {to}\r\n"
            f"Call-ID: tls-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").encode())
        ack, _ = await asyncio.wait_for(backend.recv(), 5)
        assert ack.startswith(b"ACK ")

        # VOS3000 hangs up: its BYE reaches the caller over the same TLS connection.
        vos_routes = [v for raw in parse_message(data).get_all("record-route")
                      for v in split_values(raw)]
        bye = (
            f"BYE sip:alice@{OPEN}:{port};transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{backend.sockname[1]};branch=z9hG4bKvosbye\r\n"
            + "".join(f"Route: {r.decode()}\r\n" for r in vos_routes)
            + f"Max-Forwards: 70\r\nFrom: {to}\r\nTo: <sip:alice@acme.test>;tag=a\r\n"
            "Call-ID: tls-1\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n").encode()
        await backend.send(bye, vos_addr)
        got = parse_message(await read_message(reader))
        assert got.method == "BYE" and got.get("route") is None
        top = parse_via(split_values(got.get_all("via")[0])[0])
        assert (top.transport, top.port) == ("TLS", tls)
        vias = b"".join(raw + b"\r\n" for name, raw in got.headers if name == "via")
        rest = b"".join(raw + b"\r\n" for name, raw in got.headers
                        if name in ("from", "to", "call-id", "cseq"))
        writer.write(b"SIP/2.0 200 OK\r\n" + vias + rest + b"Content-Length: 0\r\n\r\n")
        bye_ok, _ = await asyncio.wait_for(backend.recv(), 5)
        assert bye_ok.startswith(b"SIP/2.0 200") and b"CSeq: 7 BYE" in bye_ok
        assert not any(d.active for d in server.engine.dialogs.with_call_id(b"tls-1"))
        assert server.stats()["tls_connections"] == 1
        writer.close()


async def test_tls_below_1_2_refused(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        ctx = client_context(certs)
        with warnings.catch_warnings():  # the client side is old on purpose
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await tls_connect(tls, OPEN, ctx)
        await wait_for_count(server, "tls_handshake_failed")
        assert offenses(server, OPEN) == {}  # a gateway source: counted, never banned


async def wait_for_count(server: Server, name: str, timeout: float = 5.0) -> None:
    """Poll the counter until it is set (the server side may lag the client's view)."""
    async with asyncio.timeout(timeout):
        while not server.engine.tally.transport[name]:
            await asyncio.sleep(0.01)


async def test_client_cert_required_and_accepted(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, backend, certs):
        reader, writer = await tls_connect(tls, ACME, client_context(certs, certs.client))
        port = writer.get_extra_info("sockname")[1]
        writer.write(invite(ACME, port, "tls-cert"))
        assert (await read_message(reader)).startswith(b"SIP/2.0 100")
        data, _ = await asyncio.wait_for(backend.recv(), 5)
        assert b"Call-ID: tls-cert" in data
        assert not any(k.startswith("tls_client_cert") for k in server.engine.tally.transport)
        writer.close()


async def test_client_without_cert_refused(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        reader, writer = await tls_connect(tls, ACME, client_context(certs))
        port = writer.get_extra_info("sockname")[1]
        with contextlib.suppress(ConnectionError):
            writer.write(invite(ACME, port, "tls-nocert"))
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tls_client_cert_missing"] == 1
        assert not server.tls_conns
        writer.close()


async def test_client_cert_with_another_name_refused(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        reader, writer = await tls_connect(tls, ACME, client_context(certs, certs.other))
        assert await closed_by_sbc(reader)
        assert server.engine.tally.transport["tls_client_cert_subject"] == 1
        writer.close()


async def test_client_cert_from_unknown_ca_fails_the_handshake(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        try:
            reader, writer = await tls_connect(tls, ACME, client_context(certs, certs.stranger))
        except (ssl.SSLError, ConnectionError):
            pass  # TLS 1.2: refused within the handshake
        else:  # TLS 1.3: the client is done before the server has judged its certificate
            assert await closed_by_sbc(reader)
            writer.close()
        await wait_for_count(server, "tls_handshake_failed")
        assert "tls_client_cert_missing" not in server.engine.tally.transport


async def test_gateway_without_requirement_takes_any_client(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        for cert in (None, certs.other):
            reader, writer = await tls_connect(tls, OPEN, client_context(certs, cert))
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            writer.close()
        assert not any(k.startswith("tls_") for k in server.engine.tally.transport)


async def test_reload_picks_up_a_new_certificate(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        newer = make_certs(tmp_path / "renewed")
        text = tmp_path / "sbc.yaml"
        cfg = server.cfg.model_dump(mode="json")
        cfg["tls"]["cert_file"], cfg["tls"]["key_file"] = str(newer.server.cert), str(newer.server.key)
        text.write_text(yaml.safe_dump(cfg))
        server.config_path = str(text)
        ok, message = await server.reload()
        assert ok, message
        # The old CA no longer verifies the server; the new one does.
        with pytest.raises(ssl.SSLCertVerificationError):
            await tls_connect(tls, OPEN, client_context(certs))
        reader, writer = await tls_connect(tls, OPEN, client_context(newer))
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.close()


async def test_reload_with_a_bad_key_keeps_the_old_certificate(tmp_path) -> None:
    async with running(tmp_path) as (server, tls, _, certs):
        text = tmp_path / "sbc.yaml"
        cfg = server.cfg.model_dump(mode="json")
        cfg["tls"]["key_file"] = str(certs.client.key)  # not the certificate's key
        text.write_text(yaml.safe_dump(cfg))
        server.config_path = str(text)
        ok, message = await server.reload()
        assert not ok and "tls.cert_file: cannot be used with key_file" in message
        reader, writer = await tls_connect(tls, OPEN, client_context(certs))
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.close()
