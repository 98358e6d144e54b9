"""A VOS3000 stand-in for local runs: a minimal UDP user agent server that
answers every call (100, 180, 200 with SDP), and BYE, CANCEL and other
requests, so `python -m tools.demo` (what `make run` starts) serves a call
with nothing else installed. Alone: `python -m tools.standin --listen
127.0.0.1:5070`.

It is a demo peer, not a test oracle: the tests use real SIPp as VOS3000.
"""

from __future__ import annotations

import asyncio
import hashlib

import asyncio_dgram

from sbc.io.logsetup import get_logger
from sbc.sip import SipParseError, build, format_hostport, parse_message

log = get_logger("tools.standin")

SDP = (
    b"v=0\r\no=vos 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
    b"m=audio 10000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def tag(call_id: bytes) -> bytes:
    """The stand-in's own To-tag for a call (the same for every answer in it)."""
    return hashlib.md5(call_id).hexdigest()[:8].encode()


def answer(data: bytes, host: str, port: int) -> list[bytes]:
    """The responses the stand-in sends for one received message."""
    try:
        msg = parse_message(data)
    except SipParseError:
        return []
    if msg.method is None or msg.method == "ACK":
        return []
    keep = {"via", "from", "to", "call-id", "cseq", "record-route"}
    lines: dict[str, list[bytes]] = {}
    for name, raw in msg.headers:
        if name in keep:
            lines.setdefault(name, []).append(raw)
    to_tag = tag(msg.call_id)
    common = (lines["via"], lines["from"][0], lines["to"][0], lines["call-id"][0],
              lines["cseq"][0])
    contact = b"Contact: <sip:vos@%s>" % format_hostport(host, port).encode()
    if msg.method == "INVITE":
        rr = tuple(lines.get("record-route", ()))
        ringing = build.response(180, *common, to_tag=to_tag, reason=b"Ringing", extra=(*rr, contact))
        sdp = SDP.replace(b"{ip}", host.encode())
        ok = build.response(200, *common, to_tag=to_tag, extra=(*rr, contact,
                                                             b"Content-Type: application/sdp"))
        ok = ok.replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: %d\r\n\r\n" % len(sdp)) + sdp
        return [build.response(100, *common), ringing, ok]
    return [build.response(200, *common, to_tag=to_tag)]


async def serve(host: str, port: int, stop: asyncio.Event) -> None:
    stream = await asyncio_dgram.bind((host, port))
    log.info("standin_started", listen=format_hostport(host, port))
    try:
        while not stop.is_set():
            recv = asyncio.ensure_future(stream.recv())
            waiter = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({recv, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if recv not in done:
                recv.cancel()
                break
            waiter.cancel()
            data, addr = recv.result()
            for out in answer(data, host, port):
                await stream.send(out, addr)
    finally:
        stream.close()


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    import uvloop

    from sbc.io.logsetup import configure_logging
    from sbc.sip import split_hostport

    p = argparse.ArgumentParser(prog="standin", description="a VOS3000 stand-in (UDP UAS)")
    p.add_argument("--listen", default="127.0.0.1:5070", help="host:port (default 127.0.0.1:5070)")
    args = p.parse_args(argv)
    configure_logging("console", "info")
    host, port = split_hostport(args.listen.encode())

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(host, port or 5070, stop)

    uvloop.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
