"""Queries on failed connection tests: record one, count recent ones per person and per server, claim a link."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from models.clock import utcnow
from models.tables import ConnectFailure, SetupSession


def record_failure(session: Session, *, team_id: str, user_id: str, host: str, code: str) -> None:
    """Remember one failed attempt (who, which server, which kind of failure; never what was typed)."""
    session.add(ConnectFailure(team_id=team_id, user_id=user_id, host=host[:255], code=code[:32]))


def failures_since(session: Session, since: dt.datetime, *, team_id: str, user_id: str, host: str) -> tuple[int, int]:
    """(failures of this person, failures against this server) since a moment."""
    recent = col(ConnectFailure.at) >= since
    by_person = session.exec(
        select(func.count())
        .select_from(ConnectFailure)
        .where(recent, col(ConnectFailure.team_id) == team_id, col(ConnectFailure.user_id) == user_id)
    ).one()
    by_host = session.exec(
        select(func.count()).select_from(ConnectFailure).where(recent, col(ConnectFailure.host) == host)
    ).one()
    return int(by_person), int(by_host)


def oldest_failure_since(session: Session, since: dt.datetime, *, team_id: str, user_id: str, host: str) -> dt.datetime:
    """When the oldest failure counted against this person or this server happened (for "try again in …")."""
    oldest = session.exec(
        select(func.min(ConnectFailure.at)).where(
            col(ConnectFailure.at) >= since,
            ((col(ConnectFailure.team_id) == team_id) & (col(ConnectFailure.user_id) == user_id))
            | (col(ConnectFailure.host) == host),
        )
    ).one()
    return oldest or utcnow()


def count_link_failure(session: Session, session_id: int, *, limit: int) -> bool:
    """Count one failure against a link; True when that used the link up (it is locked from then on)."""
    row = session.get(SetupSession, session_id)
    if row is None:
        return False
    row.failed_attempts += 1
    if row.failed_attempts >= limit and row.used_at is None:
        row.used_at = utcnow()
        row.locked_reason = "failures"
    session.add(row)
    return row.locked_reason == "failures"


def claim_link(session: Session, session_id: int, token_hash: str) -> bool:
    """Use a link up at once, or report that someone else did (a conditional UPDATE: two submits, one winner)."""
    result = session.execute(
        update(SetupSession)
        .where(
            col(SetupSession.id) == session_id,
            col(SetupSession.token_hash) == token_hash,
            col(SetupSession.used_at).is_(None),
        )
        .values(used_at=utcnow())
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def prune_failures(session: Session, *, before: dt.datetime) -> int:
    """Forget failures older than the limits look back; return how many."""
    result = session.execute(delete(ConnectFailure).where(col(ConnectFailure.at) < before))
    return int(result.rowcount)  # type: ignore[attr-defined]
