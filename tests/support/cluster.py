"""Workers as real `pulse worker` processes, and the deployment they form on the test broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import orjson

from pipeline.tools.procs import free_port
from schemas.events import TOPIC_OF_TYPE
from tests.support import quiet
from tests.support.kafka import TP, end_offsets, publish, read_to_end
from tests.support.metrics import Samples, parse_metrics, summed
from tests.support.procs import REPO, Process, pulse_argv

TEST_TIMINGS = {"PULSE_SESSION_TIMEOUT": "4s"}
"""Group timings of the test workers (each test's extra_env may override them).

The embedded Tansu holds every JoinGroup, the first of a new member and each rejoin of a rebalance,
for half the session timeout rounded up to a second: 3 s with the embedded default of 6 s, 2 s with
4 s. A killed worker leaves its group one session timeout later. The heartbeat interval (1 s) is the
embedded default, so a worker may miss three heartbeats before the group drops it, and the reader's
settle time after an assignment (1.5 heartbeat intervals) is the product's.
"""

DETAILED_FIELDS = (("kafka", "positions"), ("kafka", "consumerLag"), ("kafka", "partitions"), ("state",))
"""What the proofs of quiescence read in GET /health/detailed."""


def unique(name: str) -> str:
    """Return a name no other test uses (topic prefixes, app ids)."""
    return f"{name}{uuid.uuid4().hex[:8]}"


@dataclass
class Worker(Process):
    """A `pulse worker` child process, on a free web port picked at every start."""

    def start(self) -> Self:
        self.port = free_port()
        assert self.env is not None
        self.env["PULSE_WEB_PORT"] = str(self.port)
        return super().start()

    def wait_healthy(self, timeout: float = 60, owning: bool = True) -> None:
        super().wait_healthy(timeout, owning)

    def get(self, path: str, **params: str) -> Any:
        """GET a JSON document of its web API."""
        return httpx.get(f"{self.url}{path}", params=params, timeout=30).json()

    def metrics(self) -> Samples:
        return parse_metrics(httpx.get(f"{self.url}/metrics", timeout=30).text)

    def detailed(self) -> dict[str, Any]:
        """GET /health/detailed, with the fields the proofs of quiescence read."""
        data: dict[str, Any] = self.get("/health/detailed")
        for path in DETAILED_FIELDS:
            node: Any = data
            for part in path:
                if not isinstance(node, dict) or part not in node:
                    raise AssertionError(f"GET /health/detailed of {self.name} has no {'.'.join(path)}")
                node = node[part]
        return data

    def series(self, at_ms: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = self.get("/api/v1/series", **({"at": str(at_ms)} if at_ms is not None else {}))
        return data


@dataclass
class Cluster:
    """Workers of one deployment (one prefix and app id) on the test broker."""

    broker_url: str
    tmp: Path
    prefix: str = field(default_factory=lambda: unique("t") + ".")
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker_url.removeprefix("kafka://")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PULSE_BROKER_URL": self.broker_url,
                "PULSE_EMBEDDED_BROKER": "1",
                "PULSE_TOPIC_PREFIX": self.prefix,
                "PULSE_PARTITIONS": str(self.partitions),
                **TEST_TIMINGS,
                "PULSE_DATA_DIR": str(self.tmp / "data"),
                "PULSE_LOG_LEVEL": "info",
                "PULSE_LOG_VERBOSE": "1",  # Faust's recovery lines too: the logs tests keep and read
                "PYTHONPATH": str(REPO),
            }
        )
        env.update(self.extra_env)
        return env

    def use_rules(self, text: str) -> None:
        """Workers started from now on evaluate the rules file `text` (PULSE_RULES)."""
        self.extra_env["PULSE_RULES"] = self._write("rules.yaml", text)

    def use_config(self, text: str) -> None:
        """Workers started from now on read the config file `text` (PULSE_CONFIG)."""
        self.extra_env["PULSE_CONFIG"] = self._write("pulse.yaml", text)

    def _write(self, name: str, text: str) -> str:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return str(path)

    def add_worker(self, wait: bool = True) -> Worker:
        """Start worker N (its log: worker{N}.log); with `wait`, once it is healthy and owns partitions."""
        index = len(self.workers)
        worker = Worker(pulse_argv("worker"), self.tmp / f"worker{index}.log", env=self.env()).start()
        self.workers.append(worker)
        if wait:
            worker.wait_healthy()
        return worker

    def add_workers(self, count: int) -> list[Worker]:
        """Start `count` workers at once and return them once each is healthy and owns partitions.

        Started together, they join the group together (one rebalance instead of one per worker).
        """
        started = [self.add_worker(wait=False) for _ in range(count)]
        for worker in started:
            worker.wait_healthy()
        for worker in started[:-1]:  # (still so after the last one's assignment)
            worker.wait_healthy()
        return started

    def live(self) -> dict[str, Worker]:
        """The workers still running, by name."""
        return {w.name: w for w in self.workers if w.alive()}

    def stop(self, timeout: float = 20) -> None:
        """Stop every worker: SIGTERM to all at once, then SIGKILL to those still running `timeout` s
        later (stopped one after the other, each stop would also wait out the rebalance it causes)."""
        for worker in self.workers:
            worker.terminate()
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if worker.proc is None:
                continue
            try:
                worker.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL every worker still running, and reap it: for the end of a test, where nothing is left
        to check and a graceful stop (a second or more for each worker) would only add to the run."""
        for worker in self.workers:
            if worker.alive():
                worker.signal(signal.SIGKILL)
        for worker in self.workers:
            if worker.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    worker.proc.wait(10)

    # --- topics --------------------------------------------------------------------------------------

    def topic(self, event_type: str) -> str:
        return self.prefix + TOPIC_OF_TYPE[event_type]

    def internal_topic(self, name: str) -> str:
        app_id = self.extra_env.get("PULSE_APP_ID", self.prefix + "pulse")
        return f"{app_id}-{name}"

    @property
    def alerts_topic(self) -> str:
        return self.prefix + "alerts"

    def publish(self, messages: Iterable[tuple[str, bytes]], key: bytes | None = None) -> int:
        """Publish (topic, value) pairs; return how many."""
        return publish(self.bootstrap, list(messages), key)

    def publish_events(self, events: Sequence[tuple[str, dict[str, Any]]], envelope: int = 1) -> int:
        """Publish (type, event) pairs, one per message or in envelopes."""
        out: list[tuple[str, bytes]] = []
        if envelope == 1:
            out = [(self.topic(kind), orjson.dumps(event)) for kind, event in events]
        else:
            by_kind: dict[str, list[dict[str, Any]]] = {}
            for kind, event in events:
                by_kind.setdefault(kind, []).append(event)
            for kind, items in by_kind.items():
                for i in range(0, len(items), envelope):
                    out.append((self.topic(kind), orjson.dumps(items[i : i + envelope])))
        return self.publish(out)

    def read(self, topic: str) -> list[Any]:
        """Every record of `topic`, read up to the end offsets it has now."""
        _, records = read_to_end(self.bootstrap, [topic])
        return records

    def summed_metrics(self) -> Samples:
        """Every sample summed over all running workers' /metrics."""
        return summed(w.metrics() for w in self.live().values())

    # --- proofs that nothing more arrives (tests.support.quiet) --------------------------------------

    def wait_quiet(self, input_ends: dict[TP, int] | None = None, timeout: float = 90) -> dict[str, Any]:
        """Return once the live workers provably hold every figure that will ever arrive.

        Call it once publishing is done (`input_ends`: the input topics' end offsets, read now when not
        given) and no other worker is stopping.
        """
        if input_ends is None:
            input_ends = end_offsets(self.bootstrap, [self.topic(kind) for kind in TOPIC_OF_TYPE])
        partials = self.internal_topic("partials")
        return quiet.wait_read(self.live(), self.bootstrap, input_ends, partials, self.partitions, timeout)

    def wait_evaluated(self, timeout: float = 30) -> None:
        """Return once every live worker evaluated the rules of every partition it owns twice since now.

        After `wait_quiet`, the first of those evaluations saw every figure; its transitions were sent
        to the alerts topic before the second began, an interval later.
        """
        quiet.wait_evaluated(self.live(), time.time(), timeout)

    def wait_notified(
        self,
        rule: str,
        state: str,
        channels: Iterable[str],
        received: Callable[[], Mapping[str, int]] | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Return once every incident of `rule` has reached `state` and each channel delivered it, and the
        delivery ledger shows that nothing more about it is due (see `quiet.wait_notified`)."""
        return quiet.wait_notified(
            self.live(),
            self.bootstrap,
            self.alerts_topic,
            self.internal_topic("nflog-changelog"),
            quiet.Expected(rule, state, tuple(channels), received),
            timeout,
        )
