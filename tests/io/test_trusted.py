"""The proved sources kept in step with the engine and the kernel
(sbc/io/trusted.py), through the engine's own sinks: a confirmed dialog
and a registration prove a source, a gateway is never listed, the sweep
renews what still holds and lets the rest lapse, and each step reaches the
kernel's set."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sbc.app import build_components
from sbc.config import parse_config
from sbc.core.identify.registrar import Binding
from sbc.core.proxy.dialogs import Dialog
from sbc.core.verdict import PUBLIC_UDP, Source


class FakeKernel:
    def __init__(self) -> None:
        self.ops: list[tuple[Any, ...]] = []

    def add(self, host: str, timeout_s: float, kind: str = "banned") -> None:
        self.ops.append(("add", host, round(timeout_s), kind))

    def remove(self, host: str, kind: str = "banned") -> None:
        self.ops.append(("remove", host, kind))


async def test_proofs_follow_the_engine_and_reach_the_kernel(tmp_path: Path) -> None:
    cfg = parse_config(f"gateways: [{{name: gw, ip: [198.51.100.10]}}]\n"
                       f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
                       "lanes: {proof_timeout_s: 100}\n")
    loop = asyncio.get_running_loop()
    parts = build_components(cfg, loop)
    try:
        keeper, engine = parts.trusted, parts.engine
        kernel = FakeKernel()
        keeper.kernel = kernel  # type: ignore[assignment]
        now = loop.time()
        # A confirmed dialog with a phone: proved for proof_timeout_s.
        engine.on_dialog("confirmed", Dialog(b"c1", ("192.0.2.7", 5060), PUBLIC_UDP, now, now + 60))
        # One with a gateway: a gateway rides the lane by configuration.
        engine.on_dialog("confirmed", Dialog(b"c2", ("198.51.100.10", 5060), PUBLIC_UDP, now, now + 60))
        # A registration: until its binding expires.
        engine.on_bindings("1001", [Binding("1001", b"sip:1001@192.0.2.8", Source(PUBLIC_UDP, "192.0.2.8", 5062),
                                            now + 600, b"r1", 1, "gw")])
        assert keeper.trusted("192.0.2.7", 1) and keeper.trusted("192.0.2.8", 1)
        assert keeper.trusted("198.51.100.10", 5060) and "198.51.100.10" not in keeper.sources
        assert not keeper.trusted("203.0.113.1", 5060)
        assert kernel.ops == [("add", "192.0.2.7", 130, "proved"), ("add", "192.0.2.8", 630, "proved")]
        # The reserved connection slots follow the same test.
        assert engine.conn_counts.trusted("192.0.2.7") and engine.conn_counts.trusted("198.51.100.10")
        assert not engine.conn_counts.trusted("203.0.113.1")

        # Past the dialog's proof: it no longer proves itself (its dialog was
        # never in the engine's table), so it lapses; the registration stays.
        kernel.ops.clear()
        keeper.sweep(now + 101)
        assert "192.0.2.7" not in keeper.sources and "192.0.2.8" in keeper.sources
        assert kernel.ops == [("remove", "192.0.2.7", "proved")]
        assert keeper.stats() == {"proved": 1, "proved_refused": 0}
    finally:
        parts.close()
