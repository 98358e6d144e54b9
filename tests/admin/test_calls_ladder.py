"""The calls table and a call's ladder on the dashboard, in real headless
Chromium, against a running sbc with tracing on.

A caller on 127.0.0.2 (the gateway) places one call through sbc to the
VOS3000 stand-in and hangs up. The test then reads what the page drew: the
call in the table (and not under a filter that excludes it), one arrow per
traced message in the API's order, each from and to the right lane (by its
attributes and by its geometry), the first line on it, and the whole message,
credentials redacted, on click. The pcap the API gives holds the same
messages. Screenshots: the page in the test's tmp dir, and the ladder for
the README (docs/ladder.png) when SBC_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.test_dashboard import (
    DEADLINE,
    GATEWAY_IP,
    TOKEN,
    SbcThread,
    By,
    WebDriverWait,
    chrome,
    request,
)
from tests.io.test_transport import free_port
from tests.trace.pcapread import read

ROOT = Path(__file__).resolve().parents[2]
CALL_ID = "ladder-1@127.0.0.2"
SECRET = "s3cret-response"


@pytest.fixture
def sbc(tmp_path: Path) -> Iterator[tuple[SbcThread, dict[str, int]]]:
    ports = {"public": free_port(), "private": free_port(), "backend": free_port(),
             "admin": free_port()}
    path = tmp_path / "sbc.yaml"
    path.write_text(
        f"public: {{host: 127.0.0.1, port: {ports['public']}, transports: [udp]}}\n"
        f"private: {{host: 127.0.0.1, port: {ports['private']}}}\n"
        f"backend: {{host: 127.0.0.1, port: {ports['backend']}}}\n"
        f"state: {{path: {tmp_path / 'state.sqlite'}}}\n"
        f"gateways: [{{name: acme, ip: [{GATEWAY_IP}]}}]\n"
        f"admin: {{port: {ports['admin']}, token: {TOKEN}, ping_interval_s: 0.5, "
        "ping_timeout_s: 0.5}\n"
        "trace: {enabled: true, max_bytes: 1048576}\n")
    runner = SbcThread(path, ports["backend"])
    try:
        runner.start()
        yield runner, ports
    finally:
        runner.stop()


class Caller:
    """A UDP caller on the gateway's address, speaking just enough SIP."""

    def __init__(self, sbc_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((GATEWAY_IP, 0))
        self.port = self.sock.getsockname()[1]
        self.sbc = ("127.0.0.1", sbc_port)

    def send(self, method: str, cseq: int, to_tag: str = "", routes: list[str] | None = None,
             extra: str = "") -> None:
        to = "<sip:5551000@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        route = "".join(f"Route: {r}\r\n" for r in routes or [])
        self.sock.sendto((
            f"{method} sip:5551000@127.0.0.1:{self.sbc[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {GATEWAY_IP}:{self.port};branch=z9hG4bK-{method}-{cseq}\r\n"
            f"{route}Max-Forwards: 70\r\n"
            f"From: <sip:4447000@{GATEWAY_IP}>;tag=caller1\r\nTo: {to}\r\n"
            f"Call-ID: {CALL_ID}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:4447000@{GATEWAY_IP}:{self.port}>\r\n{extra}"
            "Content-Length: 0\r\n\r\n").encode(), self.sbc)

    def until(self, first: str, cseq_method: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            text = self.sock.recv(65535).decode()
            if text.startswith(first) and f" {cseq_method}\r\n" in text:
                return text

    def call(self) -> None:
        self.send("INVITE", 1, extra=f'Authorization: Digest username="acme", '
                                      f'response="{SECRET}"\r\n')
        ok = self.until("SIP/2.0 200", "INVITE")
        head = ok.split("\r\n\r\n")[0].split("\r\n")
        to_tag = next(h for h in head if h.lower().startswith("to:")).split("tag=")[1].strip()
        rr = [h.split(":", 1)[1].strip() for h in head if h.lower().startswith("record-route:")]
        routes = list(reversed([r for line in rr for r in line.split(",")]))
        self.send("ACK", 1, to_tag, routes)
        self.send("BYE", 2, to_tag, routes)
        self.until("SIP/2.0 200", "BYE")

    def close(self) -> None:
        self.sock.close()


def api(base: str, path: str) -> bytes:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        body: bytes = r.read()
        return body


def test_calls_table_and_ladder_in_chromium(sbc: tuple[SbcThread, dict[str, int]],
                                            tmp_path: Path) -> None:
    runner, ports = sbc
    base = f"http://127.0.0.1:{ports['admin']}"
    deadline = time.monotonic() + DEADLINE
    while request("GET", base + "/readyz", token=None)[0] != 200:
        assert time.monotonic() < deadline, "VOS3000 stand-in never answered the pings"
        time.sleep(0.05)
    caller = Caller(ports["public"])
    try:
        caller.call()
    finally:
        caller.close()

    status, listing = request("GET", base + "/api/calls")
    assert status == 200, listing
    (record,) = [c for c in listing["calls"] if c["call_id"] == CALL_ID]
    assert (record["gateway"], record["from"], record["to"]) == ("acme", "4447000", "5551000")
    assert record["status"] == 200 and record["ended_by"] == "caller"
    assert record["end_reason"] == "bye_caller" and record["duration_s"] is not None
    assert request("GET", base + "/api/calls?status=failed")[1]["calls"] == []
    assert request("GET", base + "/api/calls?number=555")[1]["calls"][0]["call_id"] == CALL_ID
    status, trace = request("GET", base + f"/api/calls/{CALL_ID}/trace")
    assert status == 200
    messages: list[dict[str, Any]] = trace["messages"]
    # Both legs: 7 messages with the caller, 7 with VOS3000 (its 100 Trying absorbed, still traced).
    assert [m["leg"] for m in messages].count("public") == 7
    assert [m["leg"] for m in messages].count("private") == 7
    assert SECRET not in str(trace) and "Authorization: [redacted]" in messages[0]["text"]
    assert request("GET", base + "/api/calls/nope/trace")[0] == 404
    packets = read(api(base, f"/api/calls/{CALL_ID}/pcap"))
    assert [p.payload.decode() for p in packets] == [m["text"] for m in messages]
    assert all(p.checksum_ok for p in packets)

    browser = chrome(tmp_path)
    try:
        wait = WebDriverWait(browser, DEADLINE, poll_frequency=0.1)
        browser.get(base + "/")
        wait.until(lambda d: d.execute_script("return document.body.dataset.state") == "auth")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        row = f"#calls-table tr[data-call-id='{CALL_ID}']"
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row), message="the call in the table")
        cells = browser.find_element(By.CSS_SELECTOR, row).text
        assert "acme" in cells and "4447000" in cells and "200 OK" in cells and "caller" in cells

        # A filter that excludes it, then one that keeps it.
        browser.find_element(By.ID, "calls-number").send_keys("999")
        browser.find_element(By.CSS_SELECTOR, "#calls-filter button").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row), message="filtered out")
        browser.find_element(By.ID, "calls-number").clear()
        browser.find_element(By.ID, "calls-gateway").send_keys("acme")
        browser.find_element(By.CSS_SELECTOR, "#calls-filter button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, row), message="acme's call")

        browser.find_element(By.CSS_SELECTOR, row).click()
        wait.until(lambda d: d.execute_script(
            "return document.getElementById('ladder').dataset.arrows") == str(len(messages)),
            message="the ladder drawn")
        drawn = browser.execute_script("""
            const x = {};
            for (const l of document.querySelectorAll('#ladder line.lane'))
                x[l.dataset.column] = +l.getAttribute('x1');
            return {lanes: x, arrows: Array.from(document.querySelectorAll('#ladder g.arrow'), g => {
                const l = g.querySelector('line');
                return {index: +g.dataset.index, from: g.dataset.from, to: g.dataset.to,
                        x1: +l.getAttribute('x1'), x2: +l.getAttribute('x2'),
                        y: +l.getAttribute('y1'), text: g.querySelector('text.first-line').textContent};
            })};""")
        arrows, lanes = drawn["arrows"], drawn["lanes"]
        assert len(arrows) == len(messages) == 14
        assert [a["index"] for a in arrows] == list(range(14))
        assert all(b["y"] > a["y"] for a, b in zip(arrows, arrows[1:]))
        for a, m in zip(arrows, messages):
            far = "gateway" if m["leg"] == "public" else "vos3000"
            want = (far, "sbc") if m["direction"] == "in" else ("sbc", far)
            assert (a["from"], a["to"]) == want, (a, m["first_line"])
            assert (a["x1"], a["x2"]) == (lanes[want[0]], lanes[want[1]])
            assert a["text"] == m["first_line"]
        # The call as a ladder, independent of the API: who sent what to whom.
        flow = [(a["from"], a["to"], a["text"].split(" ")[0] if not a["text"].startswith("SIP")
                 else a["text"].split(" ")[1]) for a in arrows]
        assert flow[0] == ("gateway", "sbc", "INVITE")
        assert ("sbc", "vos3000", "INVITE") in flow and ("vos3000", "sbc", "180") in flow
        assert flow.index(("vos3000", "sbc", "200")) < flow.index(("sbc", "gateway", "200"))
        assert flow.index(("gateway", "sbc", "BYE")) < flow.index(("sbc", "vos3000", "BYE"))
        assert flow[-1] == ("sbc", "gateway", "200")

        # The whole message on click, credentials redacted.
        browser.find_element(By.CSS_SELECTOR, "#ladder g.arrow[data-index='0'] text").click()
        wait.until(lambda d: d.find_element(By.ID, "ladder-message").text != "")
        shown = browser.find_element(By.ID, "ladder-message").text
        assert f"Call-ID: {CALL_ID}" in shown and "Authorization: [redacted]" in shown
        assert SECRET not in shown

        browser.save_screenshot(str(tmp_path / "ladder-page.png"))
        section = browser.find_element(By.ID, "calls")
        browser.execute_script("arguments[0].scrollIntoView()", section)
        section.screenshot(str(tmp_path / "ladder.png"))
        assert (tmp_path / "ladder.png").stat().st_size > 10_000
        if os.environ.get("SBC_UPDATE_SCREENSHOTS") == "1":
            (ROOT / "docs").mkdir(exist_ok=True)
            section.screenshot(str(ROOT / "docs" / "ladder.png"))
        log: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
        errors = [e for e in log if e["level"] == "SEVERE" and "401" not in e["message"]]
        assert not errors, errors
    finally:
        browser.quit()
