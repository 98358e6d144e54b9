"""Certificates made for a test: a CA, a server certificate for 127.0.0.1 and
client certificates, as PEM files (the `cryptography` package)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    ca: Path  # the CA certificate: trusted by clients, and verifying client certificates
    server: Pem  # CN=sbc.test, SAN 127.0.0.1
    client: Pem  # signed by the CA, CN=acme.test
    stranger: Pem  # self-signed, CN=acme.test: the same name from no trusted CA
    other: Pem  # signed by the CA, CN=other.test


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Pem(cert_path, key_path)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          server: bool = False, dns: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        if server:
            names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _cert("sbc test CA", ca_key, "sbc test CA", ca_key, ca=True)
    ca = _write(directory / "ca", ca_cert, ca_key)
    server_key, client_key, stranger_key, other_key = _key(), _key(), _key(), _key()
    server = _write(directory / "server",
                    _cert("sbc.test", server_key, "sbc test CA", ca_key, server=True,
                          dns=("sbc.test",)), server_key)
    client = _write(directory / "client",
                    _cert("acme.test", client_key, "sbc test CA", ca_key, dns=("sip.acme.test",)),
                    client_key)
    stranger = _write(directory / "stranger",
                      _cert("acme.test", stranger_key, "acme.test", stranger_key), stranger_key)
    other = _write(directory / "other",
                   _cert("other.test", other_key, "sbc test CA", ca_key), other_key)
    return Certs(ca.cert, server, client, stranger, other)
