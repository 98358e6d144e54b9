"""The dashboard at `/` in real headless Chromium, against a running sbc.

sbc runs in a thread with its own event loop (Selenium blocks), VOS3000 is an
asyncio-dgram socket answering the OPTIONS pings (whose answers sbc absorbs:
the page shows them apart from the drops), and a scanner sends OPTIONS at the
public port so the drop charts have something to show. The browser
loads the page, takes the token, draws the charts from the API, and lifts a
ban that must then be gone from sbc's ban table too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import asyncio_dgram
import pytest
import uvloop

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # the test fails and says how to install it
    webdriver = None  # type: ignore[assignment]

from sbc.config import load_config
from sbc.io.server import Server
from tools.standin import answer
from tests.io.test_transport import free_port

TOKEN = "dashboard-test-token"
GATEWAY_IP = "127.0.0.2"
SCANNER_IP = "127.0.0.5"  # on loopback, not a gateway
BANNED = ("198.51.100.7", "203.0.113.9")
HAND_BANNED = "192.0.2.44"
DEADLINE = 20.0
MISSING = "run `make test`: it installs chromium, chromium-driver and selenium"

T = TypeVar("T")


class SbcThread:
    """A real `Server` with admin enabled, and a fake VOS3000, in a thread of
    their own with their own loop. Start and stop run in that loop; their
    errors come back to the caller."""

    def __init__(self, config: Path, backend_port: int) -> None:
        self.config = config
        self.backend_port = backend_port
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="sbc", daemon=True)
        self.server: Server | None = None
        self._vos: asyncio_dgram.DatagramServer | None = None
        self._pinger: asyncio.Future[None] | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float = 10.0) -> T:
        """Await `fn()` in sbc's loop, where its tables live."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return future.result(timeout)

    def read(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()
        return self.call(run)

    def start(self) -> Server:
        self.thread.start()
        return self.call(self._start)

    def stop(self) -> None:
        try:
            self.call(self._stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            assert not self.thread.is_alive(), "sbc's loop did not stop"
            self.loop.close()

    async def _start(self) -> Server:
        vos = self._vos = await asyncio_dgram.bind(("127.0.0.1", self.backend_port))

        async def answer_pings() -> None:
            while True:
                data, addr = await vos.recv()
                for out in answer(data, "127.0.0.1", self.backend_port):
                    await vos.send(out, addr)

        self._pinger = asyncio.ensure_future(answer_pings())
        server = Server(load_config(self.config), config_path=str(self.config))
        await server.start()
        self.server = server
        return server

    async def _stop(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            await asyncio.gather(self._pinger, return_exceptions=True)
        if self.server is not None:
            await self.server.stop()
        if self._vos is not None:
            self._vos.close()
        await self.loop.shutdown_asyncgens()


def request(method: str, url: str, body: dict[str, Any] | None = None,
            token: str | None = TOKEN) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"null")


def scanner_options(port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {SCANNER_IP}:5061;branch=z9hG4bK-scan{n}\r\n"
        f"From: \"sipvicious\" <sip:100@{SCANNER_IP}>;tag=s{n}\r\n"
        f"To: <sip:100@127.0.0.1>\r\n"
        f"Call-ID: scan-{n}@{SCANNER_IP}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "User-Agent: friendly-scanner\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


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
        f"gateways: [{{name: acme, ip: [{GATEWAY_IP}], limits: {{cps: 5, max_concurrent: 10}}}}]\n"
        f"admin: {{port: {ports['admin']}, token: {TOKEN}, ping_interval_s: 0.5, "
        "ping_timeout_s: 0.5}\n"
        "fraud: {rules: [{name: premium, prefixes: ['900'], cool_off_s: 0, "
        "thresholds: {calls_per_minute: {critical: 2}}}]}\n")
    runner = SbcThread(path, ports["backend"])
    try:
        runner.start()
        yield runner, ports
    finally:
        runner.stop()


def chrome(tmp_path: Path) -> webdriver.Chrome:
    if webdriver is None:
        pytest.fail(f"selenium is not installed: {MISSING}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver",) if Path(p).is_file()), None)
    if browser is None or driver is None:
        pytest.fail(f"chromium or chromedriver is missing: {MISSING}")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1300",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def test_dashboard_in_chromium(sbc: tuple[SbcThread, dict[str, int]], tmp_path: Path) -> None:
    runner, ports = sbc
    server = runner.server
    assert server is not None
    base = f"http://127.0.0.1:{ports['admin']}"

    deadline = time.monotonic() + DEADLINE
    while request("GET", base + "/readyz", token=None)[0] != 200:
        assert time.monotonic() < deadline, "VOS3000 stand-in never answered the pings"
        time.sleep(0.05)
    for host in BANNED:
        status, body = request("POST", base + "/api/bans",
                               {"host": host, "seconds": 600, "reason": "test"})
        assert status == 201, body

    browser = chrome(tmp_path)
    scanner = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    scanner.bind((SCANNER_IP, 0))
    try:
        wait = WebDriverWait(browser, DEADLINE, poll_frequency=0.1)

        def state() -> str:
            return str(browser.execute_script("return document.body.dataset.state || ''"))

        browser.get(base + "/")
        # Without the token, the page stops polling and asks for it.
        wait.until(lambda d: state() == "auth", message="the page did not ask for the token")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait.until(lambda d: state() == "live", message="the page did not go live")
        assert browser.execute_script(
            "return sessionStorage.getItem('sbc.admin.token')") == TOKEN

        # A scanner knocks a few times while the page polls.
        for n in range(3):
            scanner.sendto(scanner_options(ports["public"], n), ("127.0.0.1", ports["public"]))
            time.sleep(0.4)

        # The tables are redrawn on every poll: read them in one script call.
        def text(selector: str) -> str:
            return str(browser.execute_script(
                "const n = document.querySelector(arguments[0]);"
                "return n ? n.innerText : '';", selector))

        def points(chart: str) -> int:
            return int(browser.execute_script(
                "return document.getElementById(arguments[0]).dataset.points", chart) or 0)

        def drawn(chart: str) -> Callable[[Any], bool]:
            return lambda d: points(chart) >= 3 and bool(
                d.find_elements(By.CSS_SELECTOR, f"#{chart} canvas"))

        for chart in ("chart-verdict", "chart-drops", "chart-cps", "chart-concurrent"):
            wait.until(drawn(chart), message=f"{chart} received no data")
        assert "pkt/s" in text("#latest-verdict")

        # The drop reason is named in the table and in the chart's legend, counted 3 times.
        scanner_row = "#drop-table tr[data-reason='scanner']"
        wait.until(lambda d: text(scanner_row).split()[-1:] == ["3"],
                   message="scanner drops on the page")
        assert "scanner" in text("#chart-drops .u-legend")
        assert "acme" in text("#gateway-table")
        assert "acme" in text("#chart-cps .u-legend")
        verdicts = text("#chart-verdict .u-legend")
        assert "screened" in verdicts and "forward" in verdicts, verdicts
        assert "absorbed" in verdicts, verdicts
        assert text("#drop-table tr[data-reason='scanner']").split()[1] == "screen"

        # The answers to sbc's own pings are absorbed, shown as such, never as drops.
        wait.until(lambda d: text("#absorbed-table tr[data-reason='ping_answer']"),
                   message="the ping answers among the absorbed messages")
        assert "ping_answer" not in text("#drop-table")
        assert "ping_answer" not in text("#chart-drops .u-legend")

        # The bans made through the API are listed; the scanner leads the top dropped sources.
        def ban_hosts() -> set[str]:
            return set(browser.execute_script(
                "return Array.from(document.querySelectorAll('#ban-table tbody tr[data-host]'),"
                " r => r.dataset.host)"))

        wait.until(lambda d: set(BANNED) <= ban_hosts(), message="bans on the page")
        top = text("#top-table")
        assert SCANNER_IP in top, top

        # Ban one by hand through the form.
        browser.find_element(By.ID, "ban-host").send_keys(HAND_BANNED)
        browser.find_element(By.CSS_SELECTOR, "#ban-form button").click()
        wait.until(lambda d: HAND_BANNED in ban_hosts(), message="the ban made with the form")
        assert runner.read(lambda: server.engine.bans.is_banned(HAND_BANNED, server.loop.time()))

        browser.save_screenshot(str(tmp_path / "dashboard.png"))

        # Unban one: gone from the page and from sbc; the other stays.
        gone, kept = BANNED
        browser.find_element(By.CSS_SELECTOR, f"button.unban[data-host='{gone}']").click()
        wait.until(lambda d: gone not in ban_hosts(), message="unbanned row still shown")
        wait.until(lambda d: not runner.read(
            lambda: server.engine.bans.is_banned(gone, server.loop.time())),
            message="still banned in sbc")
        time.sleep(1.5)  # a poll or two later it has not come back
        assert gone not in ban_hosts() and kept in ban_hosts()
        assert runner.read(lambda: server.engine.bans.is_banned(kept, server.loop.time()))

        # The toll-fraud panel: a block made in sbc is shown with why, and cleared from the page.
        def burst() -> None:
            watch, now = server.fraud.watch, server.loop.time()
            for n in range(2):
                m = watch.match("acme", b"sip:900%d@h" % n, (), now)
                assert m is not None and m.block is None
                watch.admit(m, (b"fraud-%d" % n, b"t"), b"fraud-%d" % n, now)

        runner.read(burst)
        wait.until(lambda d: "premium" in text("#fraud-block-table"),
                   message="the fraud block on the page")
        blocks = text("#fraud-block-table")
        assert "acme" in blocks and "403 Fraud Suspected" in blocks and "fraud-1" in blocks
        assert "critical" in text("#fraud-alert-table")
        browser.find_element(By.CSS_SELECTOR, "button.fraud-clear[data-gateway='acme']").click()
        wait.until(lambda d: "no block in force" in text("#fraud-block-table"),
                   message="the cleared block still shown")
        assert runner.read(lambda: server.fraud.watch.blocks(server.loop.time())) == []

        # Everything the page loaded came from sbc itself, and nothing broke in it.
        urls = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(base + "/") for u in urls), urls
        log: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
        errors = [e for e in log if e["level"] == "SEVERE" and "401" not in e["message"]]
        assert not errors, errors
    finally:
        scanner.close()
        browser.quit()
