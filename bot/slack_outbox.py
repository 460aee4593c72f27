"""The sync side's Slack calls, made in order by one sender thread so that no sync ever waits on Slack.

A 429 makes slack_sdk sleep for Retry-After inside the call; made from a sync thread that sleep would
hold an IMAP connection and the account's lease. Here the sync thread only queues a closure and goes
on. A job with a key replaces the queued job with the same key (latest wins, in the first one's place
in the line), which is how progress edits of one message coalesce. A job may wait until a given time
(App Home's "at most once every few seconds"); jobs that are ready go first, in the order they came.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)
Action = Callable[[], None]


@dataclass
class _Job:
    action: Action
    key: Hashable | None
    not_before: float  # time.monotonic()


class SlackOutbox:
    """A queue of Slack calls served by one daemon thread, drained (within a bound) on close."""

    def __init__(self, *, name: str = "slack-outbox") -> None:
        self._jobs: list[_Job] = []
        self._keyed: dict[Hashable, _Job] = {}
        self._cond = threading.Condition()
        self._busy = False
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, action: Action, *, key: Hashable | None = None, not_before: float = 0.0) -> bool:
        """Queue ``action``; with ``key``, replace a queued job of the same key. False once closed."""
        with self._cond:
            if self._closing:
                return False
            queued = self._keyed.get(key) if key is not None else None
            if queued is not None:
                queued.action = action  # latest wins, keeping its place and its time
            else:
                job = _Job(action, key, not_before)
                self._jobs.append(job)
                if key is not None:
                    self._keyed[key] = job
            self._cond.notify_all()
            return True

    def pending(self) -> int:
        """Jobs queued or running."""
        with self._cond:
            return len(self._jobs) + (1 if self._busy else 0)

    def flush(self, timeout: float = 30.0) -> bool:
        """Run every queued job now (waits included) and wait until none is left; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            for job in self._jobs:
                job.not_before = 0.0
            self._cond.notify_all()
            while self._jobs or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float) -> int:
        """Stop taking jobs, send what is queued for at most ``timeout`` seconds; returns how many were dropped."""
        with self._cond:
            self._closing = True
        self.flush(timeout)
        with self._cond:
            dropped = len(self._jobs) + (1 if self._busy else 0)
            self._jobs.clear()
            self._keyed.clear()
            self._cond.notify_all()
        self._thread.join(timeout=0.1 if dropped else 5.0)
        if dropped:
            # The daemon thread may still sit in a Retry-After wait; it dies with the process.
            log.warning("stopping: %d Slack message(s) not sent within %.0f s", dropped, timeout)
        return dropped

    def _next(self) -> Action | None:
        """The first ready job, waiting for one; None once closed and empty."""
        with self._cond:
            while True:
                now = time.monotonic()
                for i, job in enumerate(self._jobs):
                    if job.not_before <= now:
                        del self._jobs[i]
                        if job.key is not None:
                            self._keyed.pop(job.key, None)
                        self._busy = True
                        return job.action
                if self._closing and not self._jobs:
                    return None
                wake = min((j.not_before for j in self._jobs), default=None)
                self._cond.wait(None if wake is None else max(0.0, wake - now))

    def _serve(self) -> None:
        while True:
            action = self._next()
            if action is None:
                return
            try:
                action()
            except Exception:
                # Every job already guards its own errors; this keeps the one sender alive whatever happens.
                log.warning("a queued Slack call failed", exc_info=True)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
