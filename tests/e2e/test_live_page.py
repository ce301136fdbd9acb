"""The live page at `/` in Debian's headless Chromium (selenium + chromedriver) against `pulse up --demo`.

It waits for the figures to show numbers and change, creates a silence through the form with the API
token (after a refused attempt with a wrong one), checks it through the API, expires it with its button,
keeps a screenshot in test-artifacts/live-page.png, and stops `pulse up` with SIGINT. Needs the Debian
packages `chromium` and `chromium-driver`; skipped without them, failed under PULSE_REQUIRE_E2E=1.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from pipeline.tools.procs import free_port
from tests.conftest import need, need_binary
from tests.e2e.launch import HOST, need_broker, pulse_argv, pulse_env, wait_healthy
from tests.e2e.test_cli_processes import descendants

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")]

TOKEN = "e2e-live-page-" + uuid.uuid4().hex
START_WITHIN = 90.0  # broker + worker start on a loaded 2-CPU machine
DATA_WITHIN = 90.0  # the simulator's first events reach the figures
CHANGE_WITHIN = 30.0
STOP_WITHIN = 10.0  # the contract: Ctrl-C stops everything within 10 s
FIGURES = ("orders-per-hour", "revenue-today", "error-rate", "p95", "rps")
# The seed's rules plus one that fires as soon as there is traffic, so the alerts panel has something to
# group; its summary carries markup, which the page must show as text.
RULES = """
extends: defaults
rules:
  - name: e2e_traffic_present
    metric: o4o_requests_per_second
    window: 1m
    op: ">"
    threshold: 0
    severity: high
    annotations:
      summary: "traffic: {{ value }} requests/s <b id=injected-alert>!</b>"
"""


@dataclass
class PulseUp:
    """A `pulse up --demo` process (own session) and the web port it serves."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _default_sigint() -> None:  # runs in the child between fork and exec
    """Default SIGINT, as in a terminal: a background pytest may have it ignored, and exec keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def pulse_up(tmp_path: Path) -> Iterator[PulseUp]:
    """`pulse up --demo` (API token, always-firing rule) on a free port, healthy; its tree is killed after."""
    need_broker()
    port = free_port(HOST)
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    env = pulse_env(tmp_path, port, PULSE_API_TOKEN=TOKEN, PULSE_RULES=str(rules), PULSE_LOG_LEVEL="info")
    log = tmp_path / "pulse-up.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            pulse_argv("up", "--demo"),
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown can kill the whole tree
            preexec_fn=_default_sigint,
        )
    run = PulseUp(proc, port, log)
    seen = descendants(proc.pid)

    def alive() -> bool:
        seen.update(descendants(proc.pid))  # its children, to kill them all at teardown
        return proc.poll() is None

    try:
        wait_healthy(port, alive, run.tail, START_WITHIN)
        yield run
    finally:
        if proc.poll() is None:
            seen |= descendants(proc.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for child in seen:
            child.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, with a 1280x800 viewport and its console log kept."""
    chromium = need_binary("chromium", "chromium")
    chromedriver = need_binary("chromedriver", "chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        need(False, f"selenium is not installed ({exc}): pip install -e '.[dev]'")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # containers and CI run as root, where Chromium's sandbox cannot start
        "--disable-dev-shm-usage",  # /dev/shm is tiny in containers
        "--window-size=1280,800",
        # Only the page under test may make requests: no updates, sync, or safe-browsing lookups.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
    )
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(what: str, check: Callable[[], Any], timeout: float, pulse_up: PulseUp) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` (and the pulse log) otherwise."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        assert pulse_up.proc.poll() is None, f"`pulse up` died while waiting for {what}:\n{pulse_up.tail()}"
        # A re-render between finding an element and reading it is not a failure: read again.
        with contextlib.suppress(NoSuchElementException, StaleElementReferenceException):
            found = check()
            if found:
                return found
        assert time.monotonic() < deadline, f"not within {timeout:g}s: {what}\n{pulse_up.tail()}"
        time.sleep(0.25)


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def message_with(driver: Any, text: str) -> str | None:
    """The form's message when it contains `text`."""
    shown = text_of(driver, "silence-message")
    return shown if text in shown else None


def api_silence(pulse_up: PulseUp, silence_id: str) -> dict[str, Any]:
    body = httpx.get(f"{pulse_up.url}/api/v1/silences", timeout=5).json()
    found = [s for s in body["data"]["silences"] if s["id"] == silence_id]
    assert len(found) == 1, body
    return dict(found[0])


def is_relative(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//")


@pytest.mark.timeout(240)
def test_live_page_updates_and_manages_silences(pulse_up: PulseUp, browser: Any, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(pulse_up.url + "/")
    assert "o4o-pulse" in driver.title

    # Nothing from outside the worker: every reference in the document is relative.
    refs = driver.execute_script(
        "return [...document.querySelectorAll('[src],[href]')]"
        ".map(e => e.getAttribute('src') ?? e.getAttribute('href'))"
    )
    assert refs, "the page references its script and style"
    assert all(is_relative(ref) for ref in refs), refs

    # The figures fill in with numbers, then change as the simulator keeps publishing.
    def numbers() -> dict[str, str] | None:
        shown = {name: text_of(driver, name) for name in FIGURES}
        return shown if all(re.search(r"\d", text) for text in shown.values()) else None

    first = wait_until("numbers in every key figure", numbers, DATA_WITHIN, pulse_up)
    time.sleep(4)  # two polls apart

    def both_changed() -> dict[str, str] | None:
        shown = numbers()
        moved = shown and all(shown[name] != first[name] for name in ("rps", "orders-per-hour"))
        return shown if moved else None

    changed = wait_until("requests/s and orders per hour to change", both_changed, CHANGE_WITHIN, pulse_up)
    assert changed["rps"] != first["rps"] and changed["orders-per-hour"] != first["orders-per-hour"]
    assert driver.find_elements(By.CSS_SELECTOR, "#health li.service.healthy"), "no healthy service dot"
    assert driver.find_elements(By.CSS_SELECTOR, "#chart polyline.line-rps"), "no requests/s line"
    assert "partitions 0" in text_of(driver, "worker")

    # The firing rule shows under its severity, its markup as text.
    def high_alert() -> str | None:
        found = driver.find_elements(By.CSS_SELECTOR, '#alerts section[data-severity="high"] li.alert')
        return str(found[0].text) if found else None

    shown_alert = wait_until("the e2e alert under severity high", high_alert, 90, pulse_up)
    alerts = httpx.get(f"{pulse_up.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    fired = [a for a in alerts if a["rule"] == "e2e_traffic_present"]
    assert fired and fired[0]["severity"] == "high", alerts
    assert "e2e_traffic_present" in shown_alert and fired[0]["title"] in shown_alert
    assert "<b id=injected-alert>" in shown_alert
    assert driver.execute_script("return document.getElementById('injected-alert')") is None

    # Every resource the browser fetched came from this worker.
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(name.startswith(pulse_up.url + "/") for name in fetched), fetched

    # A wrong token is refused, and the page says so.
    marker = uuid.uuid4().hex[:8]
    comment = f"e2e live page {marker} <img id=injected src=x>"  # markup must stay text
    token = driver.find_element(By.ID, "token")
    token.send_keys("not-the-token")
    driver.find_element(By.ID, "silence-matchers").send_keys("alertname=high_error_rate")
    duration = driver.find_element(By.ID, "silence-duration")
    duration.clear()
    duration.send_keys("1h")
    driver.find_element(By.ID, "silence-author").send_keys("e2e")
    driver.find_element(By.ID, "silence-comment").send_keys(comment)
    driver.find_element(By.ID, "silence-submit").click()
    refused = wait_until("the 401 shown", lambda: message_with(driver, "401"), 15, pulse_up)
    assert "bearer token" in refused

    # The right token: the silence is created, listed as active on the page and by the API.
    token.clear()
    token.send_keys(TOKEN)
    assert driver.execute_script("return sessionStorage.getItem('pulse.apiToken')") == TOKEN
    driver.find_element(By.ID, "silence-submit").click()
    created = wait_until(
        "the silence created",
        lambda: re.search(r"Created silence (\w+)", text_of(driver, "silence-message")),
        15,
        pulse_up,
    )
    silence_id = created.group(1)
    row_css = f'#silences tr[data-id="{silence_id}"]'

    def row_status() -> str:
        return str(driver.find_element(By.CSS_SELECTOR, f"{row_css} .silence-status").text)

    wait_until("the silence listed as active", lambda: row_status() == "active", 30, pulse_up)
    row = driver.find_element(By.CSS_SELECTOR, row_css)
    assert row.find_element(By.CSS_SELECTOR, ".comment").text == comment
    assert row.find_element(By.CSS_SELECTOR, ".matchers").text == "alertname=high_error_rate"
    assert driver.execute_script("return document.getElementById('injected')") is None
    listed = api_silence(pulse_up, silence_id)
    assert listed["status"] == "active"
    assert listed["matchers"] == {"alertname": "high_error_rate"}
    assert listed["comment"] == comment and listed["createdBy"] == "e2e"
    assert listed["endsAt"] - listed["startsAt"] == 3_600_000

    # Its expire button ends it, on the page and in the API.
    def click_expire() -> bool:
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.expire").click()
        return True

    wait_until("the expire button clicked", click_expire, 15, pulse_up)
    wait_until("the silence listed as expired", lambda: row_status() == "expired", 30, pulse_up)
    assert "Expired silence" in text_of(driver, "silence-message")
    expired = api_silence(pulse_up, silence_id)
    assert expired["status"] == "expired"
    assert expired["endsAt"] <= int(time.time() * 1000)
    assert not driver.find_elements(By.CSS_SELECTOR, f"{row_css} button.expire")

    # The whole page at 1280 px wide, kept for people to look at.
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": max(800, height), "deviceScaleFactor": 1, "mobile": False},
    )
    shot = artifacts / "live-page.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    # No script errors, no CSP violations; the one expected error is the refused (401) request.
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert all("401" in message for message in errors), errors

    # Ctrl-C stops `pulse up` and everything it started.
    tree = descendants(pulse_up.proc.pid)
    assert tree, "pulse up runs its broker, worker and simulator as children"
    pulse_up.proc.send_signal(signal.SIGINT)
    try:
        code = pulse_up.proc.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"`pulse up` still running {STOP_WITHIN:g}s after SIGINT:\n{pulse_up.tail()}"
        ) from None
    assert code == 0, f"`pulse up` exited with {code}:\n{pulse_up.tail()}"
    deadline = time.monotonic() + STOP_WITHIN
    while (left := [p for p in tree if p.alive()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"still running after SIGINT: {sorted(map(str, left))}"
    with pytest.raises(OSError):
        socket.create_connection((HOST, pulse_up.port), timeout=1).close()
