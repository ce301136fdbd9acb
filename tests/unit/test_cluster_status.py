"""The status line of `pulse up` with several workers: the whole cluster's events/s and lag, how many
workers there are, and which did not answer (a partial sum is said to be one)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import orjson
import pytest

from pipeline.tools import status
from pipeline.tools.procs import free_port
from pipeline.tools.status import FANCY, PLAIN, Sample, gist, line
from pipeline.tools.supervisor import poll_worker
from tests.unit.test_status import METRICS, FakeWorker


def sample(at: float, events: float, others: tuple[str, ...] = (), missing: tuple[str, ...] = ()) -> Sample:
    return Sample(at, events=events, lag=0, health="healthy", others=others, missing=missing)


def test_the_other_workers_come_from_health_detailed() -> None:
    body = {
        "cluster": {
            "workers": [
                {"url": "http://a:6066", "partitions": [0], "self": True},
                {"url": "http://b:6066", "partitions": [1], "self": False},
                {"url": "http://c:6066", "partitions": [2, 3], "self": False},
            ]
        }
    }
    assert status.other_workers(body) == ("http://b:6066", "http://c:6066")
    assert status.other_workers({"status": "healthy"}) == ()  # an older worker: itself only
    assert status.summed([1.0, None, 2.0]) == 3.0
    assert status.summed([None]) is None


def test_the_line_says_how_many_workers_and_which_do_not_answer() -> None:
    b, c = "http://b:6066", "http://c:6066"
    one = line(sample(0.0, 0), sample(2.0, 200), 200)
    assert one == "● 100 events/s · 0 firing · lag 0 · worker ok"  # one worker: as before
    three = line(sample(0.0, 0, (b, c)), sample(2.0, 600, (b, c)), 200)
    assert three == "● 300 events/s · 0 firing · lag 0 · worker ok · 3 workers"
    partial = sample(4.0, 900, (b,), (c,))
    text = line(sample(2.0, 600, (b,), (c,)), partial, 200, PLAIN)
    assert (
        text
        == "150 events/s | 0 firing | lag 0 | worker ok | 2 of 3 workers answering (partial: http://c:6066)"
    )
    assert status.tone(partial) == "warn"
    # No rate across a change of who answered: the sums are not of the same workers.
    assert status.rate(sample(2.0, 600, (b, c)), partial) is None
    # A worker going missing, or coming back, is news for a plain line.
    before, after = (
        gist(sample(0.0, 0, (b, c)), sample(2.0, 600, (b, c))),
        gist(sample(2.0, 600, (b,), (c,)), partial),
    )
    assert before is not None and after is not None and status.differs(before, after)


class Other(FakeWorker):
    """Another worker of the cluster: only its /metrics is read."""

    bodies = {"/metrics": (200, METRICS.replace("5640.0", "1000.0").encode())}


@pytest.fixture
def two_workers() -> Iterator[str]:
    """A worker whose /health/detailed lists itself, another live worker and one that is gone."""
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Other)
    other_url = f"http://127.0.0.1:{other.server_address[1]}"
    gone = f"http://127.0.0.1:{free_port()}"
    detailed = {
        "status": "healthy",
        "services": [{"service": "state", "status": "healthy"}],
        "cluster": {
            "workers": [
                {"url": "http://self", "partitions": [0], "self": True},
                {"url": other_url, "partitions": [1], "self": False},
                {"url": gone, "partitions": [2], "self": False},
            ]
        },
    }

    class Main(FakeWorker):
        bodies = {**FakeWorker.bodies, "/health/detailed": (200, orjson.dumps(detailed))}

    main = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Main)
    servers = (main, other)
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    yield f"http://127.0.0.1:{main.server_address[1]}"
    for server in servers:
        server.shutdown()
        server.server_close()


def test_one_poll_sums_the_cluster_s_counters_and_names_who_did_not_answer(two_workers: str) -> None:
    polled = poll_worker(two_workers, clock=lambda: 5.0)
    assert polled.events == 6166.0 + 1526.0  # its own and the other worker's pulse_events_total
    assert polled.lag == 5 + 5
    assert len(polled.others) == 1 and len(polled.missing) == 1
    text = line(None, polled, 300, FANCY)
    assert text.endswith(f"· 2 of 3 workers answering (partial: {polled.missing[0]})"), text
