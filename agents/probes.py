"""Active probes: HTTP and TCP health checks whose results are published as heartbeat events.

Like the monitoring guide's health checks (database, redis, payment, storage, external APIs) and like
uptime monitors: each probe runs every `interval`, fails after `timeout`, and publishes one heartbeat
`{service: <probe name>, status, response_time_ms, probe, error}` to `events.heartbeats`. From there it
is ingested like any service's heartbeat, so heartbeat rules (unhealthy, absent) cover probes too.

With several workers each probe runs on exactly one: the worker that owns the probe's health series.
A probe that nobody can run (during a rebalance) simply skips a beat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from agents.kafka.transport import connect
from pipeline.config.settings import Config, ProbeConfig
from pipeline.state.series import owner, series_key
from schemas.events import TOPIC_OF_TYPE

if TYPE_CHECKING:
    from faust import App

    from agents.kafka.positions import Lifecycle
    from agents.telemetry import PipelineMetrics

log = logging.getLogger(__name__)

STEP_S = 0.25


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe run."""

    healthy: bool
    response_time_ms: float
    error: str | None = None


async def probe_http(probe: ProbeConfig, session: aiohttp.ClientSession) -> ProbeResult:
    """Request the probe's URL; healthy when the status is expected and it answered in time."""
    assert probe.url is not None
    started = time.perf_counter()
    try:
        timeout = aiohttp.ClientTimeout(total=probe.timeout)
        async with session.request(probe.method, probe.url, timeout=timeout, allow_redirects=False) as resp:
            await resp.read()
            status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, _elapsed_ms(started), _describe(exc, probe.timeout))
    elapsed = _elapsed_ms(started)
    if status not in probe.expect_status:
        expected = ", ".join(str(s) for s in probe.expect_status)
        return ProbeResult(False, elapsed, f"status {status}, expected {expected}")
    return _judge_speed(probe, elapsed)


async def probe_tcp(probe: ProbeConfig) -> ProbeResult:
    """Open a TCP connection to host:port; healthy when it connects in time."""
    assert probe.host is not None and probe.port is not None
    started = time.perf_counter()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(probe.host, probe.port), probe.timeout)
    except (TimeoutError, OSError) as exc:
        return ProbeResult(False, _elapsed_ms(started), _describe(exc, probe.timeout))
    elapsed = _elapsed_ms(started)
    writer.close()
    with contextlib.suppress(OSError):  # the check is whether it connected; a reset on close is fine
        await writer.wait_closed()
    return _judge_speed(probe, elapsed)


def _judge_speed(probe: ProbeConfig, elapsed: float) -> ProbeResult:
    if probe.slow_ms is not None and elapsed > probe.slow_ms:
        return ProbeResult(False, elapsed, f"answered in {elapsed:.0f} ms, slower than {probe.slow_ms:g} ms")
    return ProbeResult(True, elapsed)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {timeout:g}s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def heartbeat(probe: ProbeConfig, result: ProbeResult, now_ms: int) -> dict[str, Any]:
    """The heartbeat event that reports one probe result."""
    event: dict[str, Any] = {
        "type": "heartbeat",
        "ts": now_ms,
        "service": probe.name,
        "status": "healthy" if result.healthy else "unhealthy",
        "response_time_ms": result.response_time_ms,
        "probe": probe.type,
    }
    if result.error:
        event["error"] = result.error
    return event


class Prober:
    """Runs the configured probes this worker is responsible for."""

    def __init__(self, app: App, config: Config, ownership: Lifecycle, metrics: PipelineMetrics) -> None:
        self.app = app
        self.ownership = ownership
        self.metrics = metrics
        self.partitions = config.topics.partitions
        self.probes = config.probes
        self.topic = config.topic(TOPIC_OF_TYPE["heartbeat"])
        self.next_due: dict[str, float] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.session: aiohttp.ClientSession | None = None

    def mine(self, probe: ProbeConfig) -> bool:
        """Whether this worker owns the probe's health series right now."""
        partition = owner(series_key("health", probe.name), self.partitions)
        return partition in self.ownership.active_partitions()

    async def step(self) -> None:
        """Start every probe that is due and owned here."""
        if not self.ownership.is_ready():
            return
        now = time.monotonic()
        for probe in self.probes:
            if self.next_due.get(probe.name, 0.0) > now or probe.name in self.running:
                continue
            if not self.mine(probe):
                continue
            self.next_due[probe.name] = now + probe.interval
            task = asyncio.ensure_future(self.run(probe))
            self.running[probe.name] = task
            task.add_done_callback(self._finished(probe.name))

    def _finished(self, name: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self.running.pop(name, None)
            if not task.cancelled() and task.exception() is not None:
                log.warning("probe %s failed: %r", name, task.exception())

        return done

    async def run(self, probe: ProbeConfig) -> None:
        """Run one probe and publish its heartbeat."""
        if probe.type == "http":
            if self.session is None:
                self.session = aiohttp.ClientSession()
            result = await probe_http(probe, self.session)
        else:
            result = await probe_tcp(probe)
        self.metrics.probes.labels(probe.name, "up" if result.healthy else "down").inc()
        event = heartbeat(probe, result, int(time.time() * 1000))
        try:
            sent = await self.app.producer.send(self.topic, None, orjson.dumps(event), None, None, None)
            await sent
        except Exception as exc:  # the next beat tries again; a missing beat is what absence rules catch
            log.warning("probe %s: could not publish its heartbeat: %r", probe.name, exc)

    async def close(self) -> None:
        """Stop running probes and close the HTTP session."""
        for task in list(self.running.values()):
            task.cancel()
        if self.session is not None:
            await self.session.close()
            self.session = None


def register(app: App, config: Config, ownership: Lifecycle, metrics: PipelineMetrics) -> Prober:
    """Register the probe loop on the worker's app."""
    prober = Prober(app, config, ownership, metrics)
    if not prober.probes:
        return prober

    @app.timer(STEP_S, name="probes")
    async def probes() -> None:
        await prober.step()

    async def close(app: Any, *args: Any, **kwargs: Any) -> None:
        await prober.close()

    connect(app.on_before_shutdown, close)

    return prober
