"""The one way a test waits: poll what it can observe until a condition holds, within a deadline.

A wait that gives up says what it waited for and the last thing it saw (a value or an error), and,
when given `context`, more (a log tail). A wait on a process fails as soon as the process is gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

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
    deadline = time.monotonic() + timeout
    last: object = "nothing (never checked)"
    while True:
        try:
            result = check()
        except ignore as exc:
            last = exc
        else:
            if until(result):
                return result
            last = result
        if alive is not None and not alive():
            _fail(f"the process ended while waiting for {what}", last, context)
        if time.monotonic() >= deadline:
            _fail(f"timed out after {timeout:g}s waiting for {what}", last, context)
        time.sleep(interval)


def _fail(message: str, last: object, context: Callable[[], str] | None) -> NoReturn:
    more = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"{message}; last seen: {last!r}{more}")
