"""The floor under a proxy written on this loop: a blind UDP relay.

    python loadtest/relay.py --public 127.0.0.10:5060 --private 127.0.0.11:5070 \\
        --backend 127.0.0.20:5080

It does the least any front-end must do per datagram, on the same interpreter
and event loop as sbc (CPython, uvloop): take the datagram, find its Call-ID,
and send it on unchanged. Requests from the public side go to `--backend`
from the private socket, and the Call-ID's public address is remembered;
what the backend sends back goes to that address from the public socket. No
parse, no Via, no Record-Route, no state machine, no screen, no log line.

`compare.py --targets relay` runs it in place of a server, so the calls
scenario's CPU per call for it is what the kernel's loopback path, the loop's
wake-ups and one Python callback per datagram cost, with nothing of SIP
above them: what sbc spends beyond it is its own work. SIPp's answers follow
the datagram's source address, so its calls complete through the relay; the
UAS's 100 is passed on (sbc answers 100 itself instead): the same seven
datagrams in and seven out per call as sbc.

A measurement tool, not a server: the Call-ID table is emptied when it holds
`--max-calls` entries, and the relay exits on SIGTERM or SIGINT, printing
`{"event": "started"}` when ready and `{"event": "stopped", ...}` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

import uvloop


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _call_id(data: bytes) -> bytes | None:
    i = data.find(b"\nCall-ID:")
    if i < 0:
        i = data.lower().find(b"\ncall-id:")
        if i < 0:
            i = data.find(b"\ni:")
            if i < 0:
                return None
    start = data.index(b":", i) + 1
    end = data.find(b"\r", start)
    return data[start : end if end >= 0 else len(data)].strip()


class Relay:
    def __init__(self, backend: tuple[str, int], max_calls: int) -> None:
        self.backend = backend
        self.max_calls = max_calls
        self.calls: dict[bytes, tuple[Any, ...]] = {}
        self.public: asyncio.DatagramTransport | None = None
        self.private: asyncio.DatagramTransport | None = None
        self.relayed = 0
        self.dropped = 0

    def from_public(self, data: bytes, addr: tuple[Any, ...]) -> None:
        key = _call_id(data)
        if key is None or self.private is None:
            self.dropped += 1
            return
        if len(self.calls) >= self.max_calls:
            self.calls.clear()
        self.calls[key] = addr
        self.private.sendto(data, self.backend)
        self.relayed += 1

    def from_private(self, data: bytes, addr: tuple[Any, ...]) -> None:
        key = _call_id(data)
        dest = self.calls.get(key) if key is not None else None
        if dest is None or self.public is None:
            self.dropped += 1
            return
        self.public.sendto(data, dest)
        self.relayed += 1


class _Side(asyncio.DatagramProtocol):
    def __init__(self, receive: Any) -> None:
        self.datagram_received = receive  # type: ignore[method-assign]


async def serve(args: argparse.Namespace) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    relay = Relay(_addr(args.backend), args.max_calls)
    public, _ = await loop.create_datagram_endpoint(
        lambda: _Side(relay.from_public), local_addr=_addr(args.public))
    private, _ = await loop.create_datagram_endpoint(
        lambda: _Side(relay.from_private), local_addr=_addr(args.private))
    relay.public, relay.private = public, private
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    print(json.dumps({"event": "started", "core": "relay"}), flush=True)
    await done.wait()
    public.close()
    private.close()
    return {"relayed": relay.relayed, "dropped": relay.dropped}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--public", required=True, help="HOST:PORT the callers send to")
    p.add_argument("--private", required=True, help="HOST:PORT the backend is reached from")
    p.add_argument("--backend", required=True, help="HOST:PORT of the VOS3000 stand-in")
    p.add_argument("--max-calls", type=int, default=200_000, help="Call-IDs kept at most")
    args = p.parse_args(argv)
    counts = uvloop.run(serve(args))
    print(json.dumps({"event": "stopped", **counts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
