"""What the Slack notifier remembers between calls and processes: the progress message, the last told error."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session

from models.tables import EmailAccount, SyncRun, UserSettings


def progress_message(session: Session, run_id: int) -> tuple[str | None, str | None, dt.datetime | None]:
    """(channel, ts, last edit) of a run's progress message."""
    run = session.get(SyncRun, run_id)
    return (run.slack_channel, run.slack_ts, run.slack_updated_at) if run else (None, None, None)


def save_progress_message(session: Session, run_id: int, *, channel: str, ts: str, updated_at: dt.datetime) -> None:
    """Remember where a run's progress message is and when it was last edited."""
    run = session.get(SyncRun, run_id)
    if run is not None:
        run.slack_channel, run.slack_ts, run.slack_updated_at = channel, ts, updated_at
        session.add(run)


def notification_level(session: Session, *, team_id: str, user_id: str) -> str:
    """everything | errors | nothing (everything when never set)."""
    prefs = session.get(UserSettings, (team_id, user_id))
    return prefs.notification_level if prefs else "everything"


def error_notified(session: Session, account_id: int) -> tuple[str | None, dt.datetime | None]:
    """The error code last told to the owner, and when."""
    account = session.get(EmailAccount, account_id)
    return (account.error_notified_code, account.error_notified_at) if account else (None, None)


def save_error_notified(session: Session, account_id: int, *, code: str | None, at: dt.datetime | None) -> None:
    """Remember (or clear) the error last told to the owner."""
    account = session.get(EmailAccount, account_id)
    if account is not None:
        account.error_notified_code, account.error_notified_at = code, at
        session.add(account)
