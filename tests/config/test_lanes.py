"""The `lanes` section (sbc/config/lanes.py): defaults, the mode it gives,
a trusted port that clashes with another socket, and reload."""

from __future__ import annotations

import pytest

from sbc.app import restart_needed
from sbc.cli import main
from sbc.config import ConfigError, lanes_mode, parse_config, summary
from sbc.core.screen.lanes import LaneMode


def test_lanes_defaults_are_off() -> None:
    cfg = parse_config("")
    lanes = cfg.lanes
    assert lanes.trusted_port is None and lanes_mode(cfg) is LaneMode.OFF
    assert (lanes.untrusted_budget, lanes.trusted_check_every, lanes.stranger_backlog) == (64, 8, 1024)
    assert (lanes.proof_timeout_s, lanes.max_proved, lanes.reserved_connections) == (300.0, 65_536, 100)
    assert "lanes" not in summary(cfg)


def test_mode_follows_the_firewall() -> None:
    two = parse_config("lanes: {trusted_port: 5062}\n")
    assert lanes_mode(two) is LaneMode.TWO_PORTS
    assert summary(two)["lanes"] == "two_ports" and summary(two)["trusted_port"] == "5062"
    kernel = parse_config("lanes: {trusted_port: 5062}\nfirewall: {mode: nftables}\n")
    assert lanes_mode(kernel) is LaneMode.KERNEL
    tcp_only = parse_config("lanes: {trusted_port: 5062}\npublic: {transports: [tcp]}\n")
    assert lanes_mode(tcp_only) is LaneMode.OFF


def test_reserve_is_at_most_a_tenth_of_the_cap() -> None:
    cfg = parse_config("lanes: {reserved_connections: 5000}\n")
    assert cfg.lanes.reserve_of(10_000) == 1000 and cfg.lanes.reserve_of(2) == 0
    assert parse_config("").lanes.reserve_of(10_000) == 100


@pytest.mark.parametrize("text, where", [
    ("lanes: {trusted_port: 5060}\n", "public.port"),
    ("lanes: {trusted_port: 5080}\n", "private.port"),
    ("gateways: [{name: a, ip: [192.0.2.1], egress: {host: 127.0.0.1, port: 5090}}]\n"
     "lanes: {trusted_port: 5090}\n", "gateways.0.egress.port"),
    ("public: {host: 0.0.0.0, advertise_host: 192.0.2.9}\n"
     "private: {host: 10.0.0.1, port: 5080}\nlanes: {trusted_port: 5080}\n", "private.port"),
])
def test_trusted_port_needs_a_port_of_its_own(text: str, where: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    assert "lanes.trusted_port" in str(err.value) and where in str(err.value)


@pytest.mark.parametrize("text", [
    "lanes: {trusted_port: 0}\n",
    "lanes: {untrusted_budget: 0}\n",
    "lanes: {max_proved: -1}\n",
    "lanes: {proof_timeout_s: 0}\n",
    "lanes: {reserved_connections: -1}\n",
    "lanes: {trusted_port: 5062, extra: 1}\n",
])
def test_bad_lanes_values_name_the_field(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "x.yaml")
    assert "x.yaml:1: lanes." in str(err.value)


def test_changing_the_lanes_needs_a_restart() -> None:
    old = parse_config("")
    new = parse_config("lanes: {trusted_port: 5062}\n")
    assert restart_needed(old, new) == "lanes: changing it needs a restart"


def test_check_config_prints_the_lane_mode(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "sbc.yaml"
    path.write_text("lanes: {trusted_port: 5062}\nadmin: {enabled: false}\n")
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "lanes=two_ports" in out and "trusted_port=5062" in out
