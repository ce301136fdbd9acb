"""One view of the whole cluster: three workers, each asked for `scope=cluster`, answer every figure of
ground truth; /health/detailed lists the three with their partitions; a worker that stops answering is
reported missing, with its partitions, within the stated timeout, and the live page (headless Chromium,
when installed; CI requires it) shows the banner naming it."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline.state.series import owner
from tests.e2e.test_live_page import browser  # noqa: F401 (the fixture, asked for by name)
from tests.integration.chaos_support import Diffs, check_totals, check_windows
from tests.support.cluster import Cluster, Worker
from tests.support.groundtruth import make_events
from tests.support.needs import REQUIRE_E2E
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
TIMEOUT_S = 1.0
"""web.cluster_timeout: the default, stated in docs/configuration.md."""
SESSION_S = 6.0
"""The group session of this test's workers: a worker stopped for less than this is still a member, so
the others must report it as missing rather than leave it out (the page polls every 2 s, so its banner
may take 3 s; the tests' usual 4 s would leave little room)."""


def cluster_series(worker: Worker, at_ms: int | None = None) -> dict[str, Any]:
    params = {"scope": "cluster", **({"at": str(at_ms)} if at_ms is not None else {})}
    reply = httpx.get(f"{worker.url}/api/v1/series", params=params, timeout=30)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def whole(worker: Worker, at_ms: int) -> dict[str, Any]:
    """The worker's cluster view once no member is missing (an answer slowed by a loaded machine past
    the timeout is reported missing, which is right, but not what this comparison is about)."""
    return wait_until(
        lambda: cluster_series(worker, at_ms),
        30,
        f"a whole cluster view from {worker.name} (its answer)",
        until=lambda data: not data["partial"],
        interval=0.5,
    )


def check_consistent(data: dict[str, Any]) -> None:
    """What every cluster answer must say, whatever happens: each partition is served or listed as
    missing (never both, never neither), a missing worker's partitions are missing, and no series is
    of a missing partition."""
    served = set(data["partitions"])
    missing = set(data["missing_partitions"])
    assert served.isdisjoint(missing), data["workers"]
    assert served | missing == set(range(PARTITIONS)), data["workers"]
    assert data["partial"] == bool(missing)
    for worker in data["workers"]:
        if worker["status"] == "missing":
            assert worker["error"], worker
            assert set(worker["partitions"]) <= missing, worker
    assert not [s["key"] for s in data["series"] if owner(s["key"], PARTITIONS) in missing]


def page_driver(request: pytest.FixtureRequest) -> Any | None:
    """Headless Chromium (the live page e2e's fixture), or None where it is not installed and CI does
    not require it (the page's banner is then not checked here)."""
    if not REQUIRE_E2E and not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    return request.getfixturevalue("browser")


def banner(driver: Any) -> tuple[bool, str, bool]:
    """(the partial banner is shown, its text, the figures are marked partial)."""
    from selenium.webdriver.common.by import By

    shown = driver.find_element(By.ID, "partial")
    marked = "partial" in (driver.find_element(By.ID, "figures").get_attribute("class") or "")
    return bool(shown.is_displayed()), str(shown.text), marked


def test_each_of_three_workers_shows_the_whole_cluster_and_a_stopped_one_as_missing(
    cluster: Cluster, request: pytest.FixtureRequest, artifacts: Path
) -> None:
    cluster.partitions = PARTITIONS
    cluster.extra_env["PULSE_SESSION_TIMEOUT"] = f"{SESSION_S:g}s"
    workers = cluster.add_workers(3)
    now = int(time.time() * 1000)
    events = make_events(3000, 500, 300, seed=14, now_ms=now)
    cluster.publish_events(events[:1500])
    cluster.publish_events(events[1500:], envelope=40)
    cluster.wait_quiet()
    at_ms = now + 1_000

    # Every worker, asked for the cluster, answers every figure of ground truth (not its own share).
    views = {}
    for worker in workers:
        data = whole(worker, at_ms)
        check_consistent(data)
        diffs = Diffs()
        series = {item["key"]: item for item in data["series"]}
        assert len(series) == len(data["series"]), "a series listed twice"
        check_totals(series, events, diffs)
        check_windows(series, events, at_ms, diffs)
        assert not diffs.items, f"{worker.name}'s cluster view: {diffs.report()}"
        own = worker.series(at_ms)
        assert len(own["series"]) < len(series), f"{worker.name} holds every series itself"
        views[worker.name] = data

    # /health/detailed lists the three workers (the URLs they advertise) and partitions covering every
    # partition exactly once, as Faust's assignment handed them to each member, leader or not.
    urls = {w.url for w in workers}
    for worker in workers:
        listed = worker.detailed()["cluster"]
        assert {m["url"] for m in listed["workers"]} == urls
        assert [m["url"] for m in listed["workers"] if m["self"]] == [worker.url]
        owned = sorted(p for m in listed["workers"] for p in m["partitions"])
        assert owned == list(range(PARTITIONS))
        assert listed["unassigned"] == []
        assert all(m["partitions"] for m in listed["workers"]), "a worker without partitions"

    # The live page of one worker shows the whole cluster, no banner.
    asker, stopped = workers[0], workers[2]
    driver = page_driver(request)
    if driver is not None:
        driver.get(asker.url + "/")
        wait_until(
            lambda: (banner(driver), driver.find_element("id", "worker").text),
            30,
            "the page to show the cluster of 3 workers without a banner ((banner, footer))",
            until=lambda seen: seen[0] == (False, "", False) and "cluster of 3 workers" in seen[1],
            interval=0.25,
        )

    # One worker stops answering (SIGSTOP): the next answer of another names it missing with its
    # partitions, within the timeout. Asked at once, well inside the stopped worker's session, it is
    # still a member of the group, so no other outcome is correct.
    full = views[asker.name]
    stopped_entry = next(w for w in full["workers"] if w["url"] == stopped.url)
    stopped.signal(signal.SIGSTOP)
    try:
        began = time.monotonic()
        data = cluster_series(asker, at_ms)
        took = time.monotonic() - began
        if driver is not None:
            # The page's next poll marks the figures partial and names the worker and its partitions.
            shown = wait_until(
                lambda: banner(driver),
                SESSION_S - (time.monotonic() - began),
                f"the page's banner naming {stopped.url} ((shown, text, figures marked))",
                until=lambda seen: seen[0] and seen[2] and stopped.url in seen[1],
                interval=0.2,
            )
            driver.save_screenshot(str(artifacts / "live-page-partial.png"))
            theirs = stopped_entry["partitions"]
            partitions = ("partition " if len(theirs) == 1 else "partitions ") + ", ".join(map(str, theirs))
            assert f"({partitions}): no answer within {TIMEOUT_S:g} s" in shown[1], shown[1]
    finally:
        stopped.signal(signal.SIGCONT)
    check_consistent(data)
    assert took < TIMEOUT_S + 2.0, f"the answer took {took:.2f} s with a {TIMEOUT_S:g} s timeout"
    assert took < SESSION_S
    entry = next(w for w in data["workers"] if w["url"] == stopped.url)
    assert entry["status"] == "missing", entry
    assert entry["error"] == f"no answer within {TIMEOUT_S:g} s", entry
    assert TIMEOUT_S * 1000 * 0.9 <= entry["elapsed_ms"] < TIMEOUT_S * 1000 + 1500, entry
    assert data["partial"] is True
    assert set(stopped_entry["partitions"]) <= set(data["missing_partitions"])
    # Everything the other workers hold is still there, and nothing of the stopped one's.
    kept = {s["key"] for s in full["series"] if owner(s["key"], PARTITIONS) not in data["missing_partitions"]}
    assert {s["key"] for s in data["series"]} == kept
    assert next(w for w in data["workers"] if w["self"])["status"] == "ok"

    # Resumed within its session, it answers again: the view is whole again, and so is the page.
    whole(asker, at_ms)
    if driver is not None:
        wait_until(
            lambda: banner(driver),
            30,
            "the page's banner to go once the worker answers again ((shown, text, figures marked))",
            until=lambda seen: seen == (False, "", False),
            interval=0.25,
        )
