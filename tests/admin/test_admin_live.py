"""The admin endpoint inside a running sbc: real sockets on loopback, VOS3000
played by an asyncio-dgram socket that answers the OPTIONS pings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncio_dgram
from prometheus_client.parser import text_string_to_metric_families

from sbc.config import load_config
from sbc.io.server import Server
from tools.standin import answer
from tests.io.test_transport import free_port

TOKEN = "t0ken-for-the-admin-tests"


async def test_admin_serves_inside_sbc(tmp_path: Path) -> None:
    pub, priv, back, admin = free_port(), free_port(), free_port(), free_port()
    path = tmp_path / "sbc.yaml"
    path.write_text(
        f"public: {{host: 127.0.0.1, port: {pub}, transports: [udp]}}\n"
        f"private: {{host: 127.0.0.1, port: {priv}}}\n"
        f"backend: {{host: 127.0.0.1, port: {back}}}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        "gateways: [{name: acme, ip: [127.0.0.2], limits: {cps: 5, max_concurrent: 10}}]\n"
        f"admin: {{port: {admin}, token: {TOKEN}, ping_interval_s: 0.2, ping_timeout_s: 0.2}}\n")
    vos = await asyncio_dgram.bind(("127.0.0.1", back))

    async def answer_pings() -> None:
        while True:
            data, addr = await vos.recv()
            for out in answer(data, "127.0.0.1", back):
                await vos.send(out, addr)

    server = Server(load_config(path), config_path=str(path))
    await server.start()
    pinger = asyncio.ensure_future(answer_pings())
    base = f"http://127.0.0.1:{admin}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/api/stats") as r:
                assert r.status == 401
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                async with http.get(base + "/readyz") as r:
                    if r.status == 200:
                        break
                assert asyncio.get_running_loop().time() < deadline, await r.text()
                await asyncio.sleep(0.05)
            async with http.post(base + "/api/bans", headers=auth,
                                 json={"host": "198.51.100.9", "seconds": 60, "reason": "test"}) as r:
                assert r.status in (200, 201), await r.text()
            assert server.engine.bans.is_banned("198.51.100.9", server.loop.time())
            async with http.get(base + "/metrics", headers=auth) as r:
                text = await r.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            gateway_labels = {s.labels.get("gateway") for f in families.values() for s in f.samples}
            assert "acme" in gateway_labels
            async with http.get(base + "/api/gateways", headers=auth) as r:
                assert "acme" in await r.text()

            # VOS3000 goes silent: not ready any more.
            pinger.cancel()
            deadline = asyncio.get_running_loop().time() + 5
            while True:
                async with http.get(base + "/readyz") as r:
                    if r.status == 503:
                        break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
    finally:
        pinger.cancel()
        await server.stop()
        vos.close()
