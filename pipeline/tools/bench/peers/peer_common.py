"""What both `pulse bench` peers share: their command line, their hard timeout and what they measure.

Imported by path (`pipeline/tools/bench/peers/` is the script's own directory), since the peers run in
their own virtual environment without the project's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any


def parser(doc: str) -> argparse.ArgumentParser:
    """The peers' common arguments."""
    parser = argparse.ArgumentParser(description=doc.split("\n", 1)[0])
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port...]")
    parser.add_argument("--topics", nargs="+", required=True)
    parser.add_argument("--expect", type=int, required=True, help="events in the topics")
    parser.add_argument("--out", required=True, help="file that receives the one-line JSON report")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard timeout, seconds")
    return parser


def watchdog(name: str, seconds: float) -> None:
    """Hard timeout: end the process, whatever it is doing, after `seconds`."""

    def fire() -> None:
        print(f"{name}: hard timeout after {seconds:g}s", file=sys.stderr, flush=True)
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()


def finish(name: str, report: dict[str, Any], out: str, expect: int) -> int:
    """Write the one-line JSON report; return the exit status (1 when the count is not `expect`)."""
    with open(out, "w", encoding="utf-8") as file:
        file.write(json.dumps(report) + "\n")
    if report["events"] != expect:
        print(f"{name}: counted {report['events']} events, expected {expect}", file=sys.stderr)
        return 1
    return 0


class Measure:
    """The events a peer counted into windows, and the wall and CPU time from its first event to the
    moment its counts reach `expect`. A peer's counter subclasses it and adds its own window counts.

    The per-event checks (`if not self.first`, `if self.total >= self.expect and not self.last`) stay
    inline in the peers, so that these calls happen once per run and the peers pay nothing per event.
    """

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self.first = 0.0
        self.last = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self.total = 0
        self.late = 0

    def start_clock(self) -> None:
        """The first event."""
        self.first = time.perf_counter()
        self.cpu_first = time.process_time()

    def stop_clock(self) -> None:
        """The counts have reached `expect`."""
        self.last = time.perf_counter()
        self.cpu_last = time.process_time()

    def summary(self, peer: str, windows: dict[str, int], timing: str, **extra: Any) -> dict[str, Any]:
        """The one-line report of the peer's `report()`; `extra` follows `events`."""
        seconds = self.last - self.first if self.first and self.last else 0.0
        return {
            "peer": peer,
            "events": self.total,
            **extra,
            "seconds": seconds,
            "eps": self.total / seconds if seconds > 0 else 0.0,
            "cpu_seconds": self.cpu_last - self.cpu_first if self.last else 0.0,
            "late": self.late,
            "windows": windows,
            "timing": timing,
        }
