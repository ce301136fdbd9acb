"""One view of the whole cluster: every worker's series, read from the worker that owns them.

Every series lives on exactly one partition (`pipeline.state.series.owner`), and the worker that owns
that partition of the changelogs alone holds it, so one worker's `/api/v1/series` is its share only.
The membership comes from Faust's own assignment: the group leader's assignor collects every member's
`canonical_url` (this worker's is `web.advertised_url`, see `WebConfig.advertised`) and sends every
member, leader or not, the whole `changelog_distribution` (URL -> changelog topic -> partitions) with
its assignment (`PartitionAssignor.on_assignment`); `app.router.table_metadata(table)` reads it.

`ClusterView.series` reads this worker's share in process and every other member's over HTTP
(`GET <url>/api/v1/series?at=...&kind=...`, the local scope), all at once, each bounded by the
timeout (`web.cluster_timeout`, 1 s by default). A member that does not answer in time, or answers an
error, is reported `missing` with the reason, and the partitions whose figures are not in the answer
are listed in `missing_partitions`: nothing is ever silently left out of a sum. `merge` is the pure
part: it puts the answers together.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from pipeline.readout.figures import all_series_values
from pipeline.state.series import parse_key

if TYPE_CHECKING:
    from faust import App

    from pipeline.config.settings import Config
    from pipeline.state.cells import SeriesState

OK = "ok"
MISSING = "missing"


@dataclass(frozen=True)
class ClusterSeries:
    """The series of the whole cluster at one instant, and what is missing from them."""

    at: int
    """Epoch ms the figures are for."""
    series: list[dict[str, Any]]
    """Entries exactly as in /api/v1/series "series": {"key": ..., "kind": ..., **values}, by key."""
    workers: list[dict[str, Any]]
    """One per member: {"url", "partitions": [...] (its assignment), "self": bool, "status": "ok"|"missing",
    "error": str (when missing), "elapsed_ms": float, "served": [...] (the partitions its answer
    holds; only when it answered)}."""
    missing_partitions: list[int]
    """Partitions whose figures are not in `series` (a member did not answer, or no member holds them)."""

    @property
    def partial(self) -> bool:
        """Whether some partitions' figures are missing."""
        return bool(self.missing_partitions)

    def to_dict(self) -> dict[str, Any]:
        """The body of /api/v1/series?scope=cluster."""
        return {
            "at": self.at,
            "scope": "cluster",
            "partitions": sorted({p for w in self.workers for p in w.get("served", ())}),
            "series": self.series,
            "workers": self.workers,
            "missing_partitions": self.missing_partitions,
            "partial": self.partial,
        }


@dataclass(frozen=True)
class Member:
    """One worker of the current assignment: where it is reached, and the partitions it owns."""

    url: str
    partitions: tuple[int, ...]
    is_self: bool = False


@dataclass(frozen=True)
class Answer:
    """What one member answered (or why it did not)."""

    member: Member
    served: tuple[int, ...] = ()
    """The partitions whose series the answer holds (the member's own `partitions` field)."""
    series: Sequence[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    """Why the member gave no figures (None: it answered)."""
    elapsed_ms: float = 0.0


def series_entries(
    states: Mapping[str, Any], now_ms: int, config: Config, kinds: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """The /api/v1/series entries of the series in `states` (only `kinds`, when given), by key."""
    if kinds is not None:
        states = {key: state for key, state in states.items() if parse_key(key)[0] in kinds}
    return [{"key": key, **values} for key, values in all_series_values(states, now_ms, config)]


def merge(at: int, answers: Iterable[Answer], partitions: int) -> ClusterSeries:
    """Put the members' answers together (pure).

    A series answered twice (two members both read a partition for a moment during a rebalance) is
    taken once, from the first answer (this worker's own comes first). A partition is covered when an
    answer says it holds that partition's series; every other partition is missing. A member is
    `missing` when it did not answer, or answered without any of the partitions it owns (joining or
    recovering).
    """
    merged: dict[str, dict[str, Any]] = {}
    covered: set[int] = set()
    workers: list[dict[str, Any]] = []
    for answer in answers:
        member = answer.member
        entry: dict[str, Any] = {
            "url": member.url,
            "partitions": sorted(member.partitions),
            "self": member.is_self,
            "status": OK,
            "elapsed_ms": round(answer.elapsed_ms, 3),
        }
        error = answer.error
        if error is None and member.partitions and not set(member.partitions) & set(answer.served):
            error = "reads none of its partitions yet (joining the group or recovering its state)"
        if error is not None:
            entry["status"] = MISSING
            entry["error"] = error
        if answer.error is None:
            entry["served"] = sorted(answer.served)
            covered.update(answer.served)
            for item in answer.series:
                merged.setdefault(item["key"], item)
        workers.append(entry)
    missing = sorted(set(range(partitions)) - covered)
    return ClusterSeries(at, [merged[k] for k in sorted(merged)], workers, missing)


def members_of(
    distribution: Mapping[str, Mapping[str, Iterable[int]]], topic: str, self_url: str
) -> list[Member]:
    """The members of an assignment (Faust's `table_metadata`: URL -> topic -> partitions), this
    worker first, then by URL."""
    out = [
        Member(url, tuple(sorted(topics.get(topic, ()))), url == self_url)
        for url, topics in distribution.items()
    ]
    return sorted(out, key=lambda m: (not m.is_self, m.url))


def describe(exc: BaseException, timeout_s: float) -> str:
    """Why a member gave no answer, in a few words (no secret: member URLs hold none)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        # Errno's own words ("connection refused"), not asyncio's "Connect call failed (host, port)";
        # a name that does not resolve has a negative errno (getaddrinfo's) and its own strerror.
        number = error.errno or 0
        why = os.strerror(number) if number > 0 else error.strerror or type(error).__name__
        return f"cannot connect ({why.lower()})"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


@dataclass(eq=False)
class ClusterView:
    """Reads the series of every worker of the current assignment (see the module's docstring)."""

    config: Config
    states: Callable[[], Mapping[str, SeriesState]]
    """Series key -> state of every series this worker owns (stage 2's view)."""
    partitions: Callable[[], set[int]]
    """The partitions this worker reads now (the reader)."""
    distribution: Callable[[], Mapping[str, Mapping[str, Iterable[int]]]]
    """URL -> changelog topic -> partitions of every member (Faust's assignment)."""
    topic: str
    """The changelog topic whose partitions the members own."""
    self_url: str = ""
    """This worker's URL as the assignment spells it (Faust's canonical_url, normalised by yarl);
    empty: `web.advertised_url`."""
    _session: aiohttp.ClientSession | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.self_url = self.self_url or self.config.web.advertised()
        self.timeout_s = self.config.web.cluster_timeout

    def members(self) -> list[Member]:
        """URL and partitions of every worker of the current assignment (this worker first)."""
        return members_of(self.distribution(), self.topic, self.self_url)

    def local(
        self, now_ms: int, kinds: frozenset[str] | None = None
    ) -> tuple[list[int], list[dict[str, Any]]]:
        """This worker's share: (the partitions it reads now, their series)."""
        served = sorted(self.partitions())
        return served, series_entries(self.states(), now_ms, self.config, kinds)

    async def series(
        self, now_ms: int, kinds: frozenset[str] | None = None, timeout_s: float | None = None
    ) -> ClusterSeries:
        """The series of the whole cluster at `now_ms` (only `kinds`, when given); members that do not
        answer within `timeout_s` (default `web.cluster_timeout`) are reported missing."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        members = self.members()
        me = next((m for m in members if m.is_self), None)
        others = [m for m in members if not m.is_self]
        asked = [asyncio.ensure_future(self._ask(m, now_ms, kinds, timeout)) for m in others]
        try:
            started = time.perf_counter()
            served, entries = self.local(now_ms, kinds)
            own = Answer(
                me or Member(self.self_url, (), True),
                tuple(served),
                entries,
                elapsed_ms=(time.perf_counter() - started) * 1000,
            )
            answers = [own, *await asyncio.gather(*asked)]
        finally:
            for task in asked:
                task.cancel()
        return merge(now_ms, answers, self.config.topics.partitions)

    async def _ask(self, member: Member, now_ms: int, kinds: frozenset[str] | None, limit_s: float) -> Answer:
        params = {"at": str(now_ms), "scope": "local"}
        if kinds is not None:
            params["kind"] = ",".join(sorted(kinds))
        started = time.perf_counter()

        def elapsed() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            async with asyncio.timeout(limit_s):
                url = f"{member.url}/api/v1/series"
                async with self.session().get(url, params=params) as reply:
                    body = await reply.read()
                    if reply.status != 200:
                        return Answer(member, error=_refused(reply.status, body), elapsed_ms=elapsed())
            data = orjson.loads(body)
            return Answer(member, tuple(data["partitions"]), data["series"], elapsed_ms=elapsed())
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Answer(member, error=describe(exc, limit_s), elapsed_ms=elapsed())
        except (ValueError, KeyError, TypeError) as exc:  # not the answer of a pulse worker
            return Answer(member, error=f"unexpected answer ({type(exc).__name__})", elapsed_ms=elapsed())

    def session(self) -> aiohttp.ClientSession:
        """The view's one HTTP session, created on first use inside the running loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"Accept": "application/json"})
        return self._session

    async def close(self) -> None:
        """Release the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _refused(status: int, body: bytes) -> str:
    try:
        reason = orjson.loads(body).get("error")
    except (ValueError, AttributeError):
        reason = None
    return f"HTTP {status}" + (f": {reason}" if isinstance(reason, str) else "")


def register(
    app: App,
    config: Config,
    states: Callable[[], Mapping[str, SeriesState]],
    partitions: Callable[[], set[int]],
    table: str,
) -> ClusterView:
    """Build the worker's cluster view over the assignment of `table`'s changelog, closed at shutdown."""
    from agents.kafka.transport import connect

    topic = app.tables[table].changelog_topic.get_topic_name()
    view = ClusterView(
        config,
        states,
        partitions,
        lambda: app.router.table_metadata(table),
        topic,
        # What the assignor sends as this member's URL (str of the setting, which yarl normalises:
        # a host in capitals comes back in lower case).
        str(app.conf.canonical_url),
    )

    async def close(sender: Any, *args: Any, **kwargs: Any) -> None:
        await view.close()

    connect(app.on_before_shutdown, close)
    return view
