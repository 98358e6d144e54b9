"""The trace's shell: the capture hook the pipeline calls when tracing is on
(`Pipeline.trace`), the ring it fills, the HEP sender it feeds, and what the
admin reads (`/api/calls`, a call's trace and pcap).

Tracing off, the pipeline pays one attribute check per message. Tracing on,
each message the pipeline handled is attributed to its call by a bounded byte
search for its Call-ID (sbc.trace.ring.call_id_of): the engine stays pure and
untouched, and no message is parsed twice. What a verdict sends belongs to the
call of the message it answers; what the timer sends (retransmissions, 408s,
BYEs at the duration limit) is searched one by one.

A message is on a call when sbc forwarded it, or when its Call-ID is already
traced; anything else (refused, dropped, absorbed, the answers to sbc's
pings) is sampled at `refused_sample_rate`, separately for the ring and for
HEP, so a flood costs one search per message and fills neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..config import Config
from ..core.reasons import DropReason
from ..core.verdict import PRIVATE, PUBLIC_TCP, PUBLIC_TLS, PUBLIC_UDP, Addr, Send, Verdict
from ..trace.pcap import pcap
from ..trace.ring import Message, Sampler, TraceRing, call_id_of, redact
from ..trace.summary import message_rows, summarize
from .hep import HepSender
from .logsetup import get_logger

log = get_logger("sbc.io.trace")

_TRANSPORT: dict[int, str] = {PUBLIC_UDP: "udp", PUBLIC_TCP: "tcp", PUBLIC_TLS: "tls"}
RESYNC_S = 10.0  # how often the wall clock is read again beside the loop's


_new = tuple.__new__  # a Message without the named tuple's Python-level __new__


class Capture:
    """What the pipeline calls, per message, when tracing is on.

    Per message: one Call-ID search, one Message per message in or out (a
    tuple holding the datagram's own bytes, no copy), the redaction of a
    gateway's message (one C search when it holds no credentials), one append
    to the ring and one to the HEP queue; the HEP packets are made later, in
    the sender's batch (sbc.io.hep)."""

    def __init__(self, clock: Callable[[], float], local: Callable[[int], Addr]) -> None:
        self.clock = clock
        self.local = local  # sbc's own address of a channel
        self.ring: TraceRing | None = None
        self.hep: HepSender | None = None
        self.ring_sample = Sampler(0.0)
        self.hep_sample = Sampler(0.0)
        self.untraced = 0  # messages without a Call-ID (malformed)
        self._offset = 0.0
        self._synced = float("-inf")
        self._channels: dict[int, tuple[str, str, Addr]] = {}  # cleared on reload

    def _us(self, now: float) -> int:
        if now - self._synced > RESYNC_S:
            self._synced = now
            self._offset = time.time() - now
        return int((now + self._offset) * 1_000_000)

    def _keep(self, call_id: bytes) -> tuple[bool, bool, bool]:
        """(on a call, into the ring, to HEP)."""
        ring = self.ring
        if ring is not None and call_id in ring:
            return True, True, self.hep is not None
        return (False, ring is not None and self.ring_sample(),
                self.hep is not None and self.hep_sample())

    def _ends(self, channel: int) -> tuple[str, str, Addr]:
        """(leg, transport, sbc's address) of a channel, made once."""
        ends = self._channels.get(channel)
        if ends is None:
            ends = self._channels[channel] = (
                "private" if channel >= PRIVATE else "public",
                _TRANSPORT.get(channel, "udp"), self.local(channel))
        return ends

    def message(self, channel: int, data: bytes, host: str, port: int, now: float,
                verdict: Verdict) -> None:
        """A message the engine judged, and what its verdict sent."""
        call_id = call_id_of(data)
        if not call_id:
            self.untraced += 1
        kind = verdict.kind
        ring = self.ring
        if kind == "forward" or (ring is not None and call_id in ring):
            on_call, to_ring, to_hep = True, ring is not None, self.hep is not None
        else:
            on_call, to_ring, to_hep = self._keep(call_id)
            if not (to_ring or to_hep):
                return
        note = ""
        if kind == "drop" and isinstance(verdict.reason, DropReason):  # type: ignore[union-attr]
            note = verdict.reason.value  # type: ignore[union-attr]
        if now - self._synced > RESYNC_S:
            self._us(now)
        offset = self._offset
        channels = self._channels
        leg, transport, local = channels.get(channel) or self._ends(channel)
        # Only a gateway's request carries credentials: sbc strips them before
        # VOS3000 and never sends any itself (what it sends is not searched).
        msgs = [_new(Message, (int((now + offset) * 1_000_000), leg, "in", transport,
                               (host, port), local,
                               data if channel >= PRIVATE else redact(data), note))]
        sends = verdict.sends
        if sends:
            ts = int((self.clock() + offset) * 1_000_000)
            for ch, addr, out in sends:
                leg, transport, local = channels.get(ch) or self._ends(ch)
                msgs.append(_new(Message, (ts, leg, "out", transport, local, addr, out, "")))
        if to_ring:
            ring.add(call_id, msgs, on_call)  # type: ignore[union-attr]
        if to_hep:
            self.hep.submit_many(msgs, call_id)  # type: ignore[union-attr]

    def sent(self, sends: list[Send], now: float) -> None:
        """What sbc sent of its own accord (the timer, the fraud watch)."""
        if not sends:
            return
        ts = self._us(now)
        for ch, addr, data in sends:
            call_id = call_id_of(data)
            on_call, to_ring, to_hep = self._keep(call_id)
            if to_ring or to_hep:
                leg, transport, local = self._channels.get(ch) or self._ends(ch)
                msgs = [_new(Message, (ts, leg, "out", transport, local, addr, data, ""))]
                if to_ring and self.ring is not None:
                    self.ring.add(call_id, msgs, on_call)
                if to_hep and self.hep is not None:
                    self.hep.submit_many(msgs, call_id)


class TraceService:
    """The trace and HEP sections, live: made with the server, reconfigured
    on reload, read by the admin (sbc.admin.calls)."""

    def __init__(self, cfg: Config, pipeline: Any, gateway_of: Callable[[str, int], str | None]
                 ) -> None:
        self.pipeline = pipeline
        self.loop = pipeline.loop
        self.gateway_of = gateway_of
        self.capture = Capture(self.loop.time, self._local)
        self.cfg = cfg
        self._public: Addr = (cfg.public.advertised, cfg.public.port)
        self._tls: Addr = (cfg.public.advertised, cfg.public.tls_port)
        self.configure(cfg)

    def _local(self, channel: int) -> Addr:
        if channel >= PRIVATE:
            egresses = self.pipeline.engine.egresses
            i = channel - PRIVATE
            return (egresses[i][0], egresses[i][1]) if i < len(egresses) else ("0.0.0.0", 0)
        return self._tls if channel == PUBLIC_TLS else self._public

    def configure(self, cfg: Config) -> None:
        self.cfg = cfg
        self._public = (cfg.public.advertised, cfg.public.port)
        self._tls = (cfg.public.advertised, cfg.public.tls_port)
        t, cap = cfg.trace, self.capture
        cap._channels.clear()  # sbc's addresses may have changed
        if not t.enabled:
            cap.ring = None
        elif cap.ring is None:
            cap.ring = TraceRing(t.max_bytes, t.max_calls, t.max_call_bytes, t.refused_share)
        else:
            cap.ring.configure(t.max_bytes, t.max_calls, t.max_call_bytes, t.refused_share)
        cap.ring_sample.rate = t.refused_sample_rate
        cap.hep_sample.rate = cfg.hep.refused_sample_rate
        hep = cfg.hep
        if cap.hep is not None and (not hep.enabled or cap.hep.cfg != hep):
            cap.hep.close()
            cap.hep = None
        if hep.enabled and cap.hep is None:
            cap.hep = HepSender(hep, self.loop)
            if self._started:
                cap.hep.start()
        self.pipeline.trace = cap if (cap.ring is not None or cap.hep is not None) else None

    _started = False

    def start(self) -> None:
        self._started = True
        if self.capture.hep is not None:
            self.capture.hep.start()

    def stop(self) -> None:
        self._started = False
        if self.capture.hep is not None:
            self.capture.hep.close()

    def event(self, event: str, fields: dict[str, Any]) -> None:
        """The engine's call_setup and call_end, kept beside a traced call."""
        ring = self.capture.ring
        call_id = fields.get("call_id")
        if ring is None or not isinstance(call_id, str):
            return
        key = call_id.encode("utf-8", "surrogateescape")[:256]
        if event == "call_setup":
            ring.note(key, gateway=fields.get("gateway"), setup_ms=fields.get("setup_ms"))
        elif event == "call_end":
            ring.note(key, gateway=fields.get("gateway"), reason=fields.get("reason"),
                      duration_s=fields.get("duration_s"))

    # ------------------------------------------------------------------ admin

    @property
    def enabled(self) -> bool:
        return self.capture.ring is not None

    def _gateway(self, trace: Any) -> str | None:
        first = next((m for m in trace.messages if m.leg == "public" and m.direction == "in"), None)
        return self.gateway_of(*first.src) if first is not None else None

    def calls(self, limit: int = 1000) -> list[dict[str, Any]]:
        ring = self.capture.ring
        if ring is None:
            return []
        return [summarize(t, self._gateway(t)) for t in ring.recent()[:limit]]

    def trace(self, call_id: str) -> dict[str, Any] | None:
        ring = self.capture.ring
        t = ring.get(call_id.encode("utf-8", "surrogateescape")) if ring is not None else None
        if t is None:
            return None
        return {"call": summarize(t, self._gateway(t)), "messages": message_rows(t)}

    def pcap(self, call_id: str) -> bytes | None:
        ring = self.capture.ring
        t = ring.get(call_id.encode("utf-8", "surrogateescape")) if ring is not None else None
        return None if t is None else pcap(t.messages)

    def figures(self) -> dict[str, Any]:
        cap = self.capture
        out: dict[str, Any] = {"enabled": cap.ring is not None, "untraced": cap.untraced,
                               "refused_sampled": cap.ring_sample.kept,
                               "refused_skipped": cap.ring_sample.skipped}
        if cap.ring is not None:
            out.update(cap.ring.figures())
        if cap.hep is not None:
            out["hep"] = {**cap.hep.stats(), "sampled_out": cap.hep_sample.skipped}
        return out
