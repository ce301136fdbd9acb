"""`pulse bench` peer: a Quix Streams application counting the events in tumbling 60 s windows.

Run with the peers' venv (.venv-peers, see bench-peers-constraints.txt), never with the project's:
it imports nothing from o4o-pulse.

    .venv-peers/bin/python pipeline/tools/bench/peers/quix_count.py --bootstrap HOST:PORT \
        --topics T1 T2 T3 --expect N --out report.json [--timeout S] [--repartition]

What it runs, as Quix normally runs it: one StreamingDataFrame per input topic (JSON values), each
`.tumbling_window(60 s).count().current()`, in event time (the timestamp extractor returns the event's
JSON `ts`; the bench producer leaves the Kafka timestamp at its own send time, so that is not event
time), with the RocksDB window store and its changelog topic, at-least-once, commits every 5 s, a
consumer group of its own reading from the beginning. Quix's default consumer settings, except
session.timeout.ms (see CONSUMER_CONFIG).

Quix windows are per message key and skip messages whose key is None (with a warning); the bench's
messages have no key. By default each dataframe re-keys its messages in place to its topic name, the
way Quix's own `group_by` does when there is one partition: the count is then per topic, partition and
window, and the report sums the partitions. `--repartition` uses `group_by` instead, which routes every
event through a repartition topic (a second produce and consume of each event).

Timing: from the first event (the first call of the timestamp extractor, after the group join and the
state recovery) to the window update that makes the window counts sum to --expect, i.e. the moment
the last expected event has been counted into its window. The application then stops, commits and
closes; that is not timed. If the counting stops short (fewer events in the topics than expected),
the application stops after IDLE_S seconds without a window update, and the report says so.

The report (one line of JSON in --out): events (sum of the window counts), updates (window updates
seen, one per counted event), seconds, eps, cpu_seconds (this process's CPU time over the same
interval), late (events dropped as late: must be 0), windows ({window start in epoch ms: count}).
Exit status 0 when the window counts sum to --expect, 1 otherwise, 3 on the hard timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import peer_common  # this directory (see peer_common)

WINDOW = timedelta(seconds=60)
# The bench's events are stamped within 30 s and published in random order, so a window still
# receives events up to 30 s after the stream time has passed its end. With Quix's default grace (0)
# those would be dropped as late; a grace of one window keeps every event.
GRACE = timedelta(seconds=60)
# Kafka's default retention.ms (7 days). See _tansu_retention.
KAFKA_DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)
# librdkafka's defaults, but for session.timeout.ms: 10 s (aiokafka's default and Kafka's before 3.0)
# instead of 45 s, because Tansu holds a new member's first JoinGroup for about half the session
# timeout (23 s with 45 s). It only shortens the start-up, which is not timed.
CONSUMER_CONFIG: dict[str, Any] = {"session.timeout.ms": 10_000}
# Stop early, with a short count, when no window has been updated for this long after the first event
# (the topics hold fewer events than expected): the report then says how many were counted.
IDLE_S = 30.0


class Counter(peer_common.Measure):
    """Timing and the window counts seen on the output of the windows."""

    def __init__(self, expect: int, stop: Any, context: Any = None) -> None:
        super().__init__(expect)
        self.stop = stop
        self.context = context  # quixstreams.context.message_context
        self.updates = 0
        self.cells: dict[tuple[Any, int, int], int] = {}

    def timestamp(self, value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
        """Quix timestamp extractor: the event's JSON `ts` (epoch ms); notes the first event."""
        if not self.first:
            self.start_clock()
        return int(value["ts"])

    def window_update(self, value: Any, key: Any, timestamp: int, headers: Any) -> None:
        """Output of `.current()`: the running count of one (key, partition, window)."""
        cell = (key, self.context().partition, int(value["start"]))
        count = int(value["value"])
        self.total += count - self.cells.get(cell, 0)
        self.cells[cell] = count
        self.updates += 1
        if self.total >= self.expect and not self.last:
            self.stop_clock()
            self.stop()

    def on_late(self, *args: Any, **kwargs: Any) -> bool:
        """A late event dropped by a window: count it (the report must show none); no log line."""
        self.late += 1
        return False

    def report(self) -> dict[str, Any]:
        """The one-line report."""
        windows: dict[str, int] = {}
        for (_, _, start), count in sorted(self.cells.items(), key=lambda item: item[0][2]):
            windows[str(start)] = windows.get(str(start), 0) + count
        timing = "first event -> window counts sum to expect"
        report: dict[str, Any] = self.summary("quix", windows, timing, updates=self.updates)
        return report


def _tansu_retention(topic: Any) -> None:
    """Give Quix the retention.ms that Tansu does not report.

    Quix derives the config of the changelog (and repartition) topics it creates from the input
    topics' broker config, which it reads with DescribeConfigs: TopicManager.derive_topic_config
    reads `retention.ms` and raises KeyError('retention.ms') without it. Tansu's DescribeConfigs
    returns no configs at all. Passing `config=TopicConfig(extra_config={"retention.ms": ...})` to
    app.topic() does not help: for a topic that exists, that config is only used to create it, and
    the broker config is replaced by what the broker reports. So fill in the value Apache Kafka would
    report by default (7 days) on the topic's broker config, before any window or group_by is built.
    """
    topic.broker_config.extra_config.setdefault("retention.ms", KAFKA_DEFAULT_RETENTION_MS)


def _rekey(sdf: Any, key: str) -> Any:
    """Set the message key to `key` without a repartition topic.

    This is what Quix's own group_by does for a single-partition topic
    (StreamingDataFrame._single_partition_groupby): a transform of the stream that replaces the key.
    """
    stream = sdf.stream.add_transform(
        lambda value, _key, ts, headers: (value, key, ts, headers), expand=False
    )
    return sdf.__dataframe_clone__(stream=stream)


def _idle_stop(counter: Counter, stop: Any, idle_s: float = IDLE_S) -> None:
    """Stop the application when the counting has started and then made no progress for idle_s."""

    def watch() -> None:
        seen, since = -1, time.monotonic()
        while not counter.last:
            time.sleep(1.0)
            if counter.updates != seen or not counter.first:
                seen, since = counter.updates, time.monotonic()
            elif time.monotonic() - since > idle_s:
                print(f"quix_count: no window update for {idle_s:g}s, stopping", file=sys.stderr, flush=True)
                stop()
                return

    threading.Thread(target=watch, name="idle-stop", daemon=True).start()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser: argparse.ArgumentParser = peer_common.parser(__doc__ or "")
    parser.add_argument("--repartition", action="store_true", help="key with group_by (repartition topic)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the application until every expected event is counted; write the report."""
    args = parse_args(argv)
    peer_common.watchdog("quix_count", args.timeout)
    from quixstreams import Application
    from quixstreams.context import message_context

    with tempfile.TemporaryDirectory(prefix="pulse-bench-quix-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=f"pulse-bench-quix-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
            consumer_extra_config=CONSUMER_CONFIG,
        )
        counter = Counter(args.expect, app.stop, message_context)
        for name in args.topics:
            topic = app.topic(name, value_deserializer="json", timestamp_extractor=counter.timestamp)
            _tansu_retention(topic)
            sdf = app.dataframe(topic)
            if args.repartition:
                sdf = sdf.group_by(lambda _value, key=name: key, name="topic")
            else:
                sdf = _rekey(sdf, name)
            sdf = sdf.tumbling_window(WINDOW, grace_ms=GRACE, on_late=counter.on_late).count().current()
            sdf.update(counter.window_update, metadata=True)
        _idle_stop(counter, app.stop)
        app.run()
    return int(peer_common.finish("quix_count", counter.report(), args.out, args.expect))


if __name__ == "__main__":
    sys.exit(main())
