"""Configuration for SIP over TLS (RFC 3261 §26.2, RFC 5630): the `tls`
section (the server's certificate and key, the CA that client certificates
must chain to, the cipher list), a gateway's `tls` requirements (a client
certificate, and the name it must carry), and the SSL context made from them.

The files are read while the configuration is validated, so a missing file, a
key that does not match its certificate or a CA file that is not PEM is
reported like any other mistake: with the field and the file's line. The
context itself is built again when the listener starts or the configuration is
reloaded (new connections then get the new certificate).
"""

from __future__ import annotations

import ssl
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, model_validator

from ..io.tlscontext import CaFileError, KeyFileEncrypted, build_server_context, load_ca, reason
from .base import Section, as_text, kind, problem

__all__ = ["DEFAULT_CIPHERS", "GatewayTls", "TlsConfig", "server_context"]

# TLS 1.2 suites with forward secrecy and an AEAD cipher only; TLS 1.3 suites
# are fixed by OpenSSL and all fine.
DEFAULT_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!MD5:!DSS"


def _path(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise problem(f"should be the path of a PEM file, not {kind(value)}")
    try:
        with open(value, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise problem(f"{value}: file not found") from None
    except IsADirectoryError:
        raise problem(f"{value}: is a directory, not a PEM file") from None
    except OSError as exc:
        raise problem(f"{value}: cannot read: {exc.strerror or exc}") from None
    return value


def _ciphers(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
    except ssl.SSLError:
        raise problem(f"{value!r}: OpenSSL knows no cipher in this list") from None
    return value


PemFile = Annotated[str | None, BeforeValidator(_path)]


class TlsConfig(Section):
    """The TLS listener's identity (used when public.transports has tls)."""

    cert_file: PemFile = None  # the server certificate (chain), PEM
    key_file: PemFile = None  # its private key, PEM, not encrypted
    # CA certificates (PEM) that client certificates must chain to. When set,
    # every TLS client is asked for a certificate; gateways with
    # tls.require_client_cert refuse connections that present none.
    ca_file: PemFile = None
    ciphers: Annotated[str, BeforeValidator(_ciphers), as_text("an OpenSSL cipher list")] = (
        DEFAULT_CIPHERS
    )

    @model_validator(mode="after")
    def _usable(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            given = "cert_file" if missing == "key_file" else "key_file"
            raise problem(f"required with {given}", at=(missing,), also=(given,))
        if self.cert_file is not None:
            try:
                server_context(self)
            except ssl.SSLError as exc:
                raise problem(f"cannot be used with key_file: {reason(exc)}",
                              at=("cert_file",)) from None
            except KeyFileEncrypted:
                raise problem("is encrypted; give the key unencrypted, readable by sbc only",
                              at=("key_file",)) from None
            except CaFileError as exc:
                raise problem(str(exc), at=("ca_file",)) from None
        elif self.ca_file is not None:
            _load_ca(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), self.ca_file, at=("ca_file",))
        return self


def _subject(value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str):
        raise problem(f"should be a name string (quote it in YAML), not {kind(value)}")
    if not value.strip() or not value.isprintable():
        raise problem("should be the certificate's subject name or a subjectAltName, not blank")
    return value.strip()


class GatewayTls(Section):
    """What a gateway's TLS connections must show (identified by source address)."""

    # Refuse a connection from this gateway's addresses that presents no
    # certificate signed by tls.ca_file.
    require_client_cert: Annotated[bool, Field(strict=True)] = False
    # And the certificate must name this: its subject common name, or one of
    # its subjectAltName DNS, URI or IP entries (compared without case).
    subject: Annotated[str | None, BeforeValidator(_subject)] = None

    @model_validator(mode="after")
    def _subject_needs_cert(self) -> Self:
        if self.subject is not None and not self.require_client_cert:
            raise problem("needs require_client_cert: true (a name is only checked on a "
                          "certificate that is required)", at=("subject",))
        return self


def _load_ca(ctx: ssl.SSLContext, path: str, at: tuple[str, ...] = ()) -> None:
    try:
        load_ca(ctx, path)
    except CaFileError as exc:
        raise problem(str(exc), at=at) from None


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listener's context for this section (sbc.io.tlscontext builds it)."""
    assert tls.cert_file is not None and tls.key_file is not None
    return build_server_context(tls.cert_file, tls.key_file, tls.ca_file, tls.ciphers)
