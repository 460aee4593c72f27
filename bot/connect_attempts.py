"""Where connection tests from the connect page run: a small bounded pool, one attempt in flight per link.

A connection test can take up to its deadline (20 s by default). Run in Starlette's shared threads,
45 parallel submits of one link made /healthz and signed Slack requests time out; here they queue in
a pool of their own, at most `queue` wait, and a link with an attempt running gets "busy" at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Busy(Exception):
    """Too many connection tests are running or waiting; the person should try again shortly."""


class AlreadyRunning(Exception):
    """This link has a connection test running; a second one would only race it."""


class Overdue(Exception):
    """The test did not finish within its deadline plus a grace period (its thread ends on its own)."""


class ConnectAttempts:
    """A bounded pool for connection tests, keyed by link so each link has one test at a time."""

    def __init__(self, *, workers: int, queue: int, wait_seconds: float) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="connect-test")
        self._limit = workers + queue
        self._wait_seconds = wait_seconds
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        """Attempts running or waiting now."""
        with self._lock:
            return len(self._in_flight)

    async def run(self, key: str, fn: Callable[[], T]) -> T:
        """Run fn in the pool for link `key`; Busy, AlreadyRunning or Overdue instead of waiting without end."""
        with self._lock:
            if key in self._in_flight:
                raise AlreadyRunning(key)
            if len(self._in_flight) >= self._limit:
                raise Busy()
            self._in_flight.add(key)
        try:
            future = self._pool.submit(fn)
        except BaseException:
            self._release(key)
            raise
        future.add_done_callback(lambda _f: self._release(key))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=self._wait_seconds)
        except TimeoutError:
            raise Overdue() from None

    def _release(self, key: str) -> None:
        with self._lock:
            self._in_flight.discard(key)

    def shutdown(self) -> None:
        """Stop taking attempts; running ones end by their own deadline."""
        self._pool.shutdown(wait=False, cancel_futures=True)
