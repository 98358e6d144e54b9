"""SSL contexts for the TLS listener: TLS 1.2 or later, the configured
ciphers, no compression, renegotiation or session tickets, and a client
certificate asked for when a CA is given. The config schema (sbc.config.tls)
builds one at validation, so a file that cannot serve fails `check-config`.
"""

from __future__ import annotations

import ssl


class CaFileError(ValueError):
    pass


class KeyFileEncrypted(ValueError):
    def __str__(self) -> str:
        return "the key file is encrypted"


def _no_password() -> bytes:
    # Never a prompt on the terminal: an encrypted key simply fails to load.
    raise KeyFileEncrypted


def reason(exc: ssl.SSLError) -> str:
    reason = getattr(exc, "reason", None)
    if reason == "PEM lib" or "PEM lib" in str(exc):
        return "not a PEM certificate and its private key"
    return str(reason).lower().replace("_", " ") if reason else str(exc)


def load_ca(ctx: ssl.SSLContext, path: str) -> None:
    try:
        ctx.load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise CaFileError(f"{path}: not a PEM CA certificate file ({reason(exc)})") from None


def build_server_context(cert_file: str, key_file: str, ca_file: str | None,
                         ciphers: str) -> ssl.SSLContext:
    """The server-side context: TLS 1.2 or later, the configured ciphers, no
    compression or renegotiation, and a client certificate asked for (never
    demanded at the handshake: the gateway decides) when a CA is configured."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_ciphers(ciphers)
    # No TLS 1.3 session tickets: SIP connections are long-lived and rarely
    # resumed, and some clients (sipsak) take the unsolicited ticket records
    # that follow the handshake for a broken read.
    ctx.num_tickets = 0
    ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    if ca_file is not None:
        load_ca(ctx, ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
