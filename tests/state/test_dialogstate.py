"""Calls in progress across a restart, through the SQLite store."""

from __future__ import annotations

from pathlib import Path

from sbc.core.engine import Engine
from sbc.core.identify.gateways import GatewayTable
from sbc.core.policy.limits import CallPolicy, GatewayPolicy
from sbc.core.settings import ProxySettings
from sbc.core.verdict import PRIVATE, PUBLIC_UDP
from sbc.state.dialogs import DialogKeeper
from sbc.sip import parse_message
from tools.standin import answer
from sbc.state.store import Store
from tests.core.test_limits import BACKEND, CALLER, invite


def engine() -> Engine:
    return Engine(ProxySettings(), secret=b"k" * 16,
                  gateways=GatewayTable([("acme", ["127.0.0.2"], [])]),
                  policy=CallPolicy({"acme": GatewayPolicy(max_concurrent=3, max_duration=60.0)}))


def test_restart_in_the_middle_of_calls(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    clock = [100.0]
    eng = engine()
    keeper = DialogKeeper(eng, Store(db), lambda: clock[0])
    oks = []
    for n in range(3):
        out = [s[2] for s in eng.receive(invite(n), CALLER, clock[0]).sends if s[0] >= PRIVATE][0]
        *_, ok = answer(out, "127.0.0.1", 5070)
        oks.append(eng.receive(ok, BACKEND, clock[0]).sends[0][2])
    # A call that starts and ends before a flush never reaches the file.
    keeper.flush()
    keeper.store.close()

    clock[0] = 5.0  # a new process: another monotonic origin
    eng2 = engine()
    keeper2 = DialogKeeper(eng2, Store(db), lambda: clock[0])
    assert keeper2.restore() == 3
    assert eng2.dialogs.active("acme") == 3
    assert eng2.receive(invite(9), CALLER, clock[0]).sends[0][2].startswith(b"SIP/2.0 503")
    # The BYE of a call from before the restart frees exactly its slot.
    to = (parse_message(oks[0]).get("to") or b"").decode()
    bye = (f"BYE sip:vos@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-b\r\n"
           f"From: <sip:a@127.0.0.2>;tag=f0\r\nTo: {to}\r\nCall-ID: call-0\r\nCSeq: 2 BYE\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    out = [s[2] for s in eng2.receive(bye, CALLER, clock[0]).sends][0]
    eng2.receive(answer(out, "127.0.0.1", 5070)[0], BACKEND, clock[0])
    assert eng2.dialogs.active("acme") == 2
    # The duration limit still ends the others, with BYEs to both sides.
    byes = [s for s in eng2.on_timer(clock[0] + 61) if s[2].startswith(b"BYE")]
    assert len(byes) == 4 and {s[0] for s in byes} == {PUBLIC_UDP, PRIVATE}
    assert eng2.dialogs.active("acme") == 0
    keeper2.flush()
    assert keeper2.store.load_dialogs(0.0) == []
    keeper2.store.close()


def test_a_call_on_the_standby_stays_there_across_a_restart(tmp_path: Path) -> None:
    """The dialog's VOS3000 is kept in the file: after a restart the caller's BYE
    goes to the standby the call was set up on, not to the primary."""
    standby = ("127.0.0.3", 5070)
    settings = ProxySettings(standby=(standby,))
    db = tmp_path / "state.sqlite"
    eng = Engine(settings, secret=b"k" * 16, gateways=GatewayTable([("acme", ["127.0.0.2"], [])]))
    keeper = DialogKeeper(eng, Store(db), lambda: 100.0)
    out = [s[2] for s in eng.receive(invite(1), CALLER, 100.0).sends if s[0] >= PRIVATE][0]
    unavailable = answer(out, "127.0.0.1", 5070)[0].replace(b"100 Trying", b"503 Service Unavailable")
    retry = [s for s in eng.receive(unavailable, BACKEND, 100.0).sends if s[1] == standby]
    *_, ok = answer(retry[0][2], *standby)
    ok_out = eng.receive(ok, BACKEND._replace(host=standby[0]), 100.1).sends[0][2]
    keeper.flush()
    keeper.store.close()

    eng2 = Engine(settings, secret=b"k" * 16, gateways=GatewayTable([("acme", ["127.0.0.2"], [])]))
    keeper2 = DialogKeeper(eng2, Store(db), lambda: 5.0)
    assert keeper2.restore() == 1
    to = (parse_message(ok_out).get("to") or b"").decode()
    bye = (f"BYE sip:vos@127.0.0.3:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-b\r\n"
           f"From: <sip:a@127.0.0.2>;tag=f1\r\nTo: {to}\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    assert [s[1] for s in eng2.receive(bye, CALLER, 5.0).sends] == [standby]
    keeper2.store.close()


def test_the_batch_is_written_in_slices_and_in_order(tmp_path: Path) -> None:
    """Steps write at most their slice each; a call ended while its row
    waits in the backlog is deleted after that row is written, not left
    in the file to come back after a restart."""
    db = tmp_path / "state.sqlite"
    eng = engine()
    eng.policy = CallPolicy({"acme": GatewayPolicy(max_concurrent=50, max_duration=60.0)})
    keeper = DialogKeeper(eng, Store(db), lambda: 100.0)
    byes = {}
    for n in range(5):
        out = [s[2] for s in eng.receive(invite(n), CALLER, 100.0).sends if s[0] >= PRIVATE][0]
        *_, ok = answer(out, "127.0.0.1", 5070)
        byes[n] = eng.receive(ok, BACKEND, 100.0).sends[0][2]
    keeper.take()
    assert keeper.step(limit=2) is True
    assert len(keeper.store.load_dialogs(0.0)) == 2
    # call-4's row still waits in the backlog when the call ends
    to = (parse_message(byes[4]).get("to") or b"").decode()
    bye = (f"BYE sip:vos@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5061;branch=z9hG4bK-b4\r\n"
           f"From: <sip:a@127.0.0.2>;tag=f4\r\nTo: {to}\r\nCall-ID: call-4\r\nCSeq: 2 BYE\r\n"
           f"Content-Length: 0\r\n\r\n").encode()
    out = [s[2] for s in eng.receive(bye, CALLER, 100.5).sends][0]
    eng.receive(answer(out, "127.0.0.1", 5070)[0], BACKEND, 100.5)
    keeper.take()
    while keeper.step(limit=2):
        pass
    kept = sorted(r.call_id for r in keeper.store.load_dialogs(0.0))
    assert kept == [b"call-0", b"call-1", b"call-2", b"call-3"]
    assert keeper.pending == 0 and not keeper.backlogged
    keeper.store.close()
