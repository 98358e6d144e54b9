"""The benchmark targets beside sbc (loadtest/targets.py): the blind relay
that measures the floor under any server on this loop, sbc run by another
interpreter (the compiled core), which must prove which core it loaded, and
sbc run from another folder (loadtest/versions.py, `--baseline REV`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loadtest import bench_calls, relay
from loadtest.harness import REPO, HarnessError, free_ports, sbc_config, sipp_binary, write_config
from loadtest.targets import Layout, RelayTarget, SbcTarget
from loadtest.versions import VersionSbc


def test_the_relay_finds_the_call_id_in_any_spelling() -> None:
    head = b"BYE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
    assert relay._call_id(head + b"Call-ID: abc@h\r\n\r\n") == b"abc@h"
    assert relay._call_id(head + b"call-id:  abc@h \r\n\r\n") == b"abc@h"
    assert relay._call_id(head + b"i: abc@h\r\n\r\n") == b"abc@h"
    assert relay._call_id(head + b"Call-ID: abc@h") == b"abc@h"  # no line end
    assert relay._call_id(head + b"\r\n") is None


def test_the_relay_forgets_at_its_bound_and_drops_what_it_cannot_place() -> None:
    sent: list[tuple[bytes, tuple[str, int]]] = []

    class Out:
        def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
            sent.append((data, addr))

    r = relay.Relay(("127.0.0.20", 5080), max_calls=2)
    r.public, r.private = Out(), Out()  # type: ignore[assignment]
    for n in range(3):
        r.from_public(b"INVITE sip:x SIP/2.0\r\nCall-ID: c%d\r\n\r\n" % n, ("127.0.0.5", 5000 + n))
    assert len(r.calls) == 1  # emptied when the third came
    r.from_private(b"SIP/2.0 200 OK\r\nCall-ID: c2\r\n\r\n", ("127.0.0.20", 5080))
    r.from_private(b"SIP/2.0 200 OK\r\nCall-ID: c0\r\n\r\n", ("127.0.0.20", 5080))
    r.from_public(b"garbage", ("127.0.0.5", 1))
    assert sent[-1] == (b"SIP/2.0 200 OK\r\nCall-ID: c2\r\n\r\n", ("127.0.0.5", 5002))
    assert (r.relayed, r.dropped) == (4, 2)


def test_sipp_calls_complete_through_the_relay(tmp_path: Path) -> None:
    if sipp_binary() is None:
        pytest.fail("sipp not installed (apt-get install sip-tester, or run `make test`)")
    args = bench_calls.parse_args(["--rates", "20", "--duration", "1", "--probe-cps", "5",
                                   "--call-ms", "100", "--no-fine-latency"])
    run = bench_calls.one_run(20, 1, args, tmp_path, RelayTarget(),
                              Layout.pick(gateway="127.0.0.0/8"))
    assert run.errors == []
    assert (run.succeeded, run.failed) == (20, 0)
    assert run.probe_failed == 0 and run.probe_p50_us is not None
    assert run.cpu_us_per_call is not None and run.cpu_us_per_call > 0


def test_a_target_that_expects_another_core_refuses_to_run(tmp_path: Path) -> None:
    target = SbcTarget(name="sbc-compiled", core="no-such-core")
    with pytest.raises(HarnessError, match="no-such-core"):
        target.start(tmp_path, Layout.pick())



def test_a_version_runs_from_its_own_folder(tmp_path: Path) -> None:
    code = tmp_path / "code"
    shutil.copytree(REPO / "sbc", code / "sbc", ignore=shutil.ignore_patterns("__pycache__"))
    with open(code / "sbc" / "__init__.py", "a", encoding="utf-8") as f:
        f.write('\nprint(\'{"event": "copy_imported"}\', flush=True)\n')  # only the copy says so
    public, private, backend = free_ports(3)
    path = write_config(tmp_path / "sbc.yaml", sbc_config(public, private, backend))
    sbc = VersionSbc(path, tmp_path, code)
    sbc.start()
    try:
        assert Path(os.readlink(f"/proc/{sbc.pid}/cwd")).resolve() == code.resolve()
        assert sbc.named("copy_imported")
    finally:
        assert sbc.stop() == 0
