"""Requests come first: front doors mark the requests they serve, background preparation pauses between its steps.

    with serving():            # the app, around a request's model run
        translator(image)

    yield_to_requests()        # the tournament, before each candidate and before its final timing

Timing candidates while a request runs would also skew the tournament's choice, so pausing helps both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

MAX_YIELD_S = 30.0  # a steady stream of requests must not starve preparation for ever

_serving = 0
_changed = threading.Condition()


@contextmanager
def serving() -> Iterator[None]:
    """Mark a request as running for the duration of the block (thread-safe, nestable)."""
    global _serving
    with _changed:
        _serving += 1
    try:
        yield
    finally:
        with _changed:
            _serving -= 1
            _changed.notify_all()


def requests_running() -> int:
    return _serving


def yield_to_requests(max_wait_s: float = MAX_YIELD_S) -> float:
    """Wait until no request runs, at most `max_wait_s`; returns the seconds waited."""
    start = time.monotonic()
    with _changed:
        while _serving > 0:
            left = start + max_wait_s - time.monotonic()
            if left <= 0:
                break
            _changed.wait(left)
    return time.monotonic() - start
