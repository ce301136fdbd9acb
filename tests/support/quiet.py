"""Proofs that nothing more arrives, instead of sleeping: end offsets taken after the action, read by the
workers (the positions each reports in GET /health/detailed) and by the test, with the assignment
unchanged while it looks (a rebalance would replay: look again).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

import httpx
import orjson

from tests.support.kafka import TP, end_offsets, read_to_end
from tests.support.waits import wait_until

if TYPE_CHECKING:
    from tests.support.cluster import Worker

Details = dict[str, dict[str, Any]]
"""GET /health/detailed of each live worker, by name."""
X = TypeVar("X")
TRANSIENT = (httpx.HTTPError, OSError, ValueError)


class Look(NamedTuple, Generic[X]):
    """One look at the workers: what is not quiet yet (shown when a wait gives up), what was read."""

    problems: list[str]
    seen: X | None
    details: Details

    def __repr__(self) -> str:
        return repr(self.problems)


def _steady(
    workers: Mapping[str, Worker],
    before: Callable[[Details], list[str]],
    between: Callable[[], tuple[list[str], X]],
    after: Callable[[Details, X], list[str]],
) -> Look[X]:
    """One look: the workers' details, `between` (what the test reads), the details again.

    Returns (what is not quiet yet, the result of `between`, the second details): `before` and `after`
    judge the details, and the assignment must be the same at both observations, with no worker
    logging a new assignment.
    """
    assigned = {name: w.count("assigned partitions") for name, w in workers.items()}
    first = {name: w.detailed() for name, w in workers.items()}
    problems = before(first)
    if problems:
        return Look(problems, None, first)
    problems, seen = between()
    second = {name: w.detailed() for name, w in workers.items()}
    problems += after(second, seen)
    if ownership(second) != ownership(first):
        problems.append(f"ownership changed: {ownership(first)} -> {ownership(second)}")
    again = {name: w.count("assigned partitions") for name, w in workers.items()}
    if again != assigned:
        problems.append(f"assignments during the check: {assigned} -> {again}")
    return Look(problems, seen, second)


def _looked(
    workers: Mapping[str, Worker],
    what: str,
    timeout: float,
    before: Callable[[Details], list[str]],
    between: Callable[[], tuple[list[str], X]],
    after: Callable[[Details, X], list[str]],
) -> tuple[X, Details]:
    """Look (`_steady`) until nothing keeps the workers from being quiet; return what `between` read and
    the workers' details after it."""
    _, seen, details = wait_until(
        lambda: _steady(workers, before, between, after),
        timeout,
        what,
        until=lambda look: not look.problems,
        interval=0.25,
        ignore=TRANSIENT,
    )
    assert seen is not None
    return seen, details


def ownership(details: Details) -> dict[str, list[int]]:
    return {name: sorted(d["kafka"]["partitions"]) for name, d in details.items()}


# --- figures: input and partials read to their end offsets --------------------------------------------


def _reading(details: Details) -> dict[TP, tuple[str, int]]:
    """(topic, partition) -> (worker, next offset it reads), over every worker's positions."""
    out: dict[TP, tuple[str, int]] = {}
    for name, detail in details.items():
        for topic, positions in detail["kafka"]["positions"].items():
            for partition, position in positions.items():
                out[(topic, int(partition))] = (name, int(position))
    return out


def _not_ready(details: Details) -> list[str]:
    return [f"{name} not ready" for name, detail in details.items() if not detail["state"].get("ready")]


def _problems(details: Details, ends: dict[TP, int], partitions: int) -> list[str]:
    """What keeps the live workers from having read `ends` with nothing in flight (empty: nothing)."""
    out = _not_ready(details)
    owned: dict[int, str] = {}
    for name, detail in details.items():
        for p in detail["kafka"]["partitions"]:
            if p in owned:
                out.append(f"partition {p} owned by {owned[p]} and {name}")
            owned[p] = name
        read = {int(p) for positions in detail["kafka"]["positions"].values() for p in positions}
        if read != set(detail["kafka"]["partitions"]):
            out.append(f"{name} reads partitions {sorted(read)} but owns {detail['kafka']['partitions']}")
        pending = detail["state"].get("stage1Pending")
        if pending:
            out.append(f"{name} stage1Pending={pending}")
        lag = {t: n for t, n in detail["kafka"]["consumerLag"].items() if n}
        if lag:
            out.append(f"{name} consumerLag={lag}")
    missing = sorted(set(range(partitions)) - set(owned))
    if missing:
        out.append(f"partitions {missing} owned by no live worker")
    reading = _reading(details)
    behind = {
        f"{t}:{p}": (reading.get((t, p), ("nobody", -1)), end)
        for (t, p), end in sorted(ends.items())
        if reading.get((t, p), ("", -1))[1] < end
    }
    if behind:
        out.append(f"behind ((worker, next offset), end offset): {behind}")
    return out


def wait_read(
    workers: Mapping[str, Worker],
    bootstrap: str,
    input_ends: dict[TP, int],
    partials: str,
    partitions: int,
    timeout: float,
) -> dict[str, Any]:
    """Return once the live workers provably hold every figure that will ever arrive.

    Call it once `input_ends` are final (every send acknowledged) and no other process can write
    (every stopped worker exited, every killed one was reaped).

    1. Every input partition is read up to its end offset by the one live worker that owns it, and
       every worker reports `stage1Pending` 0: each event it read was flushed and its partials were
       acknowledged by the broker. No partial can come from anywhere else, except a replay after
       an assignment (checked in 3).
    2. Only then are the partials topic's end offsets read (a consumer created after 1): they
       include every partial that exists. Every partials partition must be read to that end by
       its owner. Stage 2 applies a record in memory in the same step that advances the position
       (no await between), so the series served now are final.
    3. No assignment happened between 1 and 2: every worker was ready at both observations, with
       the same partitions, and no worker logged a new "assigned partitions" line.

    Consumer lag (from the worker's own view of the high-water marks) must be 0 as well; it is the
    weaker check, since a worker's high-water mark is only as fresh as its last fetch.
    Stage-2 cell writes (every second) only make the cells durable; they do not change what is served.
    Returns the partials topic's end offsets and the partitions of each worker.
    """

    def partial_ends() -> tuple[list[str], dict[TP, int]]:
        return [], end_offsets(bootstrap, [partials])

    ends, details = _looked(
        workers,
        f"the live workers {sorted(workers)} to read every input and partial to its end offset",
        timeout,
        lambda first: _problems(first, input_ends, partitions),
        partial_ends,
        lambda second, seen: _problems(second, {**input_ends, **seen}, partitions),
    )
    return {"partials": ends, "ownership": ownership(details)}


# --- alerts: the rules evaluated on the final figures ---------------------------------------------------


def wait_evaluated(workers: Mapping[str, Worker], since: float, timeout: float) -> None:
    """Return once every worker evaluated the rules of every partition it owns after `since` (wall time),
    and again after that evaluation was seen: the second began once the first had sent its transitions.

    A worker reports `rules.secondsSinceEvaluation` for its stalest partition; asked at `t`, its every
    partition was evaluated after `t - secondsSinceEvaluation`.
    """
    marks = dict.fromkeys(workers, since)
    seen = dict.fromkeys(workers, 0)

    def behind() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, worker in workers.items():
            if seen[name] < 2:
                asked = time.time()
                age = worker.get("/health/detailed")["rules"]["secondsSinceEvaluation"]
                if age is not None and asked - age >= marks[name]:
                    seen[name] += 1
                    marks[name] = time.time()
                if seen[name] < 2:
                    out[name] = {"evaluations seen": seen[name], "secondsSinceEvaluation": age}
        return out

    wait_until(
        behind,
        timeout,
        f"the live workers {sorted(workers)} to evaluate their rules twice",
        until=lambda left: not left,
        interval=0.2,
        ignore=TRANSIENT,
    )


# --- notifications: the delivery ledger read to its end offsets --------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the notifications about one rule must have come to."""

    rule: str
    state: str
    """"firing" or "resolved": the latest state of every incident of the rule, and of its notifications."""
    channels: tuple[str, ...]
    received: Callable[[], Mapping[str, int]] | None = None
    """Messages about the rule that each channel's receiver got (None: not compared, e.g. after a
    SIGKILL, whose one repeated delivery the ledger does not record)."""


def ledger(bootstrap: str, topic: str) -> dict[str, list[dict[str, Any]]]:
    """The delivery ledger (nflog changelog) read to its end offsets: the entries of each ledger key
    ("group key|channel"), in the order they were written."""
    _, records = read_to_end(bootstrap, [topic])
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        if record.value:
            out[str(orjson.loads(record.key))].append(orjson.loads(record.value))
    return dict(out)


def incidents(bootstrap: str, topic: str, rule: str) -> dict[str, str]:
    """The latest state of every incident ("fingerprint:starts_at") of `rule` that fired, from the alerts
    topic read to its end offsets."""
    _, records = read_to_end(bootstrap, [topic])
    fired: dict[str, str] = {}
    latest: dict[str, str] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        alert = orjson.loads(record.value) if record.value else None
        if alert is None or alert.get("rule") != rule:
            continue
        fingerprint = str(alert["fingerprint"])
        if alert["state"] == "firing":
            fired[fingerprint] = f"{fingerprint}:{alert.get('starts_at') or ''}"
        latest[fingerprint] = alert["state"]
    return {incident: latest[fingerprint] for fingerprint, incident in fired.items()}


def _notified(
    expected: Expected, states: dict[str, str], entries: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """What keeps the ledger from recording that every channel delivered the final state of every
    incident, and (with `received`) exactly the deliveries its receiver got."""
    out = [f"incident {i} is {s}" for i, s in states.items() if s != expected.state]
    if not states:
        out.append(f"no incident of {expected.rule} fired")
    got = expected.received() if expected.received is not None else None
    for channel in expected.channels:
        keys = {
            key: items
            for key, items in entries.items()
            if key.endswith(f"|{channel}") and any(set(e["i"]) & set(states) for e in items)
        }
        announced = {i for items in keys.values() for e in items for i in e["i"]}
        out += [f"{channel}: no ledger entry announces {i}" for i in sorted(set(states) - announced)]
        out += [
            f"{channel}: ledger key {key} is at {items[-1]['s']}"
            for key, items in keys.items()
            if items[-1]["s"] != expected.state
        ]
        written = sum(len(items) for items in keys.values())
        if got is not None and got.get(channel, 0) != written:
            out.append(f"{channel}: the receiver got {got.get(channel, 0)}, the ledger records {written}")
    return out


def _idle(details: Details) -> list[str]:
    """What keeps the workers from being ready with no notification queued."""
    queued = {
        name: {c: n for c, n in detail["notifications"]["queueDepth"].items() if n}
        for name, detail in details.items()
    }
    return _not_ready(details) + [f"{n} has notifications queued: {q}" for n, q in queued.items() if q]


def wait_notified(
    workers: Mapping[str, Worker],
    bootstrap: str,
    alerts: str,
    nflog: str,
    expected: Expected,
    timeout: float,
) -> dict[str, list[dict[str, Any]]]:
    """Return once the notifications about `expected.rule` provably came to an end.

    1. The alerts topic, read to its end offsets, has every incident of the rule at `expected.state`.
    2. The delivery ledger (written by a channel once it delivered, or gave up on, a notification),
       read to its end offsets: for every channel, an entry announced each incident, and the latest
       entry of each of those group keys is at `expected.state`. A group is planned from its alerts
       and its ledger entry only; at that state nothing more is due.
    3. With `received`: each receiver got exactly the deliveries the ledger records, so none is on its
       way (a delivery is recorded once the receiver answered it).
    4. No worker has a notification queued, and the assignment did not change while the test looked
       (a new owner of a group plans it from the ledger it recovers).
    Returns the ledger entries of the rule's group keys.
    """

    def look() -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
        states = incidents(bootstrap, alerts, expected.rule)
        entries = ledger(bootstrap, nflog)
        mine = {k: v for k, v in entries.items() if any(set(e["i"]) & set(states) for e in v)}
        return _notified(expected, states, entries), mine

    entries, _ = _looked(
        workers,
        f"the {expected.state} notifications of {expected.rule} on {list(expected.channels)}, and no more",
        timeout,
        _idle,
        look,
        lambda second, _: _idle(second),
    )
    return entries
