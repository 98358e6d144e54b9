"""The backend section: one VOS3000 address as before, or several with
health and failover options."""

from __future__ import annotations

from sbc.app import proxy_settings

from pathlib import Path

import pytest

from sbc.config import Config, ConfigError, parse_config
from sbc.core.settings import ProxySettings

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "sbc.example.yaml"


def test_one_address_as_before() -> None:
    cfg = parse_config("backend: {host: 10.0.0.5, port: 5060}\n", "x.yaml")
    assert cfg.backend.targets == (("10.0.0.5", 5060),)
    assert cfg.backend.standby == () and cfg.backend.failover_on == (500, 503)
    assert (cfg.backend.down_after, cfg.backend.up_after, cfg.backend.failover_timeout_s) == (
        3, 2, 2.0)


def test_standby_addresses_reach_the_engine_settings() -> None:
    cfg = parse_config(
        "backend:\n  host: 10.0.0.5\n  port: 5060\n"
        "  standby: [{host: 10.0.0.6, port: 5060}, {host: 10.0.0.7}]\n"
        "  failover_on: [503, 408]\n  failover_timeout_s: 1.5\n  down_after: 2\n  up_after: 1\n"
        "admin: {ping_interval_s: 3, ping_timeout_s: 1}\n", "x.yaml")
    assert cfg.backend.targets == (("10.0.0.5", 5060), ("10.0.0.6", 5060), ("10.0.0.7", 5070))
    s = proxy_settings(cfg)
    assert s.targets == cfg.backend.targets and s.backend == ("10.0.0.5", 5060)
    assert s.failover_on == {503, 408} and s.failover_timeout == 1.5
    assert (s.down_after, s.up_after, s.ping_interval, s.ping_timeout) == (2, 1, 3.0, 1.0)


def test_example_standby_line_is_valid() -> None:
    lines = EXAMPLE.read_text().splitlines()
    index = [line.strip() for line in lines].index("standby: []")
    example = lines[index + 1]
    assert example.lstrip().startswith("# standby:")
    lines[index] = example.replace("# standby:", "standby:", 1).split("   # example")[0]
    cfg = parse_config("\n".join(lines), "example")
    assert cfg.backend.targets[1:] == (("10.0.0.21", 5060), ("10.0.0.22", 5060))
    assert cfg.model_copy(update={"backend": Config().backend}) == Config()


BAD = [
    ("backend:\n  standby: [{host: 127.0.0.1, port: 5070}]\n",
     "x.yaml:2: backend.standby[0]: 127.0.0.1:5070 is already listed (backend)"),
    ("backend:\n  standby: [{host: 10.0.0.1}, {host: 10.0.0.1}]\n",
     "x.yaml:2: backend.standby[1]: 10.0.0.1:5070 is already listed (standby[0])"),
    ("backend:\n  standby: [{host: 127.0.0.1, port: 5060}]\n",
     ("x.yaml:2: backend.standby[0]: 127.0.0.1:5060 is the sbc's own address 127.0.0.1:5060 "
      "(public)")),
    ("backend:\n  standby: [{host: 0.0.0.0}]\n",
     "x.yaml:2: backend.standby[0].host: 0.0.0.0 is not an address a request can be sent to"),
    ("backend:\n  standby: [{host: '::1'}]\n",
     "x.yaml:2: backend.standby[0].host: ::1 and 127.0.0.1 are of different IP versions"),
    ("backend:\n  standby: [{host: 10.0.0.1, prot: 5060}]\n",
     "x.yaml:2: backend.standby[0].prot: unknown key"),
    ("backend:\n  failover_on: [486]\n",
     "x.yaml:2: backend.failover_on[0]: 486 cannot trigger failover; only 408 and 500-599 can"),
    ("backend:\n  failover_on: [503, 503]\n",
     "x.yaml:2: backend.failover_on[1]: 503 is listed twice in failover_on"),
    ("backend:\n  failover_on: [true]\n",
     "x.yaml:2: backend.failover_on[0]: should be a SIP status code (a number), not"),
    ("backend:\n  failover_timeout_s: 40\n",
     "x.yaml:2: backend.failover_timeout_s: must be below sip.invite_timeout_s (32)"),
    ("backend:\n  down_after: 0\n",
     "x.yaml:2: backend.down_after: Input should be greater than or equal to 1"),
    (("backend:\n  standby: [{host: 10.0.0.9, port: 5081}]\n"
      "gateways: [{name: a, ip: [10.1.0.0/16], egress: {host: 10.0.0.9, port: 5081}}]\n"),
     "x.yaml:3: gateways[0].egress: 10.0.0.9:5081 is already used by backend.standby[0]"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_backend(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "x.yaml")
    assert str(info.value).startswith(expected), str(info.value)
    assert len(info.value.issues) == 1
