"""TLS and connection-limit configuration: defaults, the certificate files
checked while validating, and every mistake named with its file and line."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from sbc.app import ban_table, gateway_table, proxy_settings
from sbc.config import Transport, parse_config, summary
from sbc.config.tls import DEFAULT_CIPHERS, server_context

from ..tlscerts import Certs, make_certs
from .support import config_error


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls_yaml(certs: Certs, ca: bool = True, extra: str = "") -> str:
    return (
        "public:\n  transports: [udp, tcp, tls]\n"
        "tls:\n"
        f"  cert_file: {certs.server.cert}\n"
        f"  key_file: {certs.server.key}\n"
        + (f"  ca_file: {certs.ca}\n" if ca else "")
        + extra
    )


def test_defaults() -> None:
    cfg = parse_config("")
    assert cfg.public.tls_port == 5061 and not cfg.public.tls
    assert (cfg.tls.cert_file, cfg.tls.key_file, cfg.tls.ca_file) == (None, None, None)
    assert cfg.tls.ciphers == DEFAULT_CIPHERS
    lim = cfg.limits
    assert lim.max_tcp_connections_per_source == 64
    assert (lim.tcp_message_deadline_s, lim.tls_handshake_timeout_s) == (10.0, 5.0)
    assert cfg.bans.offenses.connection is True
    assert proxy_settings(cfg).tls_port is None  # no TLS: 5061 is not ours


def test_tls_listener_config_and_context(certs: Certs) -> None:
    cfg = parse_config(tls_yaml(certs))
    assert cfg.public.transports == (Transport.UDP, Transport.TCP, Transport.TLS)
    assert summary(cfg)["tls"] == "127.0.0.1:5061"
    assert proxy_settings(cfg).tls_port == 5061
    ctx = server_context(cfg.tls)
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_OPTIONAL  # asked for, never demanded at the handshake
    assert ctx.options & ssl.OP_NO_COMPRESSION
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(("GCM" in n or "CHACHA20" in n) and "DHE" in n for n in names)
    assert server_context(parse_config(tls_yaml(certs, ca=False)).tls).verify_mode is ssl.CERT_NONE


def test_gateway_client_certificate_requirement(certs: Certs) -> None:
    cfg = parse_config(tls_yaml(certs) + "gateways:\n  - name: acme\n    ip: [192.0.2.1]\n"
                       "    tls: {require_client_cert: true, subject: ' acme.test '}\n")
    assert cfg.gateways[0].tls.require_client_cert
    assert cfg.gateways[0].tls.subject == "acme.test"


def test_connection_offenses_are_counted_only_when_switched_on() -> None:
    on = parse_config("")
    off = parse_config("bans: {offenses: {connection: false}}")
    for cfg, counted in ((on, True), (off, False)):
        bans = ban_table(cfg, gateway_table(cfg))
        assert bans.counted is not None
        assert ("tcp_message_deadline" in bans.counted) is counted
        assert ("tls_handshake_timeout" in bans.counted) is counted


@pytest.mark.parametrize(("make", "expected"), [
    (lambda c, tmp: "public: {transports: [udp, tls]}\n",
     "x.yaml:1: tls.cert_file: the TLS listener needs a certificate"),
    (lambda c, tmp: f"tls:\n  cert_file: {c.server.cert}\n",
     "x.yaml:2: tls.key_file: required with cert_file"),
    (lambda c, tmp: f"tls:\n  cert_file: {tmp / 'nope.pem'}\n  key_file: {c.server.key}\n",
     "x.yaml:2: tls.cert_file: {tmp}/nope.pem: file not found"),
    (lambda c, tmp: f"tls:\n  cert_file: {tmp}\n  key_file: {c.server.key}\n",
     "x.yaml:2: tls.cert_file: {tmp}: is a directory"),
    (lambda c, tmp: f"tls:\n  cert_file: {c.server.cert}\n  key_file: {c.client.key}\n",
     "x.yaml:2: tls.cert_file: cannot be used with key_file: key values mismatch"),
    (lambda c, tmp: f"tls:\n  cert_file: {c.server.key}\n  key_file: {c.server.key}\n",
     "x.yaml:2: tls.cert_file: cannot be used with key_file: not a PEM certificate"),
    (lambda c, tmp: f"tls:\n  ca_file: {c.server.key}\n",
     "x.yaml:2: tls.ca_file: "),
    (lambda c, tmp: "tls:\n  cert_file: 12\n",
     "x.yaml:2: tls.cert_file: should be the path of a PEM file, not a number"),
    (lambda c, tmp: "tls:\n  ciphers: NOT-A-CIPHER\n",
     "x.yaml:2: tls.ciphers: 'NOT-A-CIPHER': OpenSSL knows no cipher in this list"),
    (lambda c, tmp: "public: {transports: [tcp, tls], tls_port: 5060}\n",
     "x.yaml:1: public.tls_port: TLS and TCP cannot share port 5060"),
    (lambda c, tmp: tls_yaml(c).replace("transports: [udp, tcp, tls]",
                                        "transports: [udp, tls]\n  tls_port: 5080"),
     "x.yaml:3: public.tls_port: 127.0.0.1:5080 is also the private socket"),
    (lambda c, tmp: tls_yaml(c) + "admin: {port: 5061}\n",
     "x.yaml:7: admin.port: 127.0.0.1:5061 is the public SIP TCP socket"),
    (lambda c, tmp: "gateways:\n  - name: a\n    ip: [192.0.2.1]\n"
                    "    tls: {require_client_cert: true}\n",
     ("x.yaml:4: gateways[0].tls.require_client_cert: gateway 'a' requires a client "
     "certificate, but tls is not in public.transports")),
    (lambda c, tmp: tls_yaml(c, ca=False) + "gateways:\n  - name: a\n    ip: [192.0.2.1]\n"
                    "    tls: {require_client_cert: true}\n",
     ("x.yaml:9: gateways[0].tls.require_client_cert: gateway 'a' requires a client "
     "certificate: set tls.ca_file")),
    (lambda c, tmp: "gateways:\n  - name: a\n    ip: [192.0.2.1]\n    tls: {subject: acme}\n",
     "x.yaml:4: gateways[0].tls.subject: needs require_client_cert: true"),
    (lambda c, tmp: "gateways:\n  - name: a\n    ip: [192.0.2.1]\n"
                    "    tls: {require_client_cert: yes please}\n",
     "x.yaml:4: gateways[0].tls.require_client_cert: Input should be a valid boolean"),
    (lambda c, tmp: "gateways:\n  - name: a\n    ip: [192.0.2.1]\n"
                    "    tls: {require_client_cert: true, subject: '  '}\n",
     "x.yaml:4: gateways[0].tls.subject: should be the certificate's subject name"),
    (lambda c, tmp: "limits: {max_tcp_connections: 10, max_tcp_connections_per_source: 11}\n",
     ("x.yaml:1: limits.max_tcp_connections_per_source: must be at most "
     "limits.max_tcp_connections (10)")),
    (lambda c, tmp: "limits: {tcp_message_deadline_s: 0}\n",
     "x.yaml:1: limits.tcp_message_deadline_s: Input should be greater than 0"),
    (lambda c, tmp: "limits: {tls_handshake_timeout_s: -1}\n",
     "x.yaml:1: limits.tls_handshake_timeout_s: Input should be greater than 0"),
    (lambda c, tmp: "bans: {offenses: {connection: 1}}\n",
     "x.yaml:1: bans.offenses.connection: Input should be a valid boolean"),
], ids=["tls_without_cert", "cert_without_key", "missing_file", "directory", "key_mismatch",
        "key_as_cert", "ca_not_pem", "path_not_text", "bad_ciphers", "tls_port_is_tcp_port",
        "tls_port_is_private", "tls_port_is_admin", "client_cert_without_tls",
        "client_cert_without_ca", "subject_without_require", "require_not_bool", "blank_subject",
        "per_source_over_total", "deadline_zero", "handshake_negative", "offense_not_bool"])
def test_bad_tls_config(make, expected: str, certs: Certs, tmp_path: Path) -> None:
    message = str(config_error(make(certs, tmp_path)))
    assert message.startswith(expected.format(tmp=tmp_path)), message
    assert "Traceback" not in message
