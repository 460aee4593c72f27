"""Pruning the bookkeeping tables that would otherwise grow forever: Slack event ids, old runs, failed connects;
and the leftovers of sign-ins abandoned half way (a verifier, or tokens awaiting a choice nobody made)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from models import connect_failures, sending, slack_events
from models.clock import utcnow
from models.states import RunStatus
from models.tables import EmailAccount, SetupSession, SyncRun


@dataclass(frozen=True)
class Pruned:
    """How many rows one pruning removed."""

    slack_events: int
    runs: int
    connect_failures: int = 0
    sign_ins: int = 0
    tracking_events: int = 0


def prune_finished_runs(session: Session, age: dt.timedelta) -> int:
    """Delete runs that finished longer ago than age; a run an account still points at is kept whatever its age."""
    current = select(EmailAccount.current_run_id).where(col(EmailAccount.current_run_id).is_not(None))
    result = session.exec(
        delete(SyncRun).where(
            col(SyncRun.finished_at).is_not(None),
            col(SyncRun.finished_at) < utcnow() - age,
            col(SyncRun.status) != RunStatus.RUNNING,
            col(SyncRun.id).not_in(current),
        )
    )
    return int(result.rowcount or 0)


def prune(
    session: Session,
    *,
    slack_events_older_than: dt.timedelta,
    runs_older_than: dt.timedelta,
    connect_failures_older_than: dt.timedelta = dt.timedelta(days=1),
    tracking_events_older_than: dt.timedelta = dt.timedelta(days=90),
) -> Pruned:
    """One pass over every bookkeeping table."""
    return Pruned(
        slack_events=slack_events.forget_older_than(session, slack_events_older_than),
        runs=prune_finished_runs(session, runs_older_than),
        connect_failures=connect_failures.prune_failures(session, before=utcnow() - connect_failures_older_than),
        sign_ins=forget_abandoned_sign_ins(session),
        tracking_events=sending.prune_events(session, before=utcnow() - tracking_events_older_than),
    )


def forget_abandoned_sign_ins(session: Session) -> int:
    """Drop the sign-in state of links that expired: an unfinished sign-in must not keep tokens around."""
    result = session.exec(
        update(SetupSession)
        .where(col(SetupSession.oauth_flow_encrypted).is_not(None), col(SetupSession.expires_at) < utcnow())
        .values(oauth_state_hash=None, oauth_flow_encrypted=None)
    )
    return int(result.rowcount or 0)
