"""A no-change poll leaves no trace: no sync_run row, no notifier call, no state written (SQLite and PostgreSQL).

Every SQL statement the engine sends is recorded, so "no row" and "no state flip" are checked on the wire,
not only by counting rows afterwards.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select

from models.db import session_scope
from models.tables import EmailAccount, Message, SyncRun
from sync.engine import Outcome, sync_account
from tests.support.mail import make_message

IDLE_POLLS = 5
WHEN = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
_SET_STATE = re.compile(r"UPDATE email_account SET (.*?) WHERE", re.I | re.S)


class Statements:
    """SQL statements sent through one engine."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def clear(self) -> None:
        self.seen.clear()

    def run_inserts(self) -> list[str]:
        return [s for s in self.seen if s.lstrip().upper().startswith("INSERT INTO SYNC_RUN")]

    def state_writes(self) -> list[str]:
        return [s for s in self.seen if any("state" in m.group(1) for m in _SET_STATE.finditer(s))]


@pytest.fixture
def statements(deps) -> Iterator[Statements]:
    recorder = Statements()

    def record(conn, cursor, statement, parameters, context, executemany):
        recorder.seen.append(statement)

    event.listen(deps.db, "before_cursor_execute", record)
    yield recorder
    event.remove(deps.db, "before_cursor_execute", record)


def run_rows(deps, account: int) -> list[SyncRun]:
    with session_scope(deps.db) as session:
        return list(
            session.execute(select(SyncRun).where(SyncRun.account_id == account).order_by(SyncRun.id)).scalars()
        )


def account_row(deps, account: int) -> EmailAccount:
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        assert row is not None
        return row


def idle_polls(deps, account: int, statements: Statements) -> None:
    for _ in range(IDLE_POLLS):
        before = account_row(deps, account).last_synced_at
        assert sync_account(deps, account) is Outcome.DONE
        after = account_row(deps, account)
        # Cursors and schedule are still kept up to date: updates, not rows.
        assert after.last_synced_at is not None and (before is None or after.last_synced_at >= before)
        assert after.next_sync_at is not None and after.next_sync_at > after.last_synced_at
    assert statements.run_inserts() == []
    assert statements.state_writes() == []


def test_idle_polls_leave_no_trace_and_a_delivery_makes_one_run(deps, mailbox, connect, run_sync, notifier, statements):
    mailbox.append("INBOX", make_message(subject="before setup"), date=WHEN)
    mailbox.create("Archive")
    account = connect(start="1m")
    assert run_sync(account) is Outcome.DONE  # the past sync: a run, announced
    assert [r.kind for r in run_rows(deps, account)] == ["past"]
    assert notifier.kinds()[0] == "started" and notifier.kinds()[-1] == "completed"

    notifier.events.clear()
    statements.clear()
    idle_polls(deps, account, statements)
    assert notifier.events == []
    assert len(run_rows(deps, account)) == 1
    assert account_row(deps, account).state == "active"

    mailbox.append("INBOX", make_message(subject="news"), date=dt.datetime.now(dt.UTC))
    assert sync_account(deps, account) is Outcome.DONE
    rows = run_rows(deps, account)
    assert len(rows) == 2
    run = rows[-1]
    assert (run.kind, run.status, run.slices, run.processed, run.stored) == ("incremental", "done", 1, 1, 1)
    kinds = notifier.kinds()
    assert kinds.count("started") == 1 and kinds[-1] == "completed" and "failed" not in kinds
    assert {e[1].run_id for e in notifier.events} == {run.id}
    assert notifier.events[-1][1].stored == 1
    row = account_row(deps, account)
    assert (row.state, row.current_run_id) == ("active", None)

    notifier.events.clear()
    statements.clear()
    idle_polls(deps, account, statements)  # quiet again once the news is stored
    assert notifier.events == [] and len(run_rows(deps, account)) == 2


def test_a_flag_change_and_an_expunge_are_events(deps, mailbox, connect, run_sync, notifier, statements):
    uid = mailbox.append("INBOX", make_message(subject="to flag"), date=WHEN)
    gone = mailbox.append("INBOX", make_message(subject="to delete"), date=WHEN)
    account = connect(start="1m")
    assert run_sync(account) is Outcome.DONE
    notifier.events.clear()
    statements.clear()
    idle_polls(deps, account, statements)
    assert notifier.events == []

    client = mailbox.server.client(mailbox.user, mailbox.password)
    try:
        client.select_folder("INBOX")
        client.add_flags([uid], [b"\\Flagged"])  # CONDSTORE: HIGHESTMODSEQ moves, STATUS counts do not
    finally:
        client.logout()
    assert sync_account(deps, account) is Outcome.DONE
    assert len(run_rows(deps, account)) == 2
    assert notifier.kinds().count("completed") == 1

    client = mailbox.server.client(mailbox.user, mailbox.password)
    try:
        client.select_folder("INBOX")
        client.delete_messages([gone])
        client.expunge()
    finally:
        client.logout()
    assert sync_account(deps, account) is Outcome.DONE
    rows = run_rows(deps, account)
    assert len(rows) == 3 and rows[-1].status == "done"
    assert notifier.kinds().count("completed") == 2
    with session_scope(deps.db) as session:
        subjects = session.execute(select(Message.subject).where(Message.account_id == account)).scalars().all()
    assert subjects == ["to flag"]


def test_an_error_on_a_quiet_poll_is_recorded_once_and_the_recovery_told(
    deps, mailbox, connect, run_sync, notifier, statements
):
    account = connect(start="now")
    assert run_sync(account) is Outcome.DONE
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        port, row.imap_port = row.imap_port, 1  # nothing listens there
        session.add(row)
    notifier.events.clear()
    assert sync_account(deps, account) is Outcome.FAILED
    assert sync_account(deps, account) is Outcome.FAILED  # the retry continues the same run
    rows = run_rows(deps, account)
    failing = rows[-1]
    assert failing.status == "running" and failing.slices == 2
    assert notifier.kinds() == ["failed", "failed"]
    with session_scope(deps.db) as session:
        row = session.get(EmailAccount, account)
        row.imap_port, row.next_sync_at = port, None
        session.add(row)
    assert sync_account(deps, account) is Outcome.DONE
    assert [r.id for r in run_rows(deps, account)] == [r.id for r in rows]  # the recovery closes that run
    assert notifier.kinds()[-2:] == ["completed", "recovered"]
    assert account_row(deps, account).state == "active"
    statements.clear()
    notifier.events.clear()
    idle_polls(deps, account, statements)
    assert notifier.events == []


def test_the_count_of_runs_is_what_happened(deps, mailbox, connect, run_sync):
    """The rows of a quiet account over many polls: one per event, never one per poll."""
    account = connect(start="now")
    for _ in range(3):
        assert run_sync(account) is Outcome.DONE
    with session_scope(deps.db) as session:
        count = session.execute(select(func.count()).select_from(SyncRun).where(SyncRun.account_id == account)).scalar()
    assert count == 1  # the first sync of a new account is recorded; the polls after it are not


def test_a_run_row_rolled_back_with_its_batch_is_written_with_the_error(
    deps, mailbox, connect, run_sync, notifier, monkeypatch
):
    account = connect(start="now")
    assert run_sync(account) is Outcome.DONE
    first = run_rows(deps, account)
    mailbox.append("INBOX", make_message(subject="news"), date=dt.datetime.now(dt.UTC))

    def broken(session, rows):
        raise RuntimeError("the disk is full")

    # The batch's transaction inserted the run's row and then failed: both roll back together.
    monkeypatch.setattr("models.mailstore.insert_locations", broken)
    assert sync_account(deps, account) is Outcome.FAILED
    monkeypatch.undo()
    rows = run_rows(deps, account)
    assert len(rows) == len(first) + 1
    failing = rows[-1]
    assert (failing.status, failing.stored) == ("running", 0)
    row = account_row(deps, account)
    assert (row.state, row.current_run_id) == ("error", failing.id)
    assert notifier.kinds()[-1] == "failed" and notifier.events[-1][1].run_id == failing.id

    assert sync_account(deps, account) is Outcome.DONE  # the retry continues that run and stores the news
    rows = run_rows(deps, account)
    assert [r.id for r in rows][-1] == failing.id and (rows[-1].status, rows[-1].stored) == ("done", 1)
    assert notifier.kinds()[-2:] == ["completed", "recovered"]
