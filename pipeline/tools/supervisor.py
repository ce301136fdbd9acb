"""`pulse up`: embedded broker + worker (+ simulator with --demo), supervised as one unit.

Ctrl-C or SIGTERM stops everything within 10 s; if any child dies, the others are stopped and `pulse
up` exits non-zero. Children get PR_SET_PDEATHSIG(SIGKILL), so even a SIGKILL of `pulse up` leaves no orphan.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from pipeline.config.settings import Config
from pipeline.tools import endpoint
from pipeline.tools.broker import EmbeddedBroker
from pipeline.tools.procs import child_env, python_argv, spawn, stop, wait_for_port

log = logging.getLogger(__name__)

STOP_BUDGET = 8.0  # seconds for stopping all children: Ctrl-C or SIGTERM stops everything within 10 s


@dataclass
class Child:
    """A supervised child process."""

    name: str
    proc: subprocess.Popen[bytes]


@dataclass
class Supervisor:
    """Start children, watch them, stop them all together."""

    children: list[Child] = field(default_factory=list)
    stopping: bool = False
    reason: str = ""
    say: Callable[[str], object] = print

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """Watch a started child."""
        self.children.append(Child(name, proc))

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        self.reason = signal.Signals(signum).name

    def watch(self) -> int:
        """Block until a signal arrives or a child exits; then stop all; return the exit code."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        code = 0
        while not self.stopping:
            for child in self.children:
                status = child.proc.poll()
                if status is not None:
                    self.reason = f"{child.name} exited with code {status}"
                    # killed by signal N: exit 128 + N like a shell (sys.exit(-9) would exit 247)
                    code = 128 - status if status < 0 else status or 1
                    self.stopping = True
                    break
            else:
                time.sleep(0.2)
        self.stop_all()
        return code

    def stop_all(self, budget: float = STOP_BUDGET) -> None:
        """Stop children in reverse start order (simulator, worker, broker), all within `budget` s.

        Each child gets SIGTERM, then SIGKILL after its grace period (worker 6 s, others 3 s), cut
        short so that the children after it keep a second each: the sum stays within the budget.
        """
        deadline = time.monotonic() + budget
        remaining = list(reversed(self.children))
        while remaining:
            child = remaining.pop(0)
            left = deadline - time.monotonic() - len(remaining) * 1.0
            grace = 6.0 if child.name == "worker" else 3.0
            was_running = child.proc.poll() is None
            code = stop(child.proc, timeout=max(0.2, min(grace, left)))
            if was_running:
                self.say(f"{child.name:<9} stopped (exit code {code})")


def up(demo: bool, config: Config, echo: object = print) -> int:
    """Run broker + worker (+ simulator); return the exit code."""
    say = echo if callable(echo) else print
    port = config.web.port
    supervisor = Supervisor(say=say)
    broker = EmbeddedBroker()
    # Every child in a process group of its own: a terminal's Ctrl-C reaches only `pulse up`, which
    # stops the simulator, then the worker (its graceful shutdown needs the broker), then the broker.
    broker.start(own_group=True)
    assert broker.proc is not None
    supervisor.add("broker", broker.proc)
    say(f"broker   {broker.url} (embedded Tansu, in memory)")
    env = child_env(
        PULSE_BROKER_URL=broker.url,
        PULSE_EMBEDDED_BROKER="1",
        PULSE_WEB_PORT=str(port),
    )
    try:
        worker = spawn(python_argv("worker"), env=env, own_group=True)
        supervisor.add("worker", worker)
        if not wait_for_port("127.0.0.1", port, 60, alive=lambda: worker.poll() is None):
            say("worker did not start its web server; stopping")
            supervisor.stop_all()
            return 1
        say(f"worker   http://127.0.0.1:{port}/  (metrics: /metrics, health: /health)")
        web_url = f"http://127.0.0.1:{port}"
        recorded = endpoint.write(config, endpoint.Endpoint(broker.url, web_url, os.getpid()))
        say(f"recorded {recorded}: `pulse simulate`, `pulse alerts` and `pulse silence` find this pipeline")
        if demo:
            sim = spawn(
                python_argv(
                    "simulate",
                    "--scenario",
                    "steady",
                    "--rate",
                    "200",
                    "--duration",
                    "0",
                    "--quiet",
                ),
                env=env,
                own_group=True,
            )
            supervisor.add("simulator", sim)
            say("simulator steady traffic, 200 events/s")
        say("Ctrl-C stops everything.")
        code = supervisor.watch()
    except BaseException:
        supervisor.stop_all()
        raise
    finally:
        endpoint.remove(config, os.getpid())
    say(f"stopped ({supervisor.reason or 'done'})")
    return code
