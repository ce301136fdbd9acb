"""The `pulse` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import click
import orjson

from pipeline import __version__
from pipeline.config.settings import Config, load_config, secret_text
from pipeline.errors import PulseError

EXIT_SHUTDOWN_TIMEOUT = 75


async def _until_signalled(work: Coroutine[Any, Any, int]) -> int | None:
    """Run `work`; the first SIGINT or SIGTERM cancels it (its clean-up, such as an emitter's last flush,
    still runs), later ones are ignored. Return its result, or None when it was stopped.

    A terminal's Ctrl-C and `pulse up`'s SIGTERM arrive together. Raising KeyboardInterrupt from a
    signal handler instead would make `asyncio.run` cancel every task at once, aiokafka's sender
    among them, and the last flush would then wait forever."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)

    def stop() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: None)
        task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    try:
        return await task
    except asyncio.CancelledError:
        return None


class Unreachable(click.ClickException):
    """A client command could not reach Kafka or a worker: one line says what, from where, what to do."""

    exit_code = 2


def _config() -> Config:
    try:
        return load_config()
    except PulseError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="pulse")
def main() -> None:
    """o4o-pulse: events from Kafka to windowed metrics, alerts and notifications."""


SHUTDOWN_GRACE = 15.0
"""Seconds a worker may take to stop after SIGTERM/SIGINT before it exits anyway."""


@main.command()
@click.option("-v", "--verbose", is_flag=True, help="also show Faust's and aiokafka's INFO records")
def worker(verbose: bool) -> None:
    """Run one worker against PULSE_BROKER_URL (run several to scale out)."""
    if verbose:
        os.environ["PULSE_LOG_VERBOSE"] = "1"
    config = _config()
    from faust.worker import Worker

    class GuardedWorker(Worker):
        """A Faust worker whose shutdown cannot hang (aiokafka retries a dead broker forever)."""

        def _schedule_shutdown(self, signal: Any) -> None:
            timer = threading.Timer(SHUTDOWN_GRACE, os._exit, (EXIT_SHUTDOWN_TIMEOUT,))
            timer.daemon = True
            timer.start()
            super()._schedule_shutdown(signal)

    from agents.app import Pulse, tune_gc
    from pipeline.tools.logs import logging_config
    from pipeline.tools.topics import ensure_topics

    logging.config.dictConfig(logging_config(config))
    try:
        pulse = Pulse(config)
        # An unreachable broker is waited for (with backoff, one line per attempt): a worker started
        # before its broker, or during an outage, starts when the broker appears.
        asyncio.run(ensure_topics(config, pulse.all_topic_names(), within=None))
    except PulseError as exc:
        raise click.ClickException(str(exc)) from None
    from pipeline.tools.banner import banner

    for line in banner(config, pulse.rules, os.getpid()):
        click.echo(line, err=True)
    level = {"warning": "warn", "critical": "crit"}.get(config.worker.log_level, config.worker.log_level)
    sys.argv = [sys.argv[0], "worker"]

    runner = GuardedWorker(
        pulse.app, loglevel=level, quiet=True, redirect_stdouts=False, logging_config=logging_config(config)
    )
    # Faust's terminal spinner sets the root logger to DEBUG (to spin on every record) whenever the
    # level is WARNING or above: every debug call of aiokafka and Faust would then build a record.
    runner.spinner = None
    tune_gc()
    runner.execute_from_commandline()


@main.command()
@click.option("--port", type=int, default=None, help="TCP port on 127.0.0.1 (default: free port)")
def broker(port: int | None) -> None:
    """Run the embedded Kafka broker (Tansu, in memory) on loopback until Ctrl-C."""
    from pipeline.tools.broker import EmbeddedBroker

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
@click.option("-v", "--verbose", is_flag=True, help="also show Faust's and aiokafka's INFO records")
@click.option(
    "--status/--no-status",
    default=None,
    help="a live status line (events/s, alerts firing, lag); default: on when stdout and stderr are "
    "terminals; elsewhere --status prints a plain `status` line when it changes, at most every 10 s",
)
def up(demo: bool, verbose: bool, status: bool | None) -> None:
    """Start the embedded broker, a worker and its web server on http://127.0.0.1:6066."""
    from pipeline.tools.procs import port_is_free
    from pipeline.tools.supervisor import up as run_up

    if verbose:
        os.environ["PULSE_LOG_VERBOSE"] = "1"  # the worker it starts inherits it
    config = _config()
    if not port_is_free(config.web.host, config.web.port):
        raise click.ClickException(
            f"port {config.web.port} on {config.web.host} is in use; stop what uses it or set "
            "PULSE_WEB_PORT to another port"
        )
    try:
        code = run_up(demo, config, echo=click.echo, status_line=status)
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
    from aiokafka.errors import KafkaError

    from agents.kafka.transport import client_security
    from pipeline.tools import endpoint
    from pipeline.tools.simulate import run

    config = _config()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors: said once, below
    target = endpoint.broker(config)
    broker = config.broker.model_copy(update={"url": target.url})
    click.echo(f"simulate: publishing to {target.url} (from {target.source})", err=True)
    bootstrap = ",".join(broker.bootstrap_servers())
    try:
        security = client_security(broker)
        sent = asyncio.run(  # stopped by Ctrl-C or by `pulse up`'s SIGTERM: exit 0
            _until_signalled(
                run(bootstrap, config.topics.prefix, scenario, rate, duration, not quiet, seed, security)
            )
        )
    except KeyboardInterrupt:
        return
    except (KafkaError, OSError) as exc:
        raise Unreachable(
            f"cannot reach the Kafka broker at {target.url} (from {target.source}): {exc}; start one with "
            "`pulse up` (or `make demo`), or set PULSE_BROKER_URL"
        ) from None
    if sent is None:
        return
    click.echo(f"sent {sent} events ({scenario})", err=True)


@main.command()
@click.option("--events", type=int, default=200_000, show_default=True)
@click.option("--envelope", type=int, default=100, show_default=True, help="events per envelope")
@click.option(
    "--repeat",
    type=int,
    default=3,
    show_default=True,
    help="runs (and alert-latency rounds); medians reported",
)
@click.option("--partitions", type=int, default=4, show_default=True)
@click.option(
    "--scale-events",
    type=int,
    default=600_000,
    show_default=True,
    help="events of the larger set: raw ceilings, envelopes and scale-out",
)
def bench(events: int, envelope: int, repeat: int, partitions: int, scale_events: int) -> None:
    """Measure throughput against the raw-consumer ceiling and the bare-Faust floor, and alert latency."""
    from pipeline.tools.bench.suite import BenchSettings, run, table

    if events < 1000 or scale_events < 1000 or envelope < 1 or repeat < 1:
        raise click.BadParameter(
            "need --events >= 1000, --scale-events >= 1000, --envelope >= 1, --repeat >= 1"
        )
    result = run(
        BenchSettings(events, envelope, repeat, partitions, scale_events),
        echo=lambda s: click.echo(s, err=True),
    )
    click.echo(table(result))
    click.echo(orjson.dumps(result).decode())


@main.command()
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="seconds each check may take",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of the table")
def check(timeout: float, as_json: bool) -> None:
    """Check the config, the rules, the broker and every channel, without sending an alert.

    Exit status 0 when everything works (skipped counts as fine), 1 when something is broken, 2 when
    the config does not load (then nothing else can be checked).
    """
    from pipeline.tools.check import as_json as json_report
    from pipeline.tools.check import exit_status, run, table

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # its connection errors: one row says them
    rows = run(timeout, echo=lambda line: click.echo(line, err=True))
    click.echo(json_report(rows) if as_json else table(rows))
    sys.exit(exit_status(rows))


main.add_command(check, "doctor")


@main.group()
def rules() -> None:
    """Validate rules files and run rule unit tests."""


@rules.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def rules_check(files: tuple[str, ...]) -> None:
    """Report every mistake in rules FILES, with its line number and a hint."""
    _each_file(files, _check_file)


@rules.command("test")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def rules_test(files: tuple[str, ...]) -> None:
    """Run rule unit tests (input series over time, expected alerts), like `promtool test rules`."""
    _each_file(files, _test_file)


def _each_file(files: tuple[str, ...], one: Callable[[str, Sequence[float]], bool]) -> None:
    """Run `one` on every file with the configured windows (True: it passed); exit 1 if any did not."""
    windows = _config().windows.windows
    passed = [one(name, windows) for name in files]
    if not all(passed):
        sys.exit(1)


def _check_file(name: str, windows: Sequence[float]) -> bool:
    from pipeline.rules import check_rules

    try:
        text = open(name, encoding="utf-8").read()  # noqa: SIM115 - read whole file at once
    except OSError as exc:
        click.echo(f"{name}: cannot read: {exc.strerror}", err=True)
        return False
    problems = check_rules(text, name, windows)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{name}: {len(problems)} problem(s)", err=True)
    else:
        click.echo(f"{name}: OK")
    return not problems


def _test_file(name: str, windows: Sequence[float]) -> bool:
    from pipeline.rules import run_rule_tests

    try:
        report = run_rule_tests(name, windows)
    except PulseError as exc:
        click.echo(str(exc), err=True)
        return False
    click.echo(f"{name}:")
    for line in report.lines:
        click.echo(line)
    return report.ok


@rules.command("list")
@click.option("--url", default=None, help="a worker's base URL")
def rules_list(url: str | None) -> None:
    """List the rules the running pipeline evaluates."""
    data = _api("GET", "/api/v1/rules", url=url)["data"]
    click.echo(f"{len(data['rules'])} rules from {data['source']}")
    for rule in data["rules"]:
        click.echo(f"  {rule['name']:28} {rule.get('severity', ''):8} {rule.get('metric') or 'heartbeat'}")


@main.command()
@click.option("--url", default=None, help="a worker's base URL; default: http://127.0.0.1:$PULSE_WEB_PORT")
@click.option("--history", is_flag=True, help="show recent transitions instead of active alerts")
@click.option("--severity", default=None, help="history filter: critical, high, medium or low")
@click.option("--rule", default=None, help="history filter: rule name")
@click.option("--limit", default=50, show_default=True)
def alerts(url: str | None, history: bool, severity: str | None, rule: str | None, limit: int) -> None:
    """Show the active alerts (or their history) of the running pipeline."""
    import urllib.parse

    path = "/api/v1/alerts/history" if history else "/api/v1/alerts"
    params = {k: v for k, v in {"severity": severity, "rule": rule, "limit": limit}.items() if v}
    query = "?" + urllib.parse.urlencode(params) if history else ""
    body = _api("GET", path + query, url=url)
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


def _api(method: str, path: str, body: dict[str, Any] | None = None, url: str | None = None) -> Any:
    """Call a worker's HTTP API (PULSE_WEB_PORT on 127.0.0.1 unless --url); return the JSON reply."""
    import urllib.error
    import urllib.request

    from pipeline.tools import endpoint

    config = _config()
    target = endpoint.web(config, url)
    base = target.url
    if target.source != "--url":
        click.echo(f"using the worker at {base} (from {target.source})", err=True)
    if not base.startswith(("http://", "https://")):
        raise click.BadParameter(f"{base!r}: give an http:// or https:// URL", param_hint="--url")
    headers = {"Content-Type": "application/json"}
    token = secret_text(config.api_token)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - http(s) checked above
            return orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        try:
            reason = orjson.loads(exc.read()).get("error", exc.reason)
        except orjson.JSONDecodeError:
            reason = exc.reason
        raise click.ClickException(f"{method} {path}: HTTP {exc.code}: {reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Unreachable(
            f"cannot reach a worker at {base} (from {target.source}): {reason}; start one with `pulse up` "
            "or `pulse worker`, or give its address with --url"
        ) from None


@main.group()
def silence() -> None:
    """Create, list and expire silences on the running pipeline (needs PULSE_API_TOKEN to change)."""


@silence.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--duration", default="2h", show_default=True, help="how long, e.g. 30m, 2h")
@click.option("--comment", required=True, help="why")
@click.option("--author", default=lambda: os.environ.get("USER", "operator"), help="who")
@click.option("--url", default=None, help="a worker's base URL")
def silence_add(matchers: tuple[str, ...], duration: str, comment: str, author: str, url: str | None) -> None:
    """Silence alerts matching label filters such as alertname=high_error_rate route=~/api/pay.*"""
    spec: dict[str, str] = {}
    for item in matchers:
        for op in ("=~", "!~", "!=", "="):
            label, sep, value = item.partition(op)
            if sep and label:
                spec[label] = value if op == "=" else op + value
                break
        else:
            raise click.BadParameter(
                f"{item!r}: write LABEL=VALUE, LABEL!=VALUE, LABEL=~REGEX or LABEL!~REGEX"
            )
    body = {"matchers": spec, "duration": duration, "comment": comment, "createdBy": author}
    reply = _api("POST", "/api/v1/silences", body, url)
    click.echo(reply["data"]["silenceID"])


@silence.command("list")
@click.option("--url", default=None, help="a worker's base URL")
def silence_list(url: str | None) -> None:
    """List silences with their status."""
    found = _api("GET", "/api/v1/silences", url=url)["data"]["silences"]
    if not found:
        click.echo("no silences")
    for item in found:
        filters = ",".join(f"{k}={v}" for k, v in sorted(item["matchers"].items()))
        ends = time.strftime("%Y-%m-%d %H:%M", time.localtime(item["endsAt"] / 1000))
        click.echo(
            f"{item['id']}  {item['status']:8} until {ends}  {{{filters}}}  "
            f"{item['createdBy']}: {item['comment']}"
        )


@silence.command("expire")
@click.argument("silence_id")
@click.option("--url", default=None, help="a worker's base URL")
def silence_expire(silence_id: str, url: str | None) -> None:
    """Expire a silence now."""
    _api("DELETE", f"/api/v1/silences/{silence_id}", url=url)
    click.echo(f"expired {silence_id}")


if __name__ == "__main__":
    main()
