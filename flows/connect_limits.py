"""Limits on connection tests from the connect page: failures per link, per person and per mail server.

Without them the page is a password-guessing service (49 wrong passwords then the right one went
through one link in half a second) and, with fresh links, a scanner. A typo still costs nothing:
only repeated failures count, and a success never does.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

from sqlalchemy import Engine

from models import connect_failures as failure_queries
from models.clock import utcnow
from models.db import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptLimits:
    """How many failed connection tests are allowed within `window`."""

    per_link: int = 5
    per_person: int = 10
    per_host: int = 30
    window: dt.timedelta = dt.timedelta(minutes=15)


class TooManyAttempts(Exception):
    """A person or a server had too many failed attempts recently; the message says when to try again."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_allowed(db: Engine, limits: AttemptLimits, *, team_id: str, user_id: str, host: str) -> None:
    """Raise TooManyAttempts when this person or this server is over its limit."""
    since = utcnow() - limits.window
    with session_scope(db, readonly=True) as session:
        by_person, by_host = failure_queries.failures_since(session, since, team_id=team_id, user_id=user_id, host=host)
        if by_person < limits.per_person and by_host < limits.per_host:
            return
        oldest = failure_queries.oldest_failure_since(session, since, team_id=team_id, user_id=user_id, host=host)
    minutes = max(1, math.ceil((oldest + limits.window - utcnow()).total_seconds() / 60))
    if by_person >= limits.per_person:
        raise TooManyAttempts(
            f"Too many failed attempts from you in the last {_minutes(limits.window)}. "
            f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        )
    raise TooManyAttempts(
        f"Too many failed sign-ins to {host} recently. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


def record_failure(
    db: Engine, limits: AttemptLimits, *, session_id: int, team_id: str, user_id: str, host: str, code: str
) -> bool:
    """Count a failed attempt against the link, the person and the server; True when the link is now used up."""
    with session_scope(db) as session:
        failure_queries.record_failure(session, team_id=team_id, user_id=user_id, host=host, code=code)
        locked = failure_queries.count_link_failure(session, session_id, limit=limits.per_link)
    # Who and where, never what was typed: the password and the server's words stay out of logs.
    log.warning("connect attempt failed: team=%s user=%s host=%s code=%s", team_id, user_id, host, code)
    return locked


def _minutes(window: dt.timedelta) -> str:
    return f"{int(window.total_seconds() // 60)} minutes"
