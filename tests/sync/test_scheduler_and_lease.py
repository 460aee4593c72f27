"""The tick, the in-process dispatcher, "Sync now" during a run, and the lease as a fence."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import update

from flows.export import export_messages
from models import accounts as account_queries
from models.clock import utcnow
from models.db import session_scope
from models.tables import EmailAccount
from sync.engine import Outcome, sync_account
from sync.scheduler import HEARTBEAT_NAME, Clock, LocalDispatcher
from tests.support.mail import make_message

WHEN = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)


def test_tick_claims_due_accounts_once_and_syncs_them(mailbox, connect, deps):
    mailbox.append("INBOX", make_message(subject="via tick"), date=WHEN)
    account = connect(start="1m")
    dispatcher = LocalDispatcher(deps, workers=2, slice_seconds=None)
    clock = Clock(deps, dispatcher, tick_seconds=0.2)
    assert clock.tick() == [account]
    assert clock.tick() == []  # claimed: not due again while it runs
    dispatcher.shutdown()
    assert [r["subject"] for r in export_messages(deps.db, account_id=account)] == ["via tick"]
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row.state == "active"
        assert row.next_sync_at > utcnow() + dt.timedelta(seconds=deps.config.poll_seconds - 5)
        assert account_queries.last_heartbeat(session, name=HEARTBEAT_NAME) is not None


def test_sync_now_pressed_during_a_run_runs_again_right_after(mailbox, connect, deps):
    account = connect(start="now")
    with session_scope(deps.db) as session:
        token = account_queries.acquire_lease(session, account_id=account, owner="someone-else", ttl=60)
    with session_scope(deps.db) as session:
        account_queries.request_sync_now(session, account_id=account)  # a run holds the lease: remember it
        assert session.get(EmailAccount, account).sync_requested is True
    assert sync_account(deps, account) is Outcome.BUSY
    with session_scope(deps.db) as session:
        account_queries.release_lease(session, account_id=account, owner="someone-else", token=token)
    assert sync_account(deps, account) is Outcome.DONE
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row.sync_requested is False
        assert row.next_sync_at <= utcnow()  # due at once, not after the poll interval


def test_a_process_that_lost_its_lease_writes_nothing(mailbox, connect, deps, notifier):
    mailbox.append("INBOX", make_message(subject="never written"), date=WHEN)
    account = connect(start="1m")
    stolen = []

    def steal(report):
        # Simulate a stall past the lease: it expires and another process takes the account.
        with session_scope(deps.db) as session:
            session.execute(
                update(EmailAccount).where(EmailAccount.id == account).values(lease_until=utcnow() - dt.timedelta(1))
            )
        with session_scope(deps.db) as session:
            stolen.append(account_queries.acquire_lease(session, account_id=account, owner="thief", ttl=60))

    notifier.sync_started = steal
    assert sync_account(deps, account) is Outcome.FAILED
    assert stolen and stolen[0] is not None
    assert list(export_messages(deps.db, account_id=account)) == []
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row.lease_owner == "thief"  # the loser did not release someone else's lease


def test_worker_clock_runs_in_the_background(mailbox, connect, deps):
    mailbox.append("INBOX", make_message(subject="background"), date=WHEN)
    account = connect(start="1m")
    dispatcher = LocalDispatcher(deps, workers=1, slice_seconds=5)
    clock = Clock(deps, dispatcher, tick_seconds=0.2)
    clock.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not list(export_messages(deps.db, account_id=account)):
            time.sleep(0.1)
    finally:
        clock.stop()
        dispatcher.shutdown()
    assert [r["subject"] for r in export_messages(deps.db, account_id=account)] == ["background"]


def test_a_pause_during_a_run_is_not_undone_by_its_end(mailbox, connect, deps, notifier):
    from flows import lifecycle

    mailbox.append("INBOX", make_message(subject="x"), date=WHEN)
    account = connect(start="1m")
    with session_scope(deps.db) as session:
        owner = session.get(EmailAccount, account)
        team_id, user_id = owner.team_id, owner.user_id

    def pause_now(report):
        lifecycle.pause(deps.db, account, team_id=team_id, user_id=user_id)

    notifier.sync_started = pause_now
    assert sync_account(deps, account) is Outcome.DONE
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert (row.state, row.next_sync_at) == ("paused", None)
