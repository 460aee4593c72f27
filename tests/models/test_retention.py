"""Bookkeeping tables are pruned on a schedule: old Slack event ids and old finished runs go, the rest stays."""

from __future__ import annotations

import datetime as dt
import time

from sqlmodel import col, select

from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.tables import ConnectFailure, EmailAccount, ProcessedSlackEvent, SentEmail, SyncRun, TrackEvent, TrackToken
from sync.engine import EngineConfig, EngineDeps
from sync.scheduler import Clock, Retention
from tests.conftest import TEST_KEY
from tests.support.mail import RecordingNotifier


class NoDispatch:
    """Records what the tick would sync (nothing is due here)."""

    def __init__(self) -> None:
        self.dispatched: list[int] = []

    def dispatch(self, account_id: int) -> None:
        self.dispatched.append(account_id)

    def shutdown(self) -> None:
        pass


def add_account(session, user_id: str) -> EmailAccount:
    account = EmailAccount(
        team_id="T1",
        user_id=user_id,
        email=f"{user_id}@example.com",
        imap_host="imap.example.com",
        username=user_id,
        secret_encrypted="x",
        state="paused",
    )
    session.add(account)
    session.flush()
    return account


def add_run(session, account: EmailAccount, *, finished_days_ago: float | None, status: str = "done") -> int:
    now = utcnow()
    run = SyncRun(
        account_id=account.id,
        status=status,
        started_at=now - dt.timedelta(days=(finished_days_ago or 0) + 1),
        finished_at=None if finished_days_ago is None else now - dt.timedelta(days=finished_days_ago),
    )
    session.add(run)
    session.flush()
    return run.id


def remaining(db) -> tuple[set[int], set[str]]:
    with session_scope(db, readonly=True) as session:
        runs = set(session.exec(select(SyncRun.id)).all())
        events = set(session.exec(select(ProcessedSlackEvent.event_id)).all())
    return runs, events


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_old_bookkeeping_rows_are_pruned_on_a_schedule(db):
    now = utcnow()
    with session_scope(db) as session:
        quiet, busy = add_account(session, "U1"), add_account(session, "U2")
        old_done = add_run(session, quiet, finished_days_ago=40)
        old_failed = add_run(session, quiet, finished_days_ago=31, status="failed")
        recent = add_run(session, quiet, finished_days_ago=2)
        still_running = add_run(session, busy, finished_days_ago=None, status="running")
        old_but_current = add_run(session, busy, finished_days_ago=60)
        busy.current_run_id = old_but_current  # an account still pointing at a run keeps it
        session.add(busy)
        session.add(ProcessedSlackEvent(event_id="Ev-old", seen_at=now - dt.timedelta(hours=30)))
        session.add(ProcessedSlackEvent(event_id="Ev-new", seen_at=now - dt.timedelta(minutes=5)))
    deps = EngineDeps(
        db=db, secrets=SecretBox([TEST_KEY]), notifier=RecordingNotifier(), config=EngineConfig(), owner="test"
    )
    retention = Retention(slack_events=dt.timedelta(hours=24), runs=dt.timedelta(days=30), every_seconds=0.3)
    clock = Clock(deps, NoDispatch(), tick_seconds=60, retention=retention)
    clock.start()
    try:
        keep = {recent, still_running, old_but_current}
        wait_until(lambda: remaining(db) == (keep, {"Ev-new"}))
        assert old_done not in remaining(db)[0] and old_failed not in remaining(db)[0]
        # The job comes back by itself: rows that age later go on a later run.
        with session_scope(db) as session:
            session.add(ProcessedSlackEvent(event_id="Ev-later", seen_at=utcnow() - dt.timedelta(days=2)))
            late = add_run(session, session.get(EmailAccount, quiet.id), finished_days_ago=45)
        assert late not in keep
        wait_until(lambda: remaining(db) == (keep, {"Ev-new"}))
    finally:
        clock.stop()
    with session_scope(db, readonly=True) as session:
        assert session.get(EmailAccount, busy.id).current_run_id == old_but_current
        assert session.exec(select(SyncRun).where(col(SyncRun.id) == still_running)).one().status == "running"


def test_failed_connect_attempts_are_pruned_after_the_limits_stop_looking(db):
    now = utcnow()
    with session_scope(db) as session:
        for hours in (30, 2):
            session.add(
                ConnectFailure(
                    team_id="T1",
                    user_id="U1",
                    host="imap.example.com",
                    code="auth_failed",
                    at=now - dt.timedelta(hours=hours),
                )
            )
    deps = EngineDeps(
        db=db, secrets=SecretBox([TEST_KEY]), notifier=RecordingNotifier(), config=EngineConfig(), owner="test"
    )
    pruned = Clock(deps, NoDispatch(), tick_seconds=60, retention=Retention()).prune()
    assert pruned.connect_failures == 1
    with session_scope(db, readonly=True) as session:
        assert [f.at > now - dt.timedelta(hours=3) for f in session.exec(select(ConnectFailure)).all()] == [True]


def test_tracking_events_are_pruned_after_90_days_and_the_sent_email_stays(db):
    now = utcnow()
    with session_scope(db) as session:
        account = add_account(session, "U9")
        sent = SentEmail(
            team_id="T1", user_id="U9", account_id=account.id, compose_key="V1", message_id="<m@x>", thread_key="<m@x>"
        )
        session.add(sent)
        session.flush()
        token = TrackToken(sent_email_id=sent.id, token="t.x", recipient="a@x.test")
        session.add(token)
        session.flush()
        for days in (91, 89):
            session.add(
                TrackEvent(
                    sent_email_id=sent.id, token_id=token.id, kind="open", human=True, at=now - dt.timedelta(days=days)
                )
            )
    deps = EngineDeps(
        db=db, secrets=SecretBox([TEST_KEY]), notifier=RecordingNotifier(), config=EngineConfig(), owner="test"
    )
    pruned = Clock(deps, NoDispatch(), tick_seconds=60, retention=Retention()).prune()
    assert pruned.tracking_events == 1
    with session_scope(db, readonly=True) as session:
        assert [e.at > now - dt.timedelta(days=90) for e in session.exec(select(TrackEvent)).all()] == [True]
        assert len(session.exec(select(SentEmail)).all()) == 1
