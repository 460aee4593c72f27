"""Remembering handled Slack event ids, so a retried delivery is not processed twice."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from models.clock import utcnow
from models.tables import ProcessedSlackEvent


def first_time(session: Session, event_id: str) -> bool:
    """Record the event id; False if it was already recorded (a retry of a handled event)."""
    if session.get(ProcessedSlackEvent, event_id) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(ProcessedSlackEvent(event_id=event_id))
    except IntegrityError:  # two deliveries racing: the other one won
        return False
    return True


def forget_older_than(session: Session, age: dt.timedelta) -> int:
    """Drop ids seen longer ago than age (Slack retries within minutes); return how many went."""
    result = session.exec(delete(ProcessedSlackEvent).where(col(ProcessedSlackEvent.seen_at) < utcnow() - age))
    return int(result.rowcount or 0)
