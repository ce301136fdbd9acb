"""The `pulse` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import click
import orjson

from pipeline.config import Config, load_config
from pipeline.errors import PulseError

EXIT_SHUTDOWN_TIMEOUT = 75


def _config() -> Config:
    try:
        return load_config()
    except PulseError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """o4o-pulse: events from Kafka to windowed metrics, alerts and notifications."""


SHUTDOWN_GRACE = 15.0
"""Seconds a worker may take to stop after SIGTERM/SIGINT before it exits anyway."""


@main.command()
def worker() -> None:
    """Run one worker against PULSE_BROKER_URL (run several to scale out)."""
    config = _config()
    from faust.worker import Worker

    class GuardedWorker(Worker):
        """A Faust worker whose shutdown cannot hang (aiokafka retries a dead broker forever)."""

        def _schedule_shutdown(self, signal: Any) -> None:
            timer = threading.Timer(SHUTDOWN_GRACE, os._exit, (EXIT_SHUTDOWN_TIMEOUT,))
            timer.daemon = True
            timer.start()
            super()._schedule_shutdown(signal)

    from pipeline.app import Pulse
    from pipeline.topics import ensure_topics

    logging.basicConfig(level=config.worker.log_level.upper())
    try:
        pulse = Pulse(config)
        asyncio.run(ensure_topics(config, pulse.all_topic_names()))
    except PulseError as exc:
        raise click.ClickException(str(exc)) from None
    level = {"warning": "warn", "critical": "crit"}.get(config.worker.log_level, config.worker.log_level)
    sys.argv = [sys.argv[0], "worker"]
    GuardedWorker(pulse.app, loglevel=level, quiet=True, redirect_stdouts=False).execute_from_commandline()


@main.command()
@click.option("--port", type=int, default=None, help="TCP port on 127.0.0.1 (default: free port)")
def broker(port: int | None) -> None:
    """Run the embedded Kafka broker (Tansu, in memory) on loopback until Ctrl-C."""
    from pipeline.broker import EmbeddedBroker

    embedded = EmbeddedBroker(port)
    try:
        embedded.start(stdout=None)
    except PulseError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"embedded broker ready: PULSE_BROKER_URL={embedded.url}", err=True)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    exit_code: int | None = None
    try:
        assert embedded.proc is not None
        while not stopping and embedded.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                embedded.proc.wait(0.5)
        if not stopping:
            exit_code = embedded.proc.poll()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()
    if exit_code is not None:
        raise click.ClickException(f"the embedded broker exited with code {exit_code}")


@main.command()
@click.option("--demo", is_flag=True, help="also run the traffic simulator")
def up(demo: bool) -> None:
    """Start the embedded broker, a worker and its web server on http://127.0.0.1:6066."""
    from pipeline.procs import port_is_free
    from pipeline.supervisor import up as run_up

    config = _config()
    if not port_is_free(config.web.host, config.web.port):
        raise click.ClickException(
            f"port {config.web.port} on {config.web.host} is in use; stop what uses it or set "
            "PULSE_WEB_PORT to another port"
        )
    try:
        code = run_up(demo, config.web.port, echo=click.echo)
    except PulseError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
@click.option(
    "--scenario",
    default="steady",
    show_default=True,
    type=click.Choice(["steady", "error-spike", "latency-spike", "payment-outage", "stock-out"]),
)
@click.option("--rate", type=float, default=200.0, show_default=True, help="events per second")
@click.option("--duration", type=float, default=60.0, show_default=True, help="seconds; 0 runs until Ctrl-C")
@click.option("--seed", type=int, default=None, help="random seed for repeatable traffic")
@click.option("--quiet", is_flag=True, help="no progress bar")
def simulate(scenario: str, rate: float, duration: float, seed: int | None, quiet: bool) -> None:
    """Publish realistic synthetic O4O traffic to PULSE_BROKER_URL."""
    from pipeline.simulate import run

    config = _config()
    bootstrap = ",".join(config.broker.bootstrap_servers())
    try:
        sent = asyncio.run(run(bootstrap, config.topics.prefix, scenario, rate, duration, not quiet, seed))
    except KeyboardInterrupt:
        return
    click.echo(f"sent {sent} events ({scenario})", err=True)


@main.command()
@click.option("--events", type=int, default=200_000, show_default=True)
@click.option("--envelope", type=int, default=100, show_default=True, help="events per envelope")
@click.option("--repeat", type=int, default=3, show_default=True, help="runs; medians reported")
@click.option("--partitions", type=int, default=4, show_default=True)
def bench(events: int, envelope: int, repeat: int, partitions: int) -> None:
    """Measure throughput against the raw-consumer ceiling and the bare-Faust floor."""
    from pipeline.bench import BenchSettings, run, table

    if events < 1000 or envelope < 1 or repeat < 1:
        raise click.BadParameter("need --events >= 1000, --envelope >= 1, --repeat >= 1")
    result = run(
        BenchSettings(events, envelope, repeat, partitions),
        echo=lambda s: click.echo(s, err=True),
    )
    click.echo(table(result))
    click.echo(orjson.dumps(result).decode())


@main.group()
def rules() -> None:
    """Validate rules files and run rule unit tests."""


@rules.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def rules_check(files: tuple[str, ...]) -> None:
    """Report every mistake in rules FILES, with its line number and a hint."""
    from pipeline.rules import check_rules

    windows = _config().windows.windows
    failed = False
    for name in files:
        try:
            text = open(name, encoding="utf-8").read()  # noqa: SIM115 - read whole file at once
        except OSError as exc:
            click.echo(f"{name}: cannot read: {exc.strerror}", err=True)
            failed = True
            continue
        problems = check_rules(text, name, windows)
        for problem in problems:
            click.echo(str(problem), err=True)
        if problems:
            failed = True
            click.echo(f"{name}: {len(problems)} problem(s)", err=True)
        else:
            click.echo(f"{name}: OK")
    if failed:
        sys.exit(1)


@rules.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def rules_test(files: tuple[str, ...]) -> None:
    """Run rule unit tests (input series over time, expected alerts), like `promtool test rules`."""
    from pipeline.rules import run_rule_tests

    windows = _config().windows.windows
    failed = False
    for name in files:
        try:
            report = run_rule_tests(name, windows)
        except PulseError as exc:
            click.echo(str(exc), err=True)
            failed = True
            continue
        click.echo(f"{name}:")
        for line in report.lines:
            click.echo(line)
        failed = failed or not report.ok
    if failed:
        sys.exit(1)


@main.command()
@click.option("--url", default=None, help="a worker's base URL; default: http://127.0.0.1:$PULSE_WEB_PORT")
@click.option("--history", is_flag=True, help="show recent transitions instead of active alerts")
@click.option("--severity", default=None, help="history filter: critical, high, medium or low")
@click.option("--rule", default=None, help="history filter: rule name")
@click.option("--limit", default=50, show_default=True)
def alerts(url: str | None, history: bool, severity: str | None, rule: str | None, limit: int) -> None:
    """Show the active alerts (or their history) of the running pipeline."""
    import urllib.error
    import urllib.parse
    import urllib.request

    base = url or f"http://127.0.0.1:{_config().web.port}"
    path = "/api/v1/alerts/history" if history else "/api/v1/alerts"
    params = {k: v for k, v in {"severity": severity, "rule": rule, "limit": limit}.items() if v}
    query = "?" + urllib.parse.urlencode(params) if history else ""
    try:
        with urllib.request.urlopen(base + path + query, timeout=10) as reply:  # noqa: S310 - operator's URL
            body = orjson.loads(reply.read())
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot query {base}{path}: {exc}") from None
    found = body["data"]["alerts"]
    if not found:
        click.echo("no alerts" if not history else "no transitions")
    for alert in found:
        labels = ",".join(f"{k}={v}" for k, v in sorted(alert.get("labels", {}).items()))
        click.echo(
            f"{alert.get('timestamp')}  {alert.get('state', ''):8} {alert.get('severity', ''):8} "
            f"{alert.get('rule')}  value={alert.get('currentValue')} threshold={alert.get('threshold')}  "
            f"{{{labels}}}  {alert.get('title', '')}"
        )


if __name__ == "__main__":
    main()
