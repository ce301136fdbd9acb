"""The live status line of `pulse up --status`: pure functions from two polls of a worker to one line.

`pulse up` (the supervisor) polls the worker's own endpoints every couple of seconds and turns each
poll into a `Sample`; here two consecutive samples become the line's text, for example

    ● 1,234 events/s · 2 firing (payment_system_down, …) · lag 0 · worker ok

- events/s is the increase of `pulse_events_total` (summed over topics) between the two samples, over
  the time between them (the caller's clock): never a configured rate;
- firing counts the firing alerts of `/api/v1/alerts` and names their rules, as many as fit;
- lag is `pulse_consumer_lag` summed over topics, as the worker reports it;
- the worker's word is `/health`'s status; a worker that did not answer gets "worker not answering"
  and no figures at all, never the last ones;
- with several workers, events/s and lag are the whole cluster's: the other workers of the group's
  assignment (listed by `/health/detailed`) are polled too and their counters summed, and the line says
  how many there are, or how many of them answered (a sum without some is then marked partial, and no
  rate is measured across a change of who answered).

`Cadence` decides when a line is shown: on a terminal every poll (it is rewritten in place); in plain
output (a log, CI) only when it says something new (`differs`), at most every 10 s, and once a minute
when nothing changes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NAME_CHARS = 32
"""A rule name longer than this is cut (with an ellipsis) on the line."""


@dataclass(frozen=True)
class Sample:
    """One poll of a worker: what it reported, or why it did not answer."""

    at: float
    """When it was taken, in seconds of the caller's clock (monotonic)."""
    events: float | None = None
    """`pulse_events_total` summed over topics (None: not reported)."""
    lag: int | None = None
    """`pulse_consumer_lag` summed over topics (None: not reported)."""
    firing: tuple[str, ...] = ()
    """The rule of every firing alert (a rule firing for two label sets appears twice)."""
    health: str = ""
    """`/health`'s status: healthy, degraded or unhealthy ("" when unknown)."""
    problems: tuple[str, ...] = ()
    """The services `/health` reports as not healthy (state, kafka, rules, channel:NAME)."""
    error: str | None = None
    """Why the worker did not answer (None: it answered)."""
    others: tuple[str, ...] = ()
    """The other workers of the cluster whose counters are summed into `events` and `lag` (URLs)."""
    missing: tuple[str, ...] = ()
    """The other workers of the cluster that did not answer (URLs): the sums lack their share."""


@dataclass(frozen=True)
class Glyphs:
    """The characters a line is drawn with."""

    bullet: str
    sep: str
    more: str
    ambiguous: int = 1
    """Columns the terminal gives East Asian ambiguous characters such as ●, · and … (2 in a CJK
    locale, where many terminals draw them double)."""


FANCY = Glyphs("●", " · ", "…")
PLAIN = Glyphs("", " | ", "...")


def events_total(metrics_text: str) -> float:
    """The sum of `pulse_events_total` over topics in a /metrics body (0 before the first event, when
    the counter has no topic yet)."""
    return _sum(metrics_text, "pulse_events_total") or 0.0


def consumer_lag(metrics_text: str) -> int | None:
    """The sum of `pulse_consumer_lag` over topics in a /metrics body (None if it has none)."""
    total = _sum(metrics_text, "pulse_consumer_lag")
    return None if total is None else int(total)


def _sum(metrics_text: str, name: str) -> float | None:
    total: float | None = None
    for line in metrics_text.splitlines():
        if not line.startswith(name) or line[len(name) : len(name) + 1] not in ("{", " "):
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        total = (total or 0.0) + value
    return total


def other_workers(detailed_body: Any) -> tuple[str, ...]:
    """The URLs of the other workers of the cluster in a `/health/detailed` answer (its `cluster`)."""
    try:
        workers = detailed_body["cluster"]["workers"]
        return tuple(str(w["url"]) for w in workers if isinstance(w, dict) and not w.get("self"))
    except (KeyError, TypeError):
        return ()


def summed(values: Iterable[float | None]) -> float | None:
    """The sum of the values that are known (None: none is)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def firing_rules(alerts_body: Any) -> tuple[str, ...]:
    """The rule of every firing alert in a `/api/v1/alerts` answer."""
    try:
        alerts = alerts_body["data"]["alerts"]
    except (KeyError, TypeError):
        return ()
    return tuple(
        str(alert.get("rule") or "?")
        for alert in alerts
        if isinstance(alert, dict) and alert.get("state") == "firing"
    )


def health_of(health_body: Any) -> tuple[str, tuple[str, ...]]:
    """(status, services not healthy) of a `/health` answer (200 or 503)."""
    if not isinstance(health_body, dict):
        return "", ()
    services = health_body.get("services") or []
    problems = tuple(
        str(s.get("service"))
        for s in services
        if isinstance(s, dict) and s.get("status") not in (None, "healthy")
    )
    return str(health_body.get("status") or ""), problems


def rate(prev: Sample | None, cur: Sample) -> float | None:
    """Events per second between two samples (None: not measurable, e.g. the first poll, a worker that
    did not answer, or a counter that went down because the worker restarted)."""
    if prev is None or prev.events is None or cur.events is None or cur.error or prev.error:
        return None
    if (prev.others, prev.missing) != (cur.others, cur.missing):  # not the same workers' sum
        return None
    elapsed = cur.at - prev.at
    if elapsed <= 0 or cur.events < prev.events:
        return None
    return (cur.events - prev.events) / elapsed


def tone(cur: Sample) -> str:
    """How the bullet is coloured on a terminal: "ok", "warn" or "bad"."""
    if cur.error or (cur.health == "unhealthy" and "state" not in cur.problems):
        return "bad"
    if cur.firing or cur.health != "healthy" or cur.missing:
        return "warn"
    return "ok"


def line(prev: Sample | None, cur: Sample, width: int, glyphs: Glyphs = FANCY) -> str:
    """The status line for the latest sample `cur` (`prev`: the poll before), at most `width` columns."""
    lead = f"{glyphs.bullet} " if glyphs.bullet else ""
    if cur.error:
        return _cut(f"{lead}worker not answering ({cur.error})", width, glyphs)
    measured = rate(prev, cur)
    head = f"{lead}{_rate_text(measured, glyphs)} events/s"
    lag = f"lag {cur.lag:,}" if cur.lag is not None else "lag ?"
    word = _worker_word(cur) + _cluster_words(cur, glyphs)
    names = list(dict.fromkeys(_short(name, glyphs) for name in cur.firing))
    # Fewer and fewer rule names until the line fits; then cut it.
    for shown in range(len(names), -1, -1):
        firing = f"{len(cur.firing)} firing"
        if cur.firing and shown:
            listed = ", ".join(names[:shown]) + (f", {glyphs.more}" if shown < len(names) else "")
            firing += f" ({listed})"
        text = glyphs.sep.join((head, firing, lag, word))
        if columns(text, glyphs.ambiguous) <= width:
            return text
    return _cut(text, width, glyphs)


@dataclass(frozen=True)
class Gist:
    """What a plain status line says, coarsely (see `differs`)."""

    answering: bool
    rate: float = 0.0
    firing: frozenset[str] = frozenset()
    lag: int = 0
    health: str = ""
    problems: tuple[str, ...] = ()
    workers: int = 1
    missing: tuple[str, ...] = ()


LAG_NOTED = 1000
"""A lag below this many messages is "none" for the plain line (it comes and goes between fetches)."""


def gist(prev: Sample | None, cur: Sample) -> Gist | None:
    """The gist of `cur`'s line; None when it is not worth a plain line: no rate measured yet, or the
    worker not ready (it logs its own assignment and `ready` lines)."""
    if cur.error:
        return Gist(answering=False)
    measured = rate(prev, cur)
    not_ready = "state" in cur.problems or (prev is not None and "state" in prev.problems)
    if measured is None or not_ready:
        return None
    workers = 1 + len(cur.others) + len(cur.missing)
    return Gist(
        True, measured, frozenset(cur.firing), cur.lag or 0, cur.health, cur.problems, workers, cur.missing
    )


def differs(a: Gist, b: Gist) -> bool:
    """Whether `b` says something new after `a`: the worker (not) answering, its health, the firing
    rules, the rate halved, doubled, or to or from zero, the lag crossing `LAG_NOTED` or growing or
    shrinking tenfold above it. A steady pipeline's jitter does not count."""
    if (a.answering, a.health, a.problems, a.firing) != (b.answering, b.health, b.problems, b.firing):
        return True
    if (a.workers, a.missing) != (b.workers, b.missing):
        return True
    if _far(a.rate, b.rate, 2.0):
        return True
    if (a.lag >= LAG_NOTED) != (b.lag >= LAG_NOTED):
        return True
    return a.lag >= LAG_NOTED and _far(a.lag, b.lag, 10.0)


def _far(a: float, b: float, factor: float) -> bool:
    if a <= 0 or b <= 0:
        return (a <= 0) != (b <= 0)
    return max(a, b) / min(a, b) >= factor


class Cadence:
    """When a line is shown: on a terminal every poll (it is rewritten in place); in plain output only
    when `differs` says it is new, at most every `every` s, or after `heartbeat` s of saying the same."""

    def __init__(self, tty: bool, every: float = 10.0, heartbeat: float = 60.0) -> None:
        self.tty = tty
        self.every = every
        self.heartbeat = heartbeat
        self.last_at: float | None = None
        self.last: Gist | None = None

    def due(self, now: float, said: Gist | None) -> bool:
        """Whether to show the line of a sample taken at `now` whose gist is `said`; if so, remembers it."""
        if self.tty:
            return True
        if said is None:
            return False
        if self.last_at is not None and self.last is not None:
            since = now - self.last_at
            if since < self.every or (not differs(self.last, said) and since < self.heartbeat):
                return False
        self.last_at = now
        self.last = said
        return True


def columns(text: str, ambiguous: int = 1) -> int:
    """Terminal columns `text` takes: two for a wide character, `ambiguous` for an ambiguous one."""
    out = 0
    for ch in text:
        kind = unicodedata.east_asian_width(ch)
        out += 2 if kind in "WF" else ambiguous if kind == "A" else 1
    return out


def _cut(text: str, width: int, glyphs: Glyphs) -> str:
    more = columns(glyphs.more, glyphs.ambiguous)
    if columns(text, glyphs.ambiguous) <= width:
        return text
    if width < more:
        return ""
    out: list[str] = []
    used = 0
    for ch in text:
        used += columns(ch, glyphs.ambiguous)
        if used > width - more:
            break
        out.append(ch)
    return "".join(out).rstrip() + glyphs.more


def _short(name: str, glyphs: Glyphs) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - len(glyphs.more)] + glyphs.more


def _rate_text(value: float | None, glyphs: Glyphs) -> str:
    if value is None:
        return glyphs.more
    if value == 0:
        return "0"
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _worker_word(cur: Sample) -> str:
    if cur.health == "healthy":
        return "worker ok"
    if cur.health == "degraded":
        return f"worker degraded ({_listed(cur.problems)})"
    if "state" in cur.problems:  # joining, recovering: kafka and rules are not healthy either yet
        return "worker not ready"
    if cur.health == "unhealthy":
        return f"worker unhealthy ({_listed(cur.problems)})"
    return "worker ?"


def _cluster_words(cur: Sample, glyphs: Glyphs) -> str:
    """How many workers the figures are of: nothing for one, "3 workers", or "2 of 3 workers answering
    (partial: URL)" while some do not answer."""
    total = 1 + len(cur.others) + len(cur.missing)
    if total == 1:
        return ""
    if not cur.missing:
        return f"{glyphs.sep}{total} workers"
    answering = total - len(cur.missing)
    return f"{glyphs.sep}{answering} of {total} workers answering (partial: {_listed(cur.missing)})"


def _listed(names: Iterable[str]) -> str:
    return ", ".join(names) or "?"
