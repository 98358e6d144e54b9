"""One registry of names (sbc/core/reasons.py) and one counter table
(sbc/core/tally.py): nothing in the package spells a drop, absorb, refusal,
offense or parse reason as a free string, every name is used, every drop has
its stage, and what sbc absorbs by design is never counted as a drop."""

from __future__ import annotations

import ast
import re
from enum import StrEnum
from pathlib import Path

import pytest

import sbc
from sbc.config.defense import OffensesConfig
from sbc.core.engine import Engine
from sbc.core.identify.auth import DIGEST_OFFENSES
from sbc.core.reasons import (
    CONNECTION_OFFENSES,
    SCREEN_REASONS,
    STAGE,
    Absorbed,
    DropReason,
    Offense,
    ParseReason,
    Refusal,
    Stage,
    TransportEvent,
)
from sbc.core.settings import ProxySettings
from sbc.core.tally import Tally
from sbc.core.verdict import PRIVATE, PUBLIC_UDP, Source
from sbc.sip.errors import reply_phrase
from tools.standin import answer

# The sources of the package under test: this tree's, or an installed wheel's
# (make test-compiled runs a copy of tests/ against .venv-compiled).
SBC = Path(sbc.__file__).resolve().parent

# Calls whose reason argument must be a member of an enum, never a literal.
CALLS = frozenset(("Drop", "refuse", "refuse_gateway", "offense", "SipParseError", "screened",
                   "connection_failed", "transport_event", "abort", "failed"))
# Counters of the tally that must be indexed by a member, never a literal.
TABLES = frozenset(("dropped", "refusals", "parse_errors", "offenses", "spared", "transport"))


def _literal(node: ast.expr) -> bool:
    """A string written in place: a constant, an f-string, or either one
    inside a conditional expression or a boolean operation."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.IfExp):
        return _literal(node.body) or _literal(node.orelse)
    if isinstance(node, ast.BoolOp):
        return any(_literal(v) for v in node.values)
    return False


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal_reasons(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in CALLS:
            args = [*node.args, *(k.value for k in node.keywords)]
            if any(_literal(a) for a in args):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Subscript) and _name(node.value) in TABLES \
                and _literal(node.slice):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_reason_is_a_string_literal_in_the_package() -> None:
    found = [f"{path.relative_to(SBC.parent)}:{line}: {code}"
             for path in sorted(SBC.rglob("*.py"))
             for line, code in _literal_reasons(ast.parse(path.read_text()))]
    assert not found, "\n".join(found)


def test_the_walk_finds_a_literal() -> None:
    code = ('Drop("scanner")\nctx.refuse(403, s, src, now, reason="x")\n'
            'bans.offense(h, "a" if x else Offense.SCANNER, now)\nt.refusals["malformed"] += 1\n'
            'Drop(DropReason.SCANNER)\nctx.tally.failovers["timeout"] += 1\n')
    assert [line for line, _ in _literal_reasons(ast.parse(code))] == [1, 2, 3, 4]


# --------------------------------------------------------------------------
# The registry


ENUMS: list[type[StrEnum]] = [DropReason, Absorbed, Refusal, Offense, TransportEvent, ParseReason]


@pytest.mark.parametrize("enum", ENUMS, ids=lambda e: e.__name__)
def test_names_are_lower_snake_case_and_spell_their_member(enum: type[StrEnum]) -> None:
    for member in enum:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", member.value), member
        assert member.name == member.value.upper(), member


def test_a_drop_and_an_absorbed_message_never_share_a_name() -> None:
    # Both are counted in one table (Tally.dropped), told apart by their type.
    assert not {m.value for m in DropReason} & {m.value for m in Absorbed}


def test_every_drop_has_one_stage_and_the_screen_is_first() -> None:
    assert set(STAGE) == set(DropReason)
    assert SCREEN_REASONS == {DropReason.BANNED, DropReason.RATE_PER_IP, DropReason.RATE_PER_NET,
                              DropReason.RATE_PER_GATEWAY, DropReason.SCANNER,
                              DropReason.UNTRUSTED_OPTIONS, DropReason.UNKNOWN_SOURCE_SCREENED}
    assert set(STAGE.values()) == set(Stage)


def test_connection_offenses_and_the_config_switches_name_offenses() -> None:
    assert all(event.value == offense.value for event, offense in CONNECTION_OFFENSES.items())
    assert TransportEvent.TCP_IDLE_CLOSED not in CONNECTION_OFFENSES
    assert TransportEvent.TCP_CONNECTION_CAP not in CONNECTION_OFFENSES
    switches = set(OffensesConfig.model_fields) - {"connection"}
    assert switches <= {m.value for m in Offense}
    assert DIGEST_OFFENSES <= set(Offense)


def test_every_parse_reason_has_a_reply_phrase() -> None:
    for reason in ParseReason:
        assert reply_phrase(reason).isascii() and reply_phrase(reason).strip()


def _sources() -> str:
    return "\n".join(p.read_text() for p in SBC.rglob("*.py") if p.name != "reasons.py")


@pytest.mark.parametrize("enum", [DropReason, Absorbed, Refusal, Offense, TransportEvent],
                         ids=lambda e: e.__name__)
def test_every_name_is_used(enum: type[StrEnum]) -> None:
    """No dead names: each member is produced somewhere in the package (a
    connection offense through CONNECTION_OFFENSES)."""
    text = _sources()
    unused = [m for m in enum if f"{enum.__name__}.{m.name}" not in text
              and m not in CONNECTION_OFFENSES.values()]
    assert not unused


def test_every_parse_reason_is_raised() -> None:
    text = _sources()
    unused = [m for m in ParseReason if f"ParseReason.{m.name}" not in text
              and not m.value.startswith("duplicate_")]  # made from header names (parser._DUPLICATE)
    assert not unused


# --------------------------------------------------------------------------
# The table

SETTINGS = ProxySettings(t1=0.5, invite_timeout=32.0, proxy_timeout=180.0, linger=32.0)
CALLER = Source(PUBLIC_UDP, "127.0.0.1", 5061)
BACKEND = Source(PRIVATE, "127.0.0.1", 5070)
INVITE = (
    "INVITE sip:1000@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1;rport\r\n"
    "From: <sip:alice@127.0.0.1>;tag=a1\r\n"
    "To: <sip:1000@127.0.0.1:5060>\r\n"
    "Call-ID: c1@x\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5061>\r\n"
    "Content-Length: 0\r\n\r\n"
).encode()


def test_vos3000s_100_trying_and_a_ping_answer_are_absorbed_not_dropped() -> None:
    engine = Engine(SETTINGS, secret=b"k" * 16)
    v = engine.receive(INVITE, CALLER, 0.0)
    out = next(data for channel, _, data in v.sends if channel == PRIVATE)
    trying, ringing, ok = answer(out, "127.0.0.1", 5070)
    v = engine.receive(trying, BACKEND, 0.01)
    assert v.kind == "drop" and v.reason is Absorbed.HOP_BY_HOP_100  # type: ignore[union-attr]
    assert engine.receive(INVITE, CALLER, 0.02).kind == "reply"  # the 100 again
    engine.start_pings(0.03)
    (ping,) = [data for _, _, data in engine.on_timer(0.03)]
    (pong,) = answer(ping, "127.0.0.1", 5070)
    v = engine.receive(pong, BACKEND, 0.04)
    assert v.kind == "drop" and v.reason is Absorbed.PING_ANSWER  # type: ignore[union-attr]
    for reply in (ringing, ok):
        assert engine.receive(reply, BACKEND, 0.05).kind == "forward"
    assert engine.receive(INVITE, CALLER, 0.06).reason is Absorbed.RETRANSMISSION  # type: ignore[union-attr]

    tally = engine.tally
    assert tally.absorbed() == {Absorbed.HOP_BY_HOP_100: 1, Absorbed.PING_ANSWER: 1,
                                Absorbed.RETRANSMISSION: 1}
    assert tally.drops() == {} and tally.screen_drops() == {}
    assert tally.verdict_counts() == {"forward": 3, "reply": 1, "drop": 0, "absorbed": 3}
    snap = tally.snapshot()
    assert snap["absorbed"] == {"hop_by_hop_100": 1, "ping_answer": 1, "retransmission": 1}
    assert snap["drops"] == {} and snap["verdicts"]["drop"] == 0


def test_the_views_split_the_one_table() -> None:
    tally = Tally()
    tally.screened(DropReason.RATE_PER_IP, "192.0.2.1")
    tally.screened(DropReason.RATE_PER_IP, "192.0.2.1")
    tally.banned[0] += 5
    for reason in (DropReason.MALFORMED, DropReason.UNKNOWN_SOURCE, Absorbed.ACK_ABSORBED):
        tally.verdicts["drop"] += 1
        tally.dropped[reason] += 1
    tally.verdicts["forward"] += 4
    assert tally.screen_drops() == {DropReason.RATE_PER_IP: 2, DropReason.BANNED: 5}
    assert tally.drops() == {DropReason.MALFORMED: 1, DropReason.UNKNOWN_SOURCE: 1}
    assert tally.absorbed() == {Absorbed.ACK_ABSORBED: 1}
    # Each message once: the engine's verdicts, and the screen's drops apart.
    assert tally.verdict_counts() == {"forward": 4, "reply": 0, "drop": 2, "absorbed": 1}
    assert tally.take_top() == {"192.0.2.1": 2} and tally.top() == {}
    snap = tally.snapshot()
    assert set(snap) == {"verdicts", "screen_drops", "drops", "absorbed", "parse_errors",
                         "refusals", "offenses", "offenses_spared", "transport", "failovers"}
    assert all(type(k) is str for table in snap.values() for k in table)
