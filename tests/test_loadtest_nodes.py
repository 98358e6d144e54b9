"""The several-nodes benchmarks' arguments and arithmetic
(loadtest/bench_nodes.py, loadtest/bench_cluster_concurrency.py), and the
concurrency bench's VOS3000 stand-in counting calls in progress, fed in
memory; the runs themselves are measurements (loadtest/README.md)."""

from __future__ import annotations

import pytest

from loadtest import bench_cluster_concurrency as concurrency
from loadtest import bench_nodes


def test_smoke_is_small_and_bounded() -> None:
    args = bench_nodes.parse_args(["smoke"])
    assert args.nodes == [1, 2] and args.rates == [20] and args.duration == 2.0
    assert args.sources == 8 and args.flood_sources == 1000
    assert args.seconds == 1.0 and args.count == 50_000


@pytest.mark.parametrize("argv", [
    ["calls", "--nodes", "9"], ["calls", "--rates", "0"], ["calls", "--duration", "600"],
    ["calls", "--sources", "65"], ["flood", "--seconds", "61"],
    ["flood", "--flood-sources", "2000000"], ["flood", "--count", "30000000"],
])
def test_out_of_bounds_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench_nodes.parse_args(argv)


def test_calls_split_over_the_callers() -> None:
    assert bench_nodes.split_calls(10, 4) == [3, 3, 2, 2]
    assert sum(bench_nodes.split_calls(10_000, 8)) == 10_000
    assert bench_nodes.caller_source(0) == "127.0.0.31"


def test_concurrency_defaults_are_the_ten_thousand_calls_figure() -> None:
    args = concurrency.parse_args([])
    assert (args.calls, args.nodes, args.limit) == (10_000, 2, 50)
    assert args.rate * args.hold_ms / 1000 > 4 * args.limit  # the limit binds
    with pytest.raises(SystemExit):
        concurrency.parse_args(["--calls", "200000"])


def _request(method: str, call: str, extra: str = "") -> bytes:
    return (f"{method} sip:vos@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\n"
            f"From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>{extra}\r\nCall-ID: {call}\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n").encode()


def test_stand_in_counts_calls_in_progress_from_invite_to_bye() -> None:
    vos = concurrency.CountingVos(0)
    try:
        answers = vos._answer(_request("INVITE", "c1"), 1.0)
        firsts = [a.split(b"\r\n", 1)[0] for a in answers]
        assert firsts == [b"SIP/2.0 100 Trying", b"SIP/2.0 200 OK"]
        vos._answer(_request("INVITE", "c1"), 1.5)  # a retransmission: the same call
        vos._answer(_request("INVITE", "c2"), 2.0)
        vos._answer(_request("ACK", "c1", ";tag=v"), 2.0)
        assert vos._answer(_request("BYE", "c1", ";tag=v"), 3.0)[0].startswith(b"SIP/2.0 200 OK")
        vos._answer(_request("BYE", "c1", ";tag=v"), 3.5)  # the BYE again: counted once
        vos._answer(_request("INVITE", "c3"), 4.0)
        assert (vos.most, len(vos.open), len(vos.seen)) == (2, 2, 3)
        # 1 call for 1 s, 2 calls for 1 s, 1 call for 1 s: 4 call-seconds over 3 s
        assert vos.mean(vos.last) == pytest.approx(4 / 3)
    finally:
        vos.close()
