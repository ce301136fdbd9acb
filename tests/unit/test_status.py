"""The live status line of `pulse up --status`: its text from two polls, its width, its cadence on a
terminal and in plain output, and the supervisor's parts around it (the console that keeps it below
everything else, the poller that stops at once, one poll of a worker's endpoints)."""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator
from dataclasses import replace

import orjson
import pytest

from pipeline.tools import status
from pipeline.tools.procs import free_port
from pipeline.tools.status import FANCY, PLAIN, Cadence, Sample, columns, gist, line
from pipeline.tools.supervisor import Console, StatusPoller, poll_worker, status_wanted

METRICS = """\
# HELP pulse_events_total Valid events consumed, by topic
# TYPE pulse_events_total counter
pulse_events_total{topic="o4o.events.orders"} 526.0
pulse_events_total{topic="o4o.events.requests"} 5640.0
pulse_events_created{topic="o4o.events.orders"} 1.7e9
pulse_events_deadlettered_total{topic="o4o.events.orders",reason="schema"} 7.0
pulse_consumer_lag{topic="o4o.events.orders"} 3.0
pulse_consumer_lag{topic="o4o.pulse-partials"} 2.0
o4o_http_requests_total{service="api"} 99.0
"""


def ok(at: float, events: float, firing: tuple[str, ...] = (), lag: int = 0) -> Sample:
    return Sample(at, events=events, lag=lag, firing=firing, health="healthy")


def test_figures_come_from_the_metrics_alerts_and_health_bodies() -> None:
    assert status.events_total(METRICS) == 6166.0  # not the _created or the dead-lettered counter
    assert status.consumer_lag(METRICS) == 5
    assert status.events_total("# TYPE pulse_events_total counter\n") == 0.0  # no event yet
    assert status.consumer_lag("") is None
    alerts = {
        "data": {
            "alerts": [
                {"rule": "payment_system_down", "state": "firing"},
                {"rule": "high_error_rate", "state": "pending"},
                {"rule": "low_stock_critical", "state": "firing"},
            ]
        }
    }
    assert status.firing_rules(alerts) == ("payment_system_down", "low_stock_critical")
    assert status.firing_rules({"status": "error"}) == ()
    body = {
        "status": "unhealthy",
        "services": [
            {"service": "state", "status": "unhealthy"},
            {"service": "kafka", "status": "healthy"},
            {"service": "channel:email", "status": "unhealthy"},
        ],
    }
    assert status.health_of(body) == ("unhealthy", ("state", "channel:email"))


def test_events_per_second_is_the_counter_difference_over_the_clock() -> None:
    assert status.rate(ok(10.0, 1000), ok(12.0, 3468)) == pytest.approx(1234.0)
    assert line(ok(10.0, 1000), ok(12.0, 3468), 200) == "● 1,234 events/s · 0 firing · lag 0 · worker ok"
    assert line(ok(0.0, 0), ok(4.0, 10), 200).startswith("● 2.5 events/s")
    assert line(ok(0.0, 50), ok(2.0, 50), 200).startswith("● 0 events/s")
    # Not measurable: the first poll, no time between the polls, a restarted worker's counter.
    assert line(None, ok(2.0, 50), 200).startswith("● … events/s")
    assert status.rate(ok(2.0, 10), ok(2.0, 20)) is None
    assert status.rate(ok(0.0, 900), ok(2.0, 40)) is None


def test_firing_alerts_lag_and_the_worker_word() -> None:
    cur = ok(2.0, 0, firing=("payment_system_down", "high_error_rate", "payment_system_down"), lag=12345)
    text = line(ok(0.0, 0), cur, 200)
    assert text == "● 0 events/s · 3 firing (payment_system_down, high_error_rate) · lag 12,345 · worker ok"
    not_ready = Sample(2.0, events=0, lag=0, health="unhealthy", problems=("state", "kafka", "rules"))
    assert line(None, not_ready, 200).endswith("· worker not ready")
    degraded = Sample(2.0, events=0, lag=0, health="degraded", problems=("channel:email",))
    assert line(None, degraded, 200).endswith("· worker degraded (channel:email)")
    broken = Sample(2.0, events=0, lag=0, health="unhealthy", problems=("kafka",))
    assert line(None, broken, 200).endswith("· worker unhealthy (kafka)")
    assert [status.tone(s) for s in (ok(0, 0), cur, not_ready, degraded, broken)] == [
        "ok",
        "warn",
        "warn",
        "warn",
        "bad",
    ]


def test_a_worker_that_does_not_answer_gets_no_stale_numbers() -> None:
    gone = Sample(4.0, error="connection refused")
    assert line(ok(2.0, 5000, firing=("payment_system_down",)), gone, 200) == (
        "● worker not answering (connection refused)"
    )
    assert status.tone(gone) == "bad"
    assert status.rate(gone, ok(6.0, 6000)) is None  # the poll after it measures again from there


def test_long_rule_names_are_shortened_and_names_give_way_to_the_width() -> None:
    long_name = "checkout_latency_p99_above_two_seconds_for_ten_minutes"
    cur = ok(2.0, 2468, firing=("payment_system_down", "high_error_rate", long_name))
    full = line(ok(0.0, 0), cur, 500)
    assert "checkout_latency_p99_above_two_…" in full and long_name not in full
    assert len("checkout_latency_p99_above_two_…") == status.NAME_CHARS
    one_name = "● 1,234 events/s · 3 firing (payment_system_down, …) · lag 0 · worker ok"
    assert columns(one_name) == 72
    assert line(ok(0.0, 0), cur, 72) == one_name
    assert line(ok(0.0, 0), cur, 71) == "● 1,234 events/s · 3 firing · lag 0 · worker ok"
    assert line(ok(0.0, 0), cur, 46) == "● 1,234 events/s · 3 firing · lag 0 · worker…"
    for width in range(0, 140):
        assert columns(line(ok(0.0, 0), cur, width)) <= width
        assert columns(line(None, Sample(1.0, error="no answer within 1 s"), width)) <= width


def test_wide_characters_count_double_and_ambiguous_ones_as_the_terminal_draws_them() -> None:
    assert columns("abc") == 3
    assert columns("결제") == 4
    assert columns("● · …") == 5
    assert columns("● · …", ambiguous=2) == 8  # a CJK locale's terminal may draw ●, · and … double
    cjk = replace(FANCY, ambiguous=2)
    cur = ok(2.0, 400, firing=("결제_시스템_장애", "payment_system_down"))
    for width in range(0, 90):
        assert columns(line(ok(0.0, 0), cur, width), 1) <= width
        assert columns(line(ok(0.0, 0), cur, width, cjk), 2) <= width
    assert line(ok(0.0, 0), cur, 67) == "● 200 events/s · 2 firing (결제_시스템_장애, …) · lag 0 · worker ok"
    assert line(ok(0.0, 0), cur, 67, cjk) == "● 200 events/s · 2 firing · lag 0 · worker ok"


def test_plain_lines_are_ascii_without_a_bullet() -> None:
    text = line(ok(0.0, 0), ok(2.0, 400, firing=("a", "b")), 26, PLAIN)
    assert text == "200 events/s | 2 firing..."
    assert text.isascii()
    assert line(ok(0.0, 0), ok(2.0, 400), 200, PLAIN) == "200 events/s | 0 firing | lag 0 | worker ok"
    assert line(None, Sample(0.0, error="HTTP 500"), 200, PLAIN) == "worker not answering (HTTP 500)"


def test_on_a_terminal_every_poll_redraws_the_line() -> None:
    cadence = Cadence(tty=True)
    assert all(cadence.due(t * 2.0, None) for t in range(10))


def test_plain_output_says_something_new_at_most_every_ten_seconds() -> None:
    cadence = Cadence(tty=False)
    samples = [ok(2.0 * i, 400.0 * i) for i in range(40)]  # a steady 200 events/s
    # Nothing before a rate is measured, nor while the worker is not ready.
    assert not cadence.due(0.0, gist(None, samples[0]))
    joining = Sample(2.0, events=0, lag=0, health="unhealthy", problems=("state",))
    assert gist(samples[0], joining) is None
    assert gist(joining, samples[2]) is None  # the poll before was not ready: not a rate to show yet
    printed = [i for i in range(1, 40) if cadence.due(samples[i].at, gist(samples[i - 1], samples[i]))]
    assert printed == [1, 31]  # then a steady pipeline is heard of once a minute

    cadence = Cadence(tty=False)
    assert cadence.due(0.0, gist(ok(-2.0, 0), ok(0.0, 400)))
    jitter = gist(ok(2.0, 400), ok(4.0, 920))  # 260 events/s: not news
    assert not cadence.due(12.0, jitter)
    firing = gist(ok(4.0, 920), ok(6.0, 1320, firing=("payment_system_down",)))
    assert not cadence.due(6.0, firing)  # news, but only 6 s after the last line
    assert cadence.due(10.0, firing)
    stopped = gist(ok(10.0, 5000), ok(12.0, 5000, firing=("payment_system_down",)))  # 0 events/s
    assert cadence.due(20.0, stopped)
    gone = gist(None, Sample(30.0, error="connection refused"))
    assert gone is not None and cadence.due(30.0, gone)
    assert not cadence.due(40.0, gone)


def test_lag_is_news_when_it_grows_past_a_thousand_or_tenfold() -> None:
    def said(lag: int) -> status.Gist:
        found = gist(ok(0.0, 0), ok(2.0, 400, lag=lag))
        assert found is not None
        return found

    assert not status.differs(said(0), said(999))
    assert status.differs(said(999), said(1000))
    assert not status.differs(said(2000), said(19_000))
    assert status.differs(said(2000), said(20_000))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_console_clears_the_line_before_any_other_line_and_draws_it_again_after() -> None:
    err = FakeTerminal()
    said: list[str] = []
    console = Console(lambda text: said.append(err.getvalue() + "|" + text), live=True, err=err)
    console.show("● 1 events/s")
    assert err.getvalue() == "\r● 1 events/s\x1b[K"
    console.say("worker   http://127.0.0.1:6066/")
    assert said == ["\r● 1 events/s\x1b[K\r\x1b[K|worker   http://127.0.0.1:6066/"]
    assert err.getvalue().endswith("\r\x1b[K\r● 1 events/s\x1b[K")

    out = io.BytesIO()
    mark = len(err.getvalue())
    console.relay(b"[INFO] assigned partitions", out)  # half a line: no line drawn after it
    assert err.getvalue()[mark:] == "\r\x1b[K"
    console.show("● 2 events/s")
    assert err.getvalue()[mark:] == "\r\x1b[K"
    console.relay(b" [0, 1]\n", out)
    assert out.getvalue() == b"[INFO] assigned partitions [0, 1]\n"
    assert err.getvalue()[mark:] == "\r\x1b[K\r● 2 events/s\x1b[K"

    console.close()
    console.show("● 3 events/s")  # a poll that ends after the stop
    assert err.getvalue().endswith("● 2 events/s\x1b[K\r\x1b[K")


def test_a_plain_console_prints_whole_lines() -> None:
    err = io.StringIO()
    said: list[str] = []
    console = Console(said.append, live=False, err=err)
    console.say("Ctrl-C stops everything.")
    console.show("status   200 events/s | 0 firing | lag 0 | worker ok")
    assert said == ["Ctrl-C stops everything."]
    assert err.getvalue() == "status   200 events/s | 0 firing | lag 0 | worker ok\n"


def test_the_poller_stops_at_once_even_during_a_poll_that_hangs() -> None:
    err = FakeTerminal()
    console = Console(lambda text: None, live=True, err=err)
    polls = iter([ok(0.0, 0), ok(2.0, 400)])
    hanging = threading.Event()
    release = threading.Event()

    def poll(url: str) -> Sample:
        sample = next(polls, None)
        if sample is None:
            hanging.set()
            release.wait(5)
            return Sample(4.0, error="no answer within 1 s")
        return sample

    poller = StatusPoller("http://127.0.0.1:1", console, every=0.01, poll=poll)
    poller.start()
    assert hanging.wait(5)
    assert "200 events/s" in err.getvalue()
    poller.stop()  # returns at once, and clears the line
    assert err.getvalue().endswith("\r\x1b[K")
    release.set()
    poller.thread.join(5)
    assert not poller.thread.is_alive()
    assert err.getvalue().endswith("\r\x1b[K")  # no "not answering" after the stop


class FakeWorker(http.server.BaseHTTPRequestHandler):
    bodies = {
        "/metrics": (200, METRICS.encode()),
        "/api/v1/alerts": (200, orjson.dumps({"data": {"alerts": [{"rule": "r", "state": "firing"}]}})),
        "/health/detailed": (
            503,
            orjson.dumps({"status": "unhealthy", "services": [{"service": "state", "status": "unhealthy"}]}),
        ),
    }

    def do_GET(self) -> None:
        code, body = self.bodies[self.path]
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_worker() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeWorker)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_one_poll_reads_the_workers_endpoints_with_the_given_clock(fake_worker: str) -> None:
    sample = poll_worker(fake_worker, clock=lambda: 42.0)
    assert sample == Sample(
        42.0, events=6166.0, lag=5, firing=("r",), health="unhealthy", problems=("state",)
    )
    assert line(None, sample, 200, FANCY).endswith("1 firing (r) · lag 5 · worker not ready")


def test_a_poll_of_nothing_says_why() -> None:
    sample = poll_worker(f"http://127.0.0.1:{free_port()}", clock=lambda: 7.0)
    assert sample == Sample(7.0, error="connection refused")


def test_the_default_and_the_glyphs_follow_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout", FakeTerminal())
    monkeypatch.setattr("sys.stderr", FakeTerminal())
    assert status_wanted(None) == (True, True)
    assert status_wanted(False) == (False, True)
    monkeypatch.setattr("sys.stdout", io.StringIO())  # `pulse up | tee log`: off unless asked
    assert status_wanted(None) == (False, True)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert status_wanted(True) == (True, False)  # forced without a terminal: plain lines

    monkeypatch.delenv("LC_ALL", raising=False)
    monkeypatch.delenv("LC_CTYPE", raising=False)
    monkeypatch.setenv("LANG", "en_US.UTF-8")
    utf8 = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    assert StatusPoller("", Console(print, live=True, err=utf8)).glyphs == FANCY
    monkeypatch.setenv("LANG", "ko_KR.UTF-8")
    assert StatusPoller("", Console(print, live=True, err=utf8)).glyphs.ambiguous == 2
    latin = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    assert StatusPoller("", Console(print, live=True, err=latin)).glyphs.bullet == "*"
    assert StatusPoller("", Console(print, live=False, err=utf8)).glyphs == PLAIN
