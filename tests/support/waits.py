"""The one way a test waits: poll what it can observe until a condition holds, within a deadline.

A wait that gives up says what it waited for and the last thing it saw (a value or an error), and,
when given `context`, more (a log tail). A wait on a process fails as soon as the process is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import httpx

T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (httpx.HTTPError, OSError)
"""Errors that mean "not yet" (a server not listening yet), not a failure."""


def wait_until(
    check: Callable[[], T],
    timeout: float,
    what: str,
    *,
    until: Callable[[T], object] = bool,
    interval: float = 0.3,
    ignore: tuple[type[BaseException], ...] = TRANSIENT,
    alive: Callable[[], bool] | None = None,
    context: Callable[[], str] | None = None,
) -> T:
    """Call `check` until `until` holds for what it returns (by default: until it is truthy); return that.

    `check` raising one of `ignore` counts as "not yet". Fails after `timeout` seconds, or as soon as
    `alive()` is false, with `what`, the last result (or error) of `check`, and `context()`.
    """
    poll = _Poll(check, timeout, what, until, ignore, alive, context)
    while not poll.done():
        time.sleep(interval)
    return poll.result


async def wait_until_async(
    check: Callable[[], T],
    within: float,
    what: str,
    *,
    until: Callable[[T], object] = bool,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = TRANSIENT,
    context: Callable[[], str] | None = None,
) -> T:
    """`wait_until` (for `within` seconds) inside an event loop: it sleeps with `asyncio.sleep`, so the
    loop's tasks (a Kafka client's, the code under test) run while it waits."""
    poll = _Poll(check, within, what, until, ignore, None, context)
    while True:  # polled: what it waits for (a broker's answer, another task's work) sends no signal
        if poll.done():
            return poll.result
        await asyncio.sleep(interval)


class _Poll:
    """One wait's deadline and last sight; `done()` checks once and fails the wait when it is over."""

    def __init__(
        self,
        check: Callable[[], T],
        timeout: float,
        what: str,
        until: Callable[[T], object],
        ignore: tuple[type[BaseException], ...],
        alive: Callable[[], bool] | None,
        context: Callable[[], str] | None,
    ) -> None:
        self.check, self.until, self.ignore, self.alive = check, until, ignore, alive
        self.timeout, self.what, self.context = timeout, what, context
        self.deadline = time.monotonic() + timeout
        self.last: object = "nothing (never checked)"
        self.result: Any = None

    def done(self) -> bool:
        try:
            result = self.check()
        except self.ignore as exc:
            self.last = exc
        else:
            if self.until(result):
                self.result = result
                return True
            self.last = result
        if self.alive is not None and not self.alive():
            _fail(f"the process ended while waiting for {self.what}", self.last, self.context)
        if time.monotonic() >= self.deadline:
            _fail(f"timed out after {self.timeout:g}s waiting for {self.what}", self.last, self.context)
        return False


def _fail(message: str, last: object, context: Callable[[], str] | None) -> NoReturn:
    more = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"{message}; last seen: {last!r}{more}")
