"""The `fraud` section (sbc/config/fraud.py): rules, windows, thresholds,
webhook; what it refuses, and the core rules the shell makes of it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from sbc.config import parse_config
from sbc.core.fraud import Metric, Threshold
from sbc.io.fraud import fraud_rules

from .support import EXAMPLE, assert_one_error, yaml_text

GOOD = yaml_text("""
    gateways:
      - {name: acme, ip: [192.0.2.10], tech_prefixes: ["9999#"]}
      - {name: beta, ip: [192.0.2.11]}
    fraud:
      rules:
        - name: premium
          gateways: [acme]
          prefixes: ["+900", "00881"]
          window: {hours: "20:00-08:00", weekdays: [Mon, fri]}
          timezone: Asia/Shanghai
          thresholds:
            calls_per_minute: {warning: 5, critical: 10}
            minutes_per_day: {critical: 90.5}
          cool_off_s: 0
          cut_calls: true
        - name: everything
          gateways: "*"
          thresholds:
            sequential: {warning: 8}
      webhook: {url: "http://127.0.0.1:8099/hook", retries: 0}
      max_numbers: 50
""")


def test_a_full_section_and_the_rules_the_core_gets() -> None:
    cfg = parse_config(GOOD, "x.yaml")
    premium, everything = cfg.fraud.rules
    assert premium.window is not None and premium.window.minutes == (1200, 480)
    assert premium.window.weekdays == ("mon", "fri")
    assert everything.gateways == () and everything.cool_off_s == 3600.0
    assert cfg.fraud.webhook.url == "http://127.0.0.1:8099/hook" and cfg.fraud.max_numbers == 50
    rules = fraud_rules(cfg)
    core = rules.rules[0]
    assert core.threshold(Metric.CALLS_PER_MINUTE) == Threshold(5.0, 10.0)
    assert core.threshold(Metric.MINUTES_PER_DAY) == Threshold(0.0, 90.5)
    assert core.threshold(Metric.CONCURRENT) is None
    assert core.cool_off == 0.0 and core.cut_calls and core.gateways == frozenset({"acme"})
    assert core.window is not None and core.window.weekdays == frozenset({0, 4})
    # The gateway's tech prefix is stripped before the prefixes are matched.
    # 1970-01-01 08:00 CST, a Thursday: outside the window, only the rule without one.
    assert [r.name for r, _ in rules.match("acme", ("9999#00881234",), 0.0)] == ["everything"]
    night = datetime(2026, 12, 7, 14, 0, tzinfo=timezone.utc).timestamp()  # Monday 22:00 CST
    assert [(r.name, n) for r, n in rules.match("acme", ("9999#00881234",), night)] == [
        ("premium", "881234"), ("everything", "881234")]
    assert [r.name for r, _ in rules.match("beta", ("900",), night)] == ["everything"]


def test_empty_and_null_sections_mean_no_rule() -> None:
    assert parse_config("fraud:\n", "x.yaml").fraud.rules == ()
    assert parse_config("fraud: {rules: null, webhook: null}", "x.yaml").fraud.webhook.url is None
    assert not fraud_rules(parse_config("", "x.yaml"))


@pytest.mark.parametrize(("text", "expected"), [
    ("fraud: {rules: [{name: a, thresholds: {}}]}",
     "x.yaml:1: fraud.rules[0].thresholds: a rule needs at least one threshold"),
    ("fraud: {rules: [{name: a, thresholds: {concurrent: {warning: 5, critical: 2}}}]}",
     "x.yaml:1: fraud.rules[0].thresholds.concurrent.warning: warning (5) is above critical (2)"),
    ("fraud: {rules: [{name: a, thresholds: {concurrent: {}}}]}",
     "x.yaml:1: fraud.rules[0].thresholds.concurrent: give warning, critical or both"),
    ("fraud: {rules: [{name: a, timezone: Mars/Base, thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].timezone: 'Mars/Base' is not a time zone"),
    ("fraud: {rules: [{name: a, gateways: [nope], thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].gateways[0]: 'nope' is not a configured gateway"),
    ("fraud: {rules: [{name: a, window: {hours: '25:00-01:00'}, thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].window.hours: should be \"HH:MM-HH:MM\""),
    ("fraud: {rules: [{name: a, window: {weekdays: [moonday]}, thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].window.weekdays: 'moonday' is not a day"),
    ("fraud: {rules: [{name: a, prefixes: [900], thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].prefixes[0]: should be a quoted string"),
    ("fraud: {rules: [{name: a, thresholds: {concurrent: {warning: -1}}}]}",
     "x.yaml:1: fraud.rules[0].thresholds.concurrent.warning: Input should be greater than or equal to 0"),
    ("fraud: {rules: [{name: 'a b', thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].name: should be 1 to 64 of letters"),
    ("fraud: {rules: [{name: a, thresholds: {concurrent: {warning: 5}}}, "
     "{name: a, thresholds: {concurrent: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[1].name: 'a' is the name of an earlier rule"),
    ("fraud: {rules: [{name: a, thresholds: {speed: {warning: 5}}}]}",
     "x.yaml:1: fraud.rules[0].thresholds.speed: unknown key; expected one of: calls_per_minute"),
    ("fraud: {webhook: {url: 'ftp://x'}}",
     "x.yaml:1: fraud.webhook.url: should be an http:// or https:// URL with a host"),
    ("fraud: {max_numbers: 0}",
     "x.yaml:1: fraud.max_numbers: Input should be greater than or equal to 1"),
])
def test_bad_fraud_sections(text: str, expected: str) -> None:
    assert_one_error(text, expected)


def test_example_file_fraud_rules_are_valid() -> None:
    """The commented starter rule in configs/sbc.example.yaml parses."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("fraud:")
    section = []
    for line in lines[start:]:
        if line.strip() == "rules: []":
            continue
        if line.startswith("  #   ") or line.startswith("  # rules:"):
            line = "  " + line[4:]
        section.append(line)
    cfg = parse_config("\n".join(section), "example")
    (premium,) = cfg.fraud.rules
    assert premium.name == "premium" and premium.thresholds.minutes_per_day is not None
    assert parse_config(EXAMPLE.read_text(), "example").fraud.rules == ()
