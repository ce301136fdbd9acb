"""`pulse bench` peer: a Bytewax dataflow counting the events in tumbling 60 s windows.

Run with the peers' venv (.venv-peers, see bench-peers-constraints.txt), never with the project's:
it imports nothing from o4o-pulse.

    .venv-peers/bin/python pipeline/tools/bench/peers/bytewax_count.py --bootstrap HOST:PORT \
        --topics T1 T2 T3 --expect N --out report.json [--timeout S]

The dataflow, as Bytewax runs it by default (`python -m bytewax.run`: one process, one worker, no
recovery store): KafkaSource(brokers, topics, tail=False) from the beginning (its default batch size
and consumer settings; it assigns the partitions itself, no consumer group), the JSON decoded with
orjson, then count_window keyed by topic with an EventClock reading the event's `ts` (epoch ms) and
TumblingWindower(60 s, aligned to the epoch).

tail=False ends the input at the end of every partition (librdkafka's partition EOF); the end of
the input closes every window, which is when Bytewax emits tumbling window counts. Timing: from the
first event (the clock's first timestamp read) to the moment the output step has received window
counts summing to --expect. The windows only reach the output at the end of the input, so this is
the end of the run: after the last event was read and counted and the input reported EOF, before
the dataflow's shutdown (not timed).

The report (one line of JSON in --out): events (sum of the window counts), seconds, eps,
cpu_seconds (this process's CPU time over the same interval), late (events dropped as late: must
be 0), windows ({window start in epoch ms: count}).
Exit status 0 when the window counts sum to --expect, 1 otherwise, 3 on the hard timeout.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import peer_common  # this directory (see peer_common)

WINDOW = timedelta(seconds=60)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The bench's events are stamped within 30 s and published in random order: the watermark waits one
# window behind the largest timestamp seen, so that no event arrives after its window has closed.
WAIT = timedelta(seconds=60)


class Counter(peer_common.Measure):
    """Timing and the window counts that reach the output."""

    def __init__(self, expect: int) -> None:
        super().__init__(expect)
        self.windows: dict[int, int] = {}

    def timestamp(self, item: tuple[str, dict[str, Any]]) -> datetime:
        """EventClock ts_getter: the event's `ts`; notes the first event."""
        if not self.first:
            self.start_clock()
        return datetime.fromtimestamp(item[1]["ts"] / 1000, tz=UTC)

    def closed(self, items: list[tuple[str, tuple[int, int]]]) -> None:
        """Window counts emitted by count_window: (key, (window id, count))."""
        for _key, (window_id, count) in items:
            start = window_id * int(WINDOW.total_seconds() * 1000)
            self.windows[start] = self.windows.get(start, 0) + count
            self.total += count
        if self.total >= self.expect and not self.last:
            self.stop_clock()

    def dropped(self, items: list[Any]) -> None:
        """Late events (there must be none)."""
        self.late += len(items)

    def report(self) -> dict[str, Any]:
        """The one-line report."""
        windows = {str(start): count for start, count in sorted(self.windows.items())}
        timing = "first event -> window counts sum to expect (emitted at the end of the input)"
        report: dict[str, Any] = self.summary("bytewax", windows, timing)
        return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line."""
    parser: argparse.ArgumentParser = peer_common.parser(__doc__ or "")
    return parser.parse_args(argv)


def build_flow(args: argparse.Namespace, counter: Counter) -> Any:
    """The dataflow."""
    import bytewax.operators as op
    import orjson
    from bytewax.connectors.kafka import KafkaSource
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, count_window
    from bytewax.outputs import DynamicSink, StatelessSinkPartition

    class _Partition(StatelessSinkPartition):
        def __init__(self, write: Any) -> None:
            self.write = write

        def write_batch(self, items: list[Any]) -> None:
            self.write(items)

    class _Sink(DynamicSink):
        def __init__(self, write: Any) -> None:
            self.write = write

        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
            return _Partition(self.write)

    flow = Dataflow("pulse_bench_count")
    messages = op.input("kafka", flow, KafkaSource(args.bootstrap.split(","), args.topics, tail=False))
    events = op.map("decode", messages, lambda msg: (msg.topic, orjson.loads(msg.value)))
    clock = EventClock(ts_getter=counter.timestamp, wait_for_system_duration=WAIT)
    windower = TumblingWindower(length=WINDOW, align_to=EPOCH)
    counted = count_window("count", events, clock, windower, key=lambda item: item[0])
    op.output("windows", counted.down, _Sink(counter.closed))
    op.output("late", counted.late, _Sink(counter.dropped))
    return flow


def main(argv: list[str] | None = None) -> int:
    """Run the dataflow to the end of the input; write the report."""
    args = parse_args(argv)
    peer_common.watchdog("bytewax_count", args.timeout)
    from bytewax.run import cli_main

    counter = Counter(args.expect)
    cli_main(build_flow(args, counter), workers_per_process=1)
    return int(peer_common.finish("bytewax_count", counter.report(), args.out, args.expect))


if __name__ == "__main__":
    sys.exit(main())
