"""What both `pulse bench` peers share: their command line and their hard timeout.

Imported by path (`pipeline/tools/bench/peers/` is the script's own directory), since the peers run in
their own virtual environment without the project's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
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
