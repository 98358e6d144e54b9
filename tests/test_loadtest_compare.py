"""The side-by-side harness (loadtest/compare.py): the Kamailio reference
config loads, one tiny bounded run of each kind completes against both
servers and gives the figures the table and the charts read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from loadtest import compare
from loadtest.harness import sipp_binary
from loadtest.kamailio import check_config, kamailio_binary, parse_drop_stats
from loadtest.targets import KamailioTarget, Layout

needs_kamailio = pytest.mark.skipif(kamailio_binary() is None, reason="kamailio not installed")
needs_tools = pytest.mark.skipif(
    kamailio_binary() is None or sipp_binary() is None or shutil.which("gcc") is None,
    reason="needs kamailio, sipp and gcc",
)


@needs_kamailio
def test_reference_config_passes_kamailio_check() -> None:
    layout = Layout("127.0.0.10", 5999, "127.0.0.11", 5998, "127.0.0.20", 5997, "127.0.0.1")
    out = check_config(KamailioTarget().values(layout))
    assert "127.0.0.10" in out and "127.0.0.11" in out


@needs_tools
def test_one_tiny_run_of_each_side(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    charts = tmp_path / "charts"
    code = compare.main(
        [
            "--scenarios",
            "calls,options-flood,calls-under-fire",
            "--repeat",
            "1",
            "--seconds",
            "1",
            "--cps",
            "10",
            "--call-ms",
            "200",
            "--flood-rates",
            "2000",
            "--fire-cps",
            "10",
            "--fire-call-ms",
            "200",
            "--fire-steps",
            "1000",
            "--fire-sources",
            "50",
            "--kamailio-children",
            "1",
            "--json",
            str(out),
            "--charts",
            str(charts),
            "--workdir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    cases = {c["scenario"]: c for c in doc["cases"]}
    assert set(cases) == {"calls", "options-flood", "calls-under-fire"}
    for case in cases.values():
        assert set(case["ratio"]) == set(case["sbc"]["median"])
        for target in ("sbc", "kamailio"):
            assert len(case[target]["runs"]) == 1
    for target in ("sbc", "kamailio"):
        calls = cases["calls"][target]["median"]
        assert calls["succeeded"] == 10 and calls["failed"] == 0
        assert calls["relayed_pps"] > 0  # INVITE, ACK, BYE one way; 100, 180, 200s the other
        flood = cases["options-flood"][target]["median"]
        assert flood["offered_pps"] > 0 and flood["handled_pps"] > 0
        assert flood["cpu_us_per_packet"] is not None
        assert flood["to_backend"] == 0 and flood["forwarded_pps"] < 1
        # Each side counts its drops by reason: every flood packet is in one.
        run = cases["options-flood"][target]["runs"][0]
        reasons = {k.rpartition(":")[2] for k in run["drops"]}
        assert reasons and reasons <= {"scanner", "banned"}, run["drops"]
        assert sum(run["drops"].values()) >= 0.99 * run["handled"], run
        fire = cases["calls-under-fire"][target]
        assert [s["flood_pps"] for s in fire["steps"]] == [1000]
        assert fire["median"]["max_flood_pps_ok"] == 1000
        step = fire["steps"][0]
        # Answered in time (a few ms on loopback), CPU counted while the flood ran.
        assert step["success_pct"] == 100.0 and 0 < step["answer_p99_ms"] < 1000
        assert step["cpu_us_per_packet"] is not None and step["cpu_us_per_packet"] > 0
    assert sorted(p.name for p in charts.iterdir()) == [
        "calls-under-fire.png",
        "cpu-per-packet.png",
    ]


def test_kamailio_drop_statistics_parsed_by_reason() -> None:
    text = ("script:drop_banned = 2000\nscript:drop_scanner = 5\n"
            "script:drop_malformed = 0\ncore:rcv_requests = 9\n")
    assert parse_drop_stats(text) == {"banned": 2000, "scanner": 5}
