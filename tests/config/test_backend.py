"""The backend section: one VOS3000 address as before, or several with
health and failover options."""

from __future__ import annotations

import pytest

from sbc.app import proxy_settings
from sbc.config import Config, parse_config

from .support import EXAMPLE, assert_one_error, bad_configs


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


@pytest.mark.parametrize(("text", "expected"), bad_configs("backend"))
def test_bad_config(text: str, expected: str) -> None:
    assert_one_error(text, expected)
