"""The health answer of a process (/healthz): the database answers and the clock ticked recently."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine

from models import accounts as account_queries
from models.clock import utcnow
from models.db import ping, session_scope
from sync.scheduler import HEARTBEAT_NAME


def clock_max_age(tick_seconds: float) -> dt.timedelta:
    """How old the last tick may be before the clock counts as stale (a few missed ticks, at least 30 s)."""
    return dt.timedelta(seconds=max(30.0, tick_seconds * 6))


def health_report(db: Engine, max_age: dt.timedelta) -> tuple[bool, dict[str, object]]:
    """(healthy, what was checked) for a JSON answer."""
    if not ping(db):
        return False, {"database": "down"}
    with session_scope(db, readonly=True) as session:
        ticked = account_queries.last_heartbeat(session, name=HEARTBEAT_NAME)
    fresh = ticked is not None and utcnow() - ticked <= max_age
    return fresh, {
        "database": "up",
        "last_tick": ticked.isoformat() if ticked else None,
        "clock": "ok" if fresh else "stale",
    }
