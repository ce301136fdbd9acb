"""Child-process helpers: children die with their parent, and stop within a deadline.

Orderly shutdown (SIGTERM, a grace period, then SIGKILL) is the parent's job, in `stop()`. The parent
death signal is the last resort when the parent itself was killed, so it is SIGKILL: a SIGTERM can be
ignored, and a worker whose broker died with the same parent never finishes its graceful shutdown
(aiokafka keeps retrying the dead broker), so it would live on as an orphan.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1
# Resolved once, in the parent: find_library runs `ldconfig -p` in a subprocess, which must not happen
# between fork and exec (slow, not fork-safe, and it widens the window in which the parent can die).
_LIBC = (
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if sys.platform.startswith("linux")
    else None
)


def _die_with(parent: int) -> Callable[[], None]:
    """Return the pre-exec hook that makes the child die with `parent` (no orphans after a kill -9)."""

    def hook() -> None:  # pragma: no cover - runs in the child between fork and exec
        if _LIBC is None:
            return
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl: the signal will never come
            os._exit(1)

    return hook


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    own_group: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a child that is killed if this process dies, even by SIGKILL.

    Linux sends the parent death signal when the *thread* that forked the child ends: call this from
    the main thread or another thread that lives as long as the child should. With `own_group` the
    child has a process group of its own, so a terminal's Ctrl-C (SIGINT to the foreground group)
    reaches only this process, which stops its children in order.
    """
    return subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_die_with(os.getpid()),
        process_group=0 if own_group else None,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 8.0) -> int | None:
    """SIGTERM a child, SIGKILL it after `timeout` s; return its exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        except ProcessLookupError:
            pass
    try:
        return proc.wait(5)
    except subprocess.TimeoutExpired:  # pragma: no cover
        return None


_HANDED_OUT: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now and not returned before by this process.

    Linux may hand the same ephemeral port to two `bind(0)` calls in a row once the first socket is
    closed, so two servers started from one process could be given one port (a chaos run once started
    two workers on one web port); remembering what was handed out rules that out.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise OSError(f"no fresh free port on {host} after 100 tries ({len(_HANDED_OUT)} handed out)")


def port_is_free(host: str, port: int) -> bool:
    """Whether a TCP server could bind host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool] | None = None) -> bool:
    """Wait until something accepts TCP connections on host:port; False on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def python_argv(*args: str) -> list[str]:
    """Return argv that runs the `pulse` CLI with this interpreter."""
    return [sys.executable, "-m", "pipeline.tools.cli", *args]


def child_env(**overrides: str) -> dict[str, str]:
    """Return this process's environment with overrides."""
    env = dict(os.environ)
    env.update(overrides)
    return env
