"""Call limits and destination controls: a gateway's limits and prefixes
(sbc/config/gateways.py) and the calls section (sbc/config/calls.py); their
mistakes are in tests/config/cases/calls.yaml."""

from __future__ import annotations

import pytest

from sbc.config import CallsConfig, Config, GatewayLimits, parse_config

from .support import EXAMPLE, assert_one_error, bad_configs, yaml_text


def test_call_limits_and_prefixes() -> None:
    cfg = parse_config(
        yaml_text("""
            gateways:
              - name: acme
                ip: [192.0.2.10]
                limits:
                  cps: 0.5
                  max_concurrent: 30
                  max_duration_s: 3600
                allowed_prefixes: ["+44", " 0033 ", "1"]
                blocked_prefixes: ["+4490", "0"]
                tech_prefixes: ["9999#", "*77", "+12"]
              - name: burst
                ip: [192.0.2.11]
                limits: {cps: 20, cps_burst: 5}
              - name: plain
                ip: [192.0.2.12]
                limits:
                allowed_prefixes:
            calls:
              max_cps: 150
              max_cps_burst: 300.5
              max_concurrent: 1000
              blocked_prefixes: ["+979", "00881", "1900"]
              tech_prefixes: ["#1#"]
              retry_after_s: 3600
              persist_interval_s: 60
        """)
    )
    acme, burst, plain = cfg.gateways
    assert acme.limits == GatewayLimits(cps=0.5, max_concurrent=30, max_duration_s=3600.0)
    assert acme.limits.burst == 1.0  # one second's worth, at least one call
    assert acme.allowed_prefixes == ("+44", "0033", "1")  # stored as written
    assert acme.blocked_prefixes == ("+4490", "0")
    assert acme.tech_prefixes == ("9999#", "*77", "+12")
    assert (burst.limits.cps, burst.limits.cps_burst, burst.limits.burst) == (20.0, 5.0, 5.0)
    assert parse_config(
        "gateways: [{name: a, ip: [192.0.2.1], limits: {cps: 20}}]"
    ).gateways[0].limits.burst == 20.0
    assert plain.limits == GatewayLimits() and plain.allowed_prefixes == ()
    assert (plain.limits.cps, plain.limits.max_concurrent, plain.limits.max_duration_s) == (
        0.0,
        0,
        0.0,
    )
    calls = cfg.calls
    assert (calls.max_cps, calls.max_cps_burst, calls.burst) == (150.0, 300.5, 300.5)
    assert parse_config("calls: {max_cps: 0.25}").calls.burst == 1.0
    assert parse_config("calls: {max_cps: 40}").calls.burst == 40.0
    assert calls.max_concurrent == 1000
    assert calls.blocked_prefixes == ("+979", "00881", "1900")
    assert calls.tech_prefixes == ("#1#",)
    assert (calls.retry_after_s, calls.persist_interval_s) == (3600, 60.0)


@pytest.mark.parametrize(
    "text",
    ["calls:\n", "calls:\n  blocked_prefixes:\n  tech_prefixes:\n  max_cps_burst: null\n"],
)
def test_empty_calls_section_is_defaults(text: str) -> None:
    assert parse_config(text) == Config()


def test_overlapping_prefixes_are_allowed() -> None:
    # A longer blocked prefix carves a range out of an allowed one, and the
    # same prefix may be blocked both globally and for one gateway.
    cfg = parse_config(
        yaml_text("""
            calls: {blocked_prefixes: ["+881"]}
            gateways:
              - name: a
                ip: [192.0.2.1]
                allowed_prefixes: ["+44", "+88"]
                blocked_prefixes: ["+449", "00881"]
                tech_prefixes: ["9", "99"]
        """)
    )
    assert cfg.gateways[0].blocked_prefixes == ("+449", "00881")


def test_max_duration_just_below_dialog_max_age() -> None:
    cfg = parse_config(
        "sip: {dialog_max_age_s: 3600}\n"
        "gateways: [{name: a, ip: [192.0.2.1], limits: {max_duration_s: 3599.5}}]\n"
    )
    assert cfg.gateways[0].limits.max_duration_s == 3599.5


def test_example_file_blocked_prefixes_example_is_valid() -> None:
    # The commented list after `blocked_prefixes: []` replaces it.
    lines = EXAMPLE.read_text().splitlines()
    start = [line.strip() for line in lines].index("blocked_prefixes: []")
    end = lines.index("", start)
    block = [line.replace("# ", "", 1) for line in lines[start + 1 : end]]
    assert block[0].split("#")[0].strip() == "blocked_prefixes:"
    cfg = parse_config("\n".join(lines[:start] + block + lines[end:]), "example")
    assert cfg.calls.blocked_prefixes[:3] == ("+979", "+881", "+882")
    assert len(cfg.calls.blocked_prefixes) == 16
    assert cfg.calls == CallsConfig(blocked_prefixes=cfg.calls.blocked_prefixes)


@pytest.mark.parametrize(("text", "expected"), bad_configs("calls"))
def test_bad_config(text: str, expected: str) -> None:
    assert_one_error(text, expected)
