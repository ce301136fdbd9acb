"""The live page at `/` in Debian's headless Chromium (selenium + chromedriver) against `pulse up --demo`.

It waits for the figures to show numbers and change, creates a silence through the form with the API
token (after a refused attempt with a wrong one), checks it through the API, expires it with its button,
keeps a screenshot in test-artifacts/live-page.png, and stops `pulse up` with SIGINT. Needs the Debian
packages `chromium` and `chromium-driver`; skipped without them, failed under PULSE_REQUIRE_E2E=1.

Hostile input: a script payload is planted in every field the page shows (a route and a service through
events sent to POST /api/v1/events, so also the alert's label values and its annotation, a service's
heartbeat, a silence comment, and an API error message echoing a matcher's label) and the test asserts
that each one is shown as text, that no element of it exists, and that none of its scripts ran; the page
itself has no inline script and its Content-Security-Policy forbids one.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.needs import need, need_binary, need_broker
from tests.support.procs import HOST, Process, descendants, pulse_process
from tests.support.waits import wait_until

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
  - name: e2e_errors_present
    metric: o4o_error_ratio
    window: 5m
    op: ">"
    threshold: 0
    severity: low
    annotations:
      summary: "5xx responses: {{ value | percent }} of requests"
  - name: e2e_hostile_route
    metric: o4o_route_error_ratio
    window: 1m
    where:
      route: "=~.*pwn-route.*"
    by: [service, route]
    op: ">"
    threshold: 0
    severity: medium
    annotations:
      summary: "{{ labels.route }} fails on {{ labels.service }}"
"""


def active_alerts(run: Process) -> list[dict[str, Any]]:
    """GET /api/v1/alerts of the running pipeline."""
    alerts: list[dict[str, Any]] = httpx.get(f"{run.url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return alerts


def payload(field: str) -> str:
    """Markup that runs a script if it ever becomes markup (the handlers also need the CSP to allow them)."""
    run = f"window.__pwned=(window.__pwned||[]).concat('{field}')"
    return (
        f'<img id=pwn-{field} src=x onerror="{run}"><script>{run}</script>'
        f'<svg id=pwn-{field}-svg onload="{run}"></svg>'
    )


HOSTILE = {field: payload(field) for field in ("route", "service", "heartbeat", "comment", "error")}


@pytest.fixture
def pulse_up(tmp_path: Path) -> Iterator[Process]:
    """`pulse up --demo` (API token, always-firing rule) on a free port, healthy; its tree is killed after."""
    need_broker()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    settings = {"PULSE_API_TOKEN": TOKEN, "PULSE_RULES": str(rules), "PULSE_LOG_LEVEL": "info"}
    run = pulse_process(tmp_path, "up", "--demo", log="pulse-up.log", **settings).start()
    try:
        run.wait_healthy(START_WITHIN)
        yield run
    finally:
        run.cleanup()


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


def on_page(
    what: str,
    check: Callable[[], Any],
    timeout: float,
    pulse_up: Process,
    until: Callable[[Any], object] = bool,
) -> Any:
    """Wait until `check` finds something truthy on the page; fail with `what` and the pulse log."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    # A re-render between finding an element and reading it is not a failure: read again.
    stale = (NoSuchElementException, StaleElementReferenceException)
    return wait_until(
        check,
        timeout,
        what,
        until=until,
        interval=0.25,
        ignore=stale,
        alive=pulse_up.alive,
        context=pulse_up.tail,
    )


def text_of(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


def api_silence(pulse_up: Process, silence_id: str) -> dict[str, Any]:
    body = httpx.get(f"{pulse_up.url}/api/v1/silences", timeout=5).json()
    found = [s for s in body["data"]["silences"] if s["id"] == silence_id]
    assert len(found) == 1, body
    return dict(found[0])


def is_relative(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//")


@pytest.mark.timeout(240)
def test_live_page_updates_and_manages_silences(pulse_up: Process, browser: Any, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    page = httpx.get(pulse_up.url + "/", timeout=5)
    policy = page.headers["Content-Security-Policy"]
    assert re.search(r"(^|; )script-src 'self'(;|$)", policy) and "unsafe-inline" not in policy, policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    # Hostile values, sent as a producer would: the alert on their route fires while the page loads.
    auth = {"Authorization": f"Bearer {TOKEN}"}
    now = int(time.time() * 1000)
    request = {"ts": now, "service": HOSTILE["service"], "method": "GET", "route": HOSTILE["route"]}
    requests = [{**request, "status_code": 500, "duration_ms": 5}] * 3
    heartbeat = {"ts": now, "service": HOSTILE["heartbeat"], "status": "healthy"}
    for kind, events in (("request", requests), ("heartbeat", [heartbeat])):
        sent = httpx.post(f"{pulse_up.url}/api/v1/events/{kind}", json=events, headers=auth, timeout=10)
        assert sent.status_code == 202, sent.text
    driver.get(pulse_up.url + "/")
    assert "o4o-pulse" in driver.title
    assert driver.execute_script("return document.querySelectorAll('script:not([src])').length") == 0

    # Nothing from outside the worker: every reference in the document is relative.
    refs = driver.execute_script(
        "return [...document.querySelectorAll('[src],[href]')]"
        ".map(e => e.getAttribute('src') ?? e.getAttribute('href'))"
    )
    assert refs, "the page references its script and style"
    assert all(is_relative(ref) for ref in refs), refs

    # The figures fill in with numbers, then change as the simulator keeps publishing.
    def figures() -> dict[str, str]:
        return {name: text_of(driver, name) for name in FIGURES}

    def numbers(shown: dict[str, str]) -> bool:
        return all(re.search(r"\d", text) for text in shown.values())

    first = on_page("numbers in every key figure (figures shown)", figures, DATA_WITHIN, pulse_up, numbers)

    def both_changed(shown: dict[str, str]) -> bool:
        return numbers(shown) and all(shown[name] != first[name] for name in ("rps", "orders-per-hour"))

    changed = on_page(
        f"requests/s and orders per hour to change from {first}",
        figures,
        CHANGE_WITHIN,
        pulse_up,
        both_changed,
    )
    assert changed["rps"] != first["rps"] and changed["orders-per-hour"] != first["orders-per-hour"]
    assert driver.find_elements(By.CSS_SELECTOR, "#health li.service.healthy"), "no healthy service dot"
    assert driver.find_elements(By.CSS_SELECTOR, "#chart polyline.line-rps"), "no requests/s line"
    assert "partitions 0" in text_of(driver, "worker")

    # The firing rule shows under its severity, its markup as text.
    def high_alert() -> str | None:
        found = driver.find_elements(By.CSS_SELECTOR, '#alerts section[data-severity="high"] li.alert')
        return str(found[0].text) if found else None

    shown_alert = on_page("the e2e alert under severity high", high_alert, 90, pulse_up)
    alerts = active_alerts(pulse_up)
    fired = [a for a in alerts if a["rule"] == "e2e_traffic_present"]
    assert fired and fired[0]["severity"] == "high", alerts
    assert "e2e_traffic_present" in shown_alert and fired[0]["title"] in shown_alert
    assert "<b id=injected-alert>" in shown_alert
    assert driver.execute_script("return document.getElementById('injected-alert')") is None

    # Every resource the browser fetched came from this worker.
    fetched = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(name.startswith(pulse_up.url + "/") for name in fetched), fetched

    # The hostile route and service: as the alert's label values and in its annotation, as text.
    def hostile_alert() -> str | None:
        found = driver.find_elements(By.CSS_SELECTOR, '#alerts section[data-severity="medium"] li.alert')
        texts = [str(item.text) for item in found if "e2e_hostile_route" in item.text]
        return texts[0] if texts else None

    shown_hostile = on_page("the hostile route's alert under severity medium", hostile_alert, 60, pulse_up)
    assert f"route={HOSTILE['route']}" in shown_hostile and f"service={HOSTILE['service']}" in shown_hostile
    assert f"{HOSTILE['route']} fails on {HOSTILE['service']}" in shown_hostile
    # Its context names the route (as text) with its 3 failures: all of its 5xx.
    assert "Routes with the most 5xx (1m)" in shown_hostile
    assert f"{HOSTILE['service']} {HOSTILE['route']} 3 100.0% 100.0%" in shown_hostile

    # An error-ratio alert's card shows its context: the routes with the most 5xx and the error codes.
    def context_card() -> Any | None:
        found = driver.find_elements(By.CSS_SELECTOR, '#alerts section[data-severity="low"] li.alert')
        cards = [item for item in found if "e2e_errors_present" in item.text]
        return (
            cards[0] if cards and cards[0].find_elements(By.CSS_SELECTOR, ".context-table td.num") else None
        )

    card = on_page("the e2e error-ratio alert with its context tables", context_card, 60, pulse_up)
    captions = [str(c.text) for c in card.find_elements(By.CSS_SELECTOR, ".context-table caption")]
    assert captions == ["Routes with the most 5xx (5m)", "Most frequent error codes (5m)"], captions
    context = next(a for a in active_alerts(pulse_up) if a["rule"] == "e2e_errors_present")["context"]
    first_route = context["sections"][0]["rows"][0]
    assert f"{first_route['name']} {first_route['count']}" in str(card.text)
    driver.execute_script("arguments[0].scrollIntoView()", card)
    card_shot = artifacts / "alert-context.png"
    assert card.screenshot(str(card_shot))
    assert card_shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    services = on_page(
        "the hostile heartbeat's service in the health list",
        lambda: [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, "#health .name")],
        30,
        pulse_up,
        until=lambda names: HOSTILE["heartbeat"] in names,
    )
    assert HOSTILE["heartbeat"] in services

    # A wrong token is refused, and the page says so.
    marker = uuid.uuid4().hex[:8]
    comment = f"e2e live page {marker} <img id=injected src=x> {HOSTILE['comment']}"  # markup stays text
    token = driver.find_element(By.ID, "token")
    token.send_keys("not-the-token")
    driver.find_element(By.ID, "silence-matchers").send_keys("alertname=high_error_rate")
    duration = driver.find_element(By.ID, "silence-duration")
    duration.clear()
    duration.send_keys("1h")
    driver.find_element(By.ID, "silence-author").send_keys("e2e")
    driver.find_element(By.ID, "silence-comment").send_keys(comment)
    driver.find_element(By.ID, "silence-submit").click()

    def message() -> str:
        return text_of(driver, "silence-message")

    refused = on_page("the 401 shown (the form's message)", message, 15, pulse_up, lambda text: "401" in text)
    assert "bearer token" in refused

    # The right token: the silence is created, listed as active on the page and by the API.
    token.clear()
    token.send_keys(TOKEN)
    assert driver.execute_script("return sessionStorage.getItem('pulse.apiToken')") == TOKEN
    driver.find_element(By.ID, "silence-submit").click()
    created = on_page(
        "the silence created (the form's message)",
        message,
        15,
        pulse_up,
        lambda text: re.search(r"Created silence (\w+)", text),
    )
    silence_id = re.findall(r"Created silence (\w+)", created)[0]
    row_css = f'#silences tr[data-id="{silence_id}"]'

    def row_status() -> str:
        return str(driver.find_element(By.CSS_SELECTOR, f"{row_css} .silence-status").text)

    on_page("the silence listed as active (its status)", row_status, 30, pulse_up, until="active".__eq__)
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

    on_page("the expire button clicked", click_expire, 15, pulse_up)
    on_page("the silence listed as expired (its status)", row_status, 30, pulse_up, until="expired".__eq__)
    assert "Expired silence" in text_of(driver, "silence-message")
    expired = api_silence(pulse_up, silence_id)
    assert expired["status"] == "expired"
    assert expired["endsAt"] <= int(time.time() * 1000)
    assert not driver.find_elements(By.CSS_SELECTOR, f"{row_css} button.expire")

    # An API error message that echoes input (a matcher's label with a bad regex) is shown as text.
    matchers = driver.find_element(By.ID, "silence-matchers")
    matchers.clear()
    matchers.send_keys(HOSTILE["error"] + "=~(")
    driver.find_element(By.ID, "silence-comment").send_keys("hostile label")
    driver.find_element(By.ID, "silence-submit").click()
    bad = on_page("the 400 shown (the form's message)", message, 15, pulse_up, lambda text: "400" in text)
    assert f"matchers.{HOSTILE['error']}: invalid regex" in bad, bad

    # Nothing planted became markup, and none of its scripts ran.
    assert driver.execute_script("return document.querySelector('[id^=\"pwn-\"]')") is None
    assert driver.execute_script("return window.__pwned === undefined") is True
    assert driver.execute_script("return document.querySelectorAll('script:not([src])').length") == 0

    # The whole page at 1280 px wide, kept for people to look at.
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": max(800, height), "deviceScaleFactor": 1, "mobile": False},
    )
    shot = artifacts / "live-page.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    # No script errors, no CSP violations; the expected errors are the refused (401, 400) requests.
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert all(re.search(r"status of 40[01]\b", message) for message in errors), errors

    # The policy is what stops an inline script that reached the document: one added now does not run.
    ran = driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.__inline = 1';"
        "document.body.append(s); return window.__inline === 1"
    )
    assert ran is False, "an inline script ran: the Content-Security-Policy does not forbid it"

    # Ctrl-C stops `pulse up` and everything it started.
    tree = descendants(pulse_up.pid)
    assert tree, "pulse up runs its broker, worker and simulator as children"
    pulse_up.signal(signal.SIGINT)
    code = pulse_up.wait(STOP_WITHIN)
    assert code == 0, f"`pulse up` exited with {code}:\n{pulse_up.tail()}"
    wait_until(
        lambda: sorted(str(p) for p in tree if p.alive()),
        STOP_WITHIN,
        "every child of `pulse up` to exit after SIGINT (still running)",
        until=lambda left: not left,
        interval=0.1,
    )
    with pytest.raises(OSError):
        socket.create_connection((HOST, pulse_up.port), timeout=1).close()
