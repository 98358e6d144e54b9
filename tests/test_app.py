"""The app reads the config into the core's parts: gateway tables and
infos (egress per gateway), with the fast address parser of sbc.io."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sbc.app import gateway_infos, gateway_table
from sbc.config import Config, load_config, parse_config
from sbc.core.identify.gateways import GatewayInfo, GatewayTable


def config(text: str) -> Config:
    return parse_config(textwrap.dedent(text).lstrip("\n"))


def test_from_config_and_gateway_infos() -> None:
    cfg = config("""
        private: {host: 10.0.0.5, port: 5080}
        backend: {host: 10.0.0.9, port: 5060}
        gateways:
          - name: acme
            ip: [192.0.2.0/24]
            egress: {host: 10.0.0.5, port: 5081}
          - name: phones
            digest: [{username: "1001", password: "x"}]
          - name: carrier
            ip_port: ["198.51.100.1:5060"]
            egress: {host: 10.0.0.5, port: 5082}
            options: pass
    """)
    t = GatewayTable((g.name, g.ip, g.ip_port) for g in cfg.gateways)
    assert len(t) == 3
    assert t.by_source("192.0.2.9", 5060) == "acme"
    assert t.by_source("198.51.100.1", 5060) == "carrier"
    assert t.by_source("198.51.100.1", 5061) is None
    infos, egresses = gateway_infos(cfg)
    assert infos == [
        GatewayInfo("acme", 1, "answer"),
        GatewayInfo("phones", 0, "answer"),
        GatewayInfo("carrier", 2, "pass"),
    ]
    assert egresses == [("10.0.0.5", 5080), ("10.0.0.5", 5081), ("10.0.0.5", 5082)]
    assert type(infos[0].options) is str


def test_gateway_infos_without_gateways() -> None:
    assert gateway_infos(config("")) == ([], [("127.0.0.1", 5080)])


def test_local_config_admits_loopback_callers() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "local.yaml")
    t = GatewayTable((g.name, g.ip, g.ip_port) for g in cfg.gateways)
    assert t.by_source("127.0.0.1", 5061) == "local"
    assert t.by_source("::ffff:127.0.0.1", 5061) == "local"
    assert t.by_source("192.0.2.1", 5061) is None
    assert gateway_infos(cfg) == ([GatewayInfo("local", 0, "answer")], [("127.0.0.1", 5080)])


