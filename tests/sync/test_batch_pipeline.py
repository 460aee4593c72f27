"""Batches overlap with the server: the next header FETCH goes out early and a commit waits one batch.

Small batches make every message its own turn of the pipeline, against the real test Dovecot.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select

from flows.export import export_messages
from models.db import session_scope
from models.tables import Folder, Message, MessageLocation
from sync.engine import Outcome, sync_account
from sync.slice_context import BudgetExhausted, SliceContext
from tests.support.mail import make_message
from tests.sync.test_engine_hardening import clear_rawlog, rawlog_commands

WHEN = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)


def locations_per_message(deps: Any, account: int) -> dict[str, int]:
    with session_scope(deps.db) as session:
        rows = session.execute(
            select(Message.message_id, func.count(MessageLocation.id))
            .join(MessageLocation, MessageLocation.message_id == Message.id)
            .where(Message.account_id == account)
            .group_by(Message.message_id)
        ).all()
    return dict(rows)


def test_a_copy_in_the_next_batch_finds_the_message_not_yet_committed(mailbox, connect, run_sync, deps):
    deps.config.batch_size = 2
    twin = make_message(subject="twin", message_id="<twin@example.com>")
    # Newest first: the batches are [copy, other] then [first copy]; the second batch is classified
    # while the first one still waits for its commit.
    mailbox.append("INBOX", twin, date=WHEN)
    mailbox.append("INBOX", make_message(subject="other", message_id="<other@example.com>"), date=WHEN)
    mailbox.append("INBOX", twin, date=WHEN)
    for i in range(5):
        mailbox.append("INBOX", make_message(subject=f"filler {i}"), date=WHEN)
    account = connect(start="1m")
    assert run_sync(account) is Outcome.DONE
    assert locations_per_message(deps, account)["<twin@example.com>"] == 2
    assert sorted(r["subject"] for r in export_messages(deps.db, account_id=account)) == [
        "filler 0",
        "filler 1",
        "filler 2",
        "filler 3",
        "filler 4",
        "other",
        "twin",
    ]
    with session_scope(deps.db) as session:
        (folder,) = session.execute(select(Folder).where(Folder.account_id == account, Folder.name == "INBOX")).one()
        assert folder.backfill_done and folder.backfill_hi == 0
    assert run_sync(account) is Outcome.DONE  # nothing new, nothing doubled
    assert sum(locations_per_message(deps, account).values()) == 8


def test_batches_pipelined_ahead_survive_a_slice_ending(mailbox, connect, run_sync, deps, monkeypatch):
    """The slice ends with a header FETCH already sent and a batch waiting: it commits, then logs out."""
    deps.config.batch_size = 2
    for i in range(7):
        mailbox.append("INBOX", make_message(subject=f"ahead {i}"), date=WHEN)
    calls = {"n": 0}
    real = SliceContext.check_budget

    def budget_after_two(self: SliceContext) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise BudgetExhausted  # a header FETCH for this batch is already on the wire
        real(self)

    monkeypatch.setattr(SliceContext, "check_budget", budget_after_two)
    account = connect(start="1m")
    clear_rawlog(mailbox)
    assert sync_account(deps, account) is Outcome.MORE
    # The two batches of the first slice are committed, the one sent ahead is not.
    assert len(list(export_messages(deps.db, account_id=account))) == 4
    assert run_sync(account) is Outcome.DONE
    subjects = sorted(r["subject"] for r in export_messages(deps.db, account_id=account))
    assert subjects == [f"ahead {i}" for i in range(7)]
    header_fetches = [c for c in rawlog_commands(mailbox) if "BODYSTRUCTURE" in c.upper()]
    assert len(header_fetches) == 4 + 1  # 4 batches of 2, and the third sent ahead twice


def test_a_single_part_body_is_cut_only_after_the_blank_line():
    from sync.fetch_pipeline import after_header as _after_header

    whole = b"Subject: x\r\n\r\nbody\r\n"
    assert _after_header(whole, len(b"Subject: x\r\n\r\n"))
    assert not _after_header(whole, len(b"Subject: x\r\n"))  # a header FETCH that does not match
    assert not _after_header(whole, 0)
    assert _after_header(b"Subject: x\r\n", 12)  # no body at all
    assert _after_header(b"Subject: x\n\nbody", 12)
