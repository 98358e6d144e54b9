"""Reload: a good file is swapped in without dropping calls, bans or
registrations; a bad one is refused and the old config stays in force."""

from __future__ import annotations

from pathlib import Path

from sbc.config import load_config
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source
from sbc.io.server import Server
from tests.core.test_limits import invite
from tests.io.test_transport import free_port


def config_text(tmp_path: Path, ports: tuple[int, int, int], extra_gateway: str = "",
                cps: int = 0) -> str:
    pub, priv, back = ports
    return (f"public: {{host: 127.0.0.1, port: {pub}, transports: [udp]}}\n"
            f"private: {{host: 127.0.0.1, port: {priv}}}\n"
            f"backend: {{host: 127.0.0.1, port: {back}}}\n"
            f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
            "admin: {enabled: false}\n"
            "gateways:\n"
            f"  - {{name: acme, ip: [127.0.0.2], limits: {{cps: {cps}}}}}\n"
            f"{extra_gateway}")


async def test_reload_swaps_gateways_and_limits_keeps_calls(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    path = tmp_path / "sbc.yaml"
    path.write_text(config_text(tmp_path, ports))
    server = Server(load_config(path), config_path=str(path))
    await server.start()
    try:
        engine = server.engine
        assert engine.receive(invite(1), Source(PUBLIC_UDP, "127.0.0.2", 5061), 0.0).kind == "forward"
        newcomer = invite(2).replace(b"127.0.0.2:5061", b"127.0.0.9:5061")
        assert engine.receive(newcomer, Source(PUBLIC_UDP, "127.0.0.9", 5061), 0.0).kind == "drop"
        server.engine.bans.ban("198.51.100.1", 0.0, duration=600)

        # A broken file: refused, the old config stays.
        path.write_text("public: {port: 99999}\n")
        ok, why = await server.reload()
        assert not ok and "public.port" in why
        assert server.cfg.gateways[0].name == "acme"

        # Moving a socket needs a restart.
        path.write_text(config_text(tmp_path, (ports[0], free_port(), ports[2])))
        ok, why = await server.reload()
        assert not ok and why.startswith("private")

        # A good one: a new gateway and a CPS limit, from the next packet on.
        path.write_text(config_text(tmp_path, ports, "  - {name: newco, ip: [127.0.0.9]}\n", cps=1))
        ok, why = await server.reload()
        assert ok, why
        assert engine.receive(newcomer, Source(PUBLIC_UDP, "127.0.0.9", 5061), 1.0).kind == "forward"
        assert len(engine.dialogs) == 2 and engine.dialogs.active("acme") == 1  # the call stays
        assert engine.bans.is_banned("198.51.100.1", 1.0)  # the ban stays
        first = engine.receive(invite(3), Source(PUBLIC_UDP, "127.0.0.2", 5061), 1.0)
        second = engine.receive(invite(4), Source(PUBLIC_UDP, "127.0.0.2", 5061), 1.0)
        assert first.kind == "forward" and second.sends[0][2].startswith(b"SIP/2.0 503")
        assert any(s[0] >= PRIVATE for s in first.sends)
    finally:
        await server.stop()


async def test_reload_opens_and_closes_the_unknown_source_screen(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    path = tmp_path / "sbc.yaml"
    path.write_text(config_text(tmp_path, ports))
    server = Server(load_config(path), config_path=str(path))
    await server.start()
    try:
        # IP gateways only, unknown sources dropped: refused before the parse.
        assert server.screen.check(invite(1), "127.0.0.9", 5061, 0.0) == "unknown_source_screened"
        assert server.engine.receive(invite(2), Source(PUBLIC_UDP, "127.0.0.2", 5061),
                                     0.0).kind == "forward"

        # Digest accounts can admit anyone: the engine must see the request.
        digest = ("  - {name: phones, digest: [{username: '1001', password: 's3cret-pw'}]}\n")
        path.write_text(config_text(tmp_path, ports, digest))
        ok, why = await server.reload()
        assert ok, why
        assert server.screen.check(invite(3), "127.0.0.9", 5061, 1.0) is None

        # Closed again, with acme gone: its call in progress still gets through.
        path.write_text(config_text(tmp_path, ports).replace("127.0.0.2", "127.0.0.3"))
        ok, why = await server.reload()
        assert ok, why
        assert server.screen.check(invite(4), "127.0.0.9", 5061, 2.0) == "unknown_source_screened"
        assert server.screen.check(invite(2), "127.0.0.2", 5061, 2.0) is None
    finally:
        await server.stop()
