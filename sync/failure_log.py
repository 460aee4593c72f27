"""A failure that repeats every few seconds (a dead database under the tick) logged once, then reminders."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Engine

from models.db_errors import describe_database_error

FIRST_REMINDER_SECONDS = 60.0
MAX_REMINDER_SECONDS = 3600.0  # the interval doubles up to an hour


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class FailureReminder:
    """The first failure is logged (a traceback only when the cause is not a known one), then a reminder
    after 1 min, 2, 4... up to every hour, and one line when it works again."""

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        *,
        describe: Callable[[BaseException], str | None] = lambda _exc: None,
        first_reminder: float = FIRST_REMINDER_SECONDS,
        max_interval: float = MAX_REMINDER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.what = what
        self.describe = describe
        self.first_reminder = first_reminder
        self.max_interval = max_interval
        self.clock = clock
        self.failures = 0
        self._since = 0.0
        self._interval = first_reminder
        self._next = 0.0

    def failed(self, exc: BaseException) -> None:
        """Count a failure; log it when it is the first or a reminder is due."""
        now = self.clock()
        self.failures += 1
        cause = self.describe(exc)
        if self.failures == 1:
            self._since, self._interval = now, self.first_reminder
            self._next = now + self._interval
            if cause is not None:
                self.log.error("%s failed: %s", self.what, cause)
            else:  # an unknown failure: its traceback once, to find the bug
                self.log.error("%s failed", self.what, exc_info=exc)
            return
        if now < self._next:
            return
        self._interval = min(self._interval * 2, self.max_interval)
        self._next = now + self._interval
        self.log.error(
            "%s still failing (%d times in %s; next reminder in %s): %s",
            self.what,
            self.failures,
            _duration(now - self._since),
            _duration(self._interval),
            cause or f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
        )

    def recovered(self) -> None:
        """It worked: say so once when it had been failing, and start over."""
        if self.failures:
            self.log.warning(
                "%s works again after %d failures in %s",
                self.what,
                self.failures,
                _duration(self.clock() - self._since),
            )
        self.failures = 0


def database_causes(engine: Engine) -> Callable[[BaseException], str | None]:
    """``describe`` for failures of queries on ``engine``: the one-line cause of a database that cannot be used."""
    url = engine.url.render_as_string(hide_password=True)
    return lambda exc: describe_database_error(exc, url)
