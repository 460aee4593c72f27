"""The folder plan decides every pass from stored state and STATUS alone: no server, no database."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from sync.folder_plan import FolderPlan, FolderStatus, StoredFolder, plan_folder

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)
HOUR = 3600.0

SYNCED = StoredFolder(
    uidvalidity=7,
    fwd_uid=99,
    backfill_done=True,
    last_uidnext=100,
    last_messages=80,
    highestmodseq=500,
    last_flag_pass_at=NOW - dt.timedelta(minutes=5),
)
SAME = FolderStatus(uidnext=100, uidvalidity=7, messages=80, highestmodseq=500)


def plan(
    stored: StoredFolder = SYNCED, status: FolderStatus = SAME, *, condstore: bool = True, **kw: object
) -> FolderPlan:
    options: dict[str, object] = {"has_start_date": False, "now": NOW, "flag_pass_seconds": HOUR}
    options.update(kw)
    return plan_folder(stored, status, condstore=condstore, **options)  # type: ignore[arg-type]


def test_an_unchanged_folder_costs_its_status_only():
    p = plan()
    assert p.unchanged and p.skip
    assert not (p.initialise or p.new_mail or p.condstore_flags or p.check_deletions or p.backfill)
    assert p.expunged == 0


def test_without_condstore_a_flag_pass_comes_due_after_its_interval():
    recent = plan(condstore=False)
    assert recent.skip and not recent.flag_pass_due
    stale = dataclasses.replace(SYNCED, last_flag_pass_at=NOW - dt.timedelta(seconds=HOUR))
    due = plan(stale, condstore=False)
    assert due.unchanged and due.flag_pass_due and not due.skip
    never = plan(dataclasses.replace(SYNCED, last_flag_pass_at=None), condstore=False)
    assert never.flag_pass_due
    assert not plan(stale, condstore=True).flag_pass_due  # CONDSTORE tells flag changes through MODSEQ


def test_new_mail_raises_uidnext_and_messages_alike():
    p = plan(status=dataclasses.replace(SAME, uidnext=103, messages=83, highestmodseq=503))
    assert p.new_mail and not p.unchanged
    assert p.expunged == 0 and not p.check_deletions  # appends alone: no deletion check
    assert p.condstore_flags  # MODSEQ moved: flags are asked CHANGEDSINCE


@pytest.mark.parametrize(
    ("uidnext", "messages", "expunged"),
    [(100, 78, 2), (105, 83, 2), (100, 80, 0), (101, 80, 1)],
)
def test_expunges_are_counted_from_uidnext_and_messages(uidnext, messages, expunged):
    p = plan(status=FolderStatus(uidnext=uidnext, uidvalidity=7, messages=messages, highestmodseq=600))
    assert p.expunged == expunged
    assert p.check_deletions is (expunged > 0)


def test_a_folder_never_statused_checks_deletions():
    p = plan(dataclasses.replace(SYNCED, last_uidnext=None, last_messages=None))
    assert p.expunged is None and p.check_deletions and not p.unchanged


def test_a_flag_only_change_with_condstore_is_not_unchanged():
    p = plan(status=dataclasses.replace(SAME, highestmodseq=501))
    assert not p.unchanged and p.condstore_flags and not p.new_mail and not p.check_deletions


def test_a_first_sight_records_the_boundary_and_backfills_only_with_a_start_date():
    fresh = StoredFolder(None, 0, False, None, None, None, None)
    status = FolderStatus(uidnext=50, uidvalidity=9, messages=49, highestmodseq=None)
    without = plan(fresh, status, condstore=False)
    assert without.initialise and not without.rematch
    assert not without.backfill and not without.new_mail  # everything below UIDNEXT is the past
    with_start = plan(fresh, status, condstore=False, has_start_date=True)
    assert with_start.backfill and not with_start.skip


def test_a_uidvalidity_change_rematches_whatever_the_start_date():
    p = plan(status=dataclasses.replace(SAME, uidvalidity=8))
    assert p.initialise and p.rematch and p.backfill and not p.unchanged
    assert not p.condstore_flags  # the stored MODSEQ belongs to the old UIDVALIDITY


def test_a_pending_backfill_is_never_unchanged():
    p = plan(dataclasses.replace(SYNCED, backfill_done=False))
    assert p.backfill and not p.unchanged and not p.skip


def test_status_parses_imapclient_answers():
    raw = {b"UIDNEXT": 4294967295, b"UIDVALIDITY": 1, b"MESSAGES": 0, b"HIGHESTMODSEQ": 2**63 - 1}
    assert FolderStatus.parse(raw) == FolderStatus(4294967295, 1, 0, 2**63 - 1)
    assert FolderStatus.parse({b"UIDNEXT": 1, b"UIDVALIDITY": 1, b"MESSAGES": 0}).highestmodseq is None
