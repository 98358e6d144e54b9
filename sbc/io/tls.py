"""TLS on the public side (SIP over TLS, RFC 3261 §26.2; port 5061): the TCP
connection class with an `ssl.SSLObject` over memory BIOs in between.

The socket is accepted as plain TCP and the handshake is driven here, byte by
byte as they arrive, rather than by the loop's own TLS transport: a
connection then counts towards the per-source cap from its first SYN, the
handshake deadline is the sweep's like every other deadline, a failed
handshake is counted and recorded as an offense, and the source address is
known when the client certificate is judged.

Client certificates: the server context asks for one when a CA is configured
(`CERT_OPTIONAL`: one that does not verify fails the handshake). After the
handshake, a gateway identified by the source address that requires a
certificate refuses a connection without one, or with one that does not
carry the configured name.
"""

from __future__ import annotations

import ssl

from ..core.reasons import TransportEvent
from ..core.verdict import PUBLIC_TLS, Source
from .pipeline import Pipeline
from .tcp import TcpConnection

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TlsConnection(TcpConnection):
    __slots__ = ("_in", "_out", "tls")

    ready_on_connect = False  # not before the handshake

    def __init__(self, pipeline: Pipeline, max_message: int, max_buffer: int,
                 context: ssl.SSLContext) -> None:
        super().__init__(pipeline, max_message, max_buffer, PUBLIC_TLS)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._in, self._out, server_side=True)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = self.pipeline.loop.time()
        self._in.write(data)
        if self.clock.ready_at is None:
            try:
                self.tls.do_handshake()
            except _WANT:
                self._flush()
                return
            except (ssl.SSLError, OSError):
                self._flush()
                self.abort(TransportEvent.TLS_HANDSHAKE_FAILED)
                return
            self._flush()
            self.clock.ready(now)
            refused = self._refused_certificate()
            if refused is not None:
                self.abort(refused)
                return
        plain = bytearray()
        try:
            while True:
                chunk = self.tls.read(65536)
                if not chunk:  # close_notify from the peer
                    break
                plain += chunk
        except _WANT:
            pass
        except (ssl.SSLError, OSError):
            self.pipeline.count(TransportEvent.TLS_ERROR)
            self._drop()
            return
        self._flush()  # e.g. TLS 1.3 session tickets, alerts
        if plain:
            self.received(bytes(plain), now)

    def write(self, data: bytes) -> None:
        if self.closed or self.clock.ready_at is None:
            return
        try:
            self.tls.write(data)
        except (ssl.SSLError, OSError):
            self.pipeline.count(TransportEvent.TLS_ERROR)
            self._drop()
            return
        self._flush()

    def _flush(self) -> None:
        out = self._out.read()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def close(self) -> None:
        if not self.closed and self.clock.ready_at is not None:
            try:
                self.tls.unwrap()  # close_notify (RFC 5246 §7.2.1); no wait for the reply
            except (ssl.SSLError, OSError):
                pass
            self._flush()
        super().close()

    def _refused_certificate(self) -> TransportEvent | None:
        """Why this source's gateway refuses the certificate shown, or None
        (the engine judges: it knows which gateways require one)."""
        return self.pipeline.engine.certificate_refused(
            Source(self.channel, self.addr[0], self.addr[1]), self.tls.getpeercert())
