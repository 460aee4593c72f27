"""A sync against a Dovecot whose UIDVALIDITY, UIDs and MODSEQ are near their limits (issue 8, defect 1)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from models.db import session_scope
from models.tables import Folder, MessageLocation
from sync.engine import Outcome
from tests.support.mail import make_message
from tests.sync.test_engine_hardening import clear_rawlog, rawlog_commands

UIDVALIDITY = 2**32 - 1
# Dovecot 2.3 keeps UIDNEXT in 32 bits, so the highest UID it gives out is 2^32-2 (see update_mailbox).
TOP_UID = 2**32 - 2
# RFC 7162 caps MODSEQ at 2^63-1. Dovecot does not stop there (a change at 2^63-1 reports 2^63), so the
# tests set the largest value below the cap from which their own changes end exactly on it.
MAX_MODSEQ = 2**63 - 1


def server_status(mailbox: Any) -> dict[bytes, int]:
    client = mailbox.server.client(mailbox.user, mailbox.password)
    try:
        return dict(client.folder_status("INBOX", [b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ"]))
    finally:
        client.logout()


def inbox_state(deps: Any, account: int) -> tuple[Folder, dict[int, tuple[int, str]]]:
    """The INBOX row and its locations as {uid: (uidvalidity, flags)}."""
    with session_scope(deps.db) as session:
        inbox = select(Folder).where(col(Folder.account_id) == account, col(Folder.name) == "INBOX")
        folder = session.execute(inbox).scalar_one()
        rows = session.execute(
            select(col(MessageLocation.uid), col(MessageLocation.uidvalidity), col(MessageLocation.flags)).where(
                col(MessageLocation.folder_id) == folder.id
            )
        ).all()
    return folder, {uid: (uidvalidity, flags) for uid, uidvalidity, flags in rows}


def test_new_mail_at_the_top_of_uid_uidvalidity_and_modseq(mailbox, connect, run_sync, deps):
    mailbox.server.update_mailbox(mailbox.user, "INBOX", uid_validity=UIDVALIDITY, min_next_uid=TOP_UID - 2)
    account = connect(start="now")
    assert run_sync(account) is Outcome.DONE  # records UIDVALIDITY 2^32-1 and UIDNEXT 2^32-4
    uids = [mailbox.append("INBOX", make_message(subject=f"top {i}", message_id=f"<top{i}@x>")) for i in range(3)]
    assert uids == [TOP_UID - 2, TOP_UID - 1, TOP_UID]
    # One below the cap: the flag change further down takes HIGHESTMODSEQ to exactly 2^63-1.
    mailbox.server.update_mailbox(mailbox.user, "INBOX", min_highest_modseq=MAX_MODSEQ - 1)
    assert server_status(mailbox) == {b"UIDVALIDITY": UIDVALIDITY, b"UIDNEXT": TOP_UID + 1,
                                      b"HIGHESTMODSEQ": MAX_MODSEQ - 1}  # fmt: skip

    clear_rawlog(mailbox)
    assert run_sync(account) is Outcome.DONE
    searches = [c for c in rawlog_commands(mailbox) if " SEARCH " in c.upper()]
    assert len(searches) <= 4, searches
    folder, locations = inbox_state(deps, account)
    assert locations == {uid: (UIDVALIDITY, "") for uid in uids}
    assert (folder.uidvalidity, folder.setup_uidnext, folder.fwd_uid) == (UIDVALIDITY, TOP_UID - 2, TOP_UID)
    assert (folder.last_uidnext, folder.last_messages, folder.highestmodseq) == (TOP_UID + 1, 3, MAX_MODSEQ - 1)

    # A flag change reaches the cap; CHANGEDSINCE 2^63-2 finds it. (A STORE on UID 2^32-2 itself trips an
    # assertion in Dovecot 2.3.19, so the one below it is flagged.)
    client = mailbox.server.client(mailbox.user, mailbox.password)
    client.select_folder("INBOX")
    client.add_flags([TOP_UID - 1], [b"\\Flagged"])
    client.logout()
    assert server_status(mailbox)[b"HIGHESTMODSEQ"] == MAX_MODSEQ
    assert run_sync(account) is Outcome.DONE
    folder, locations = inbox_state(deps, account)
    assert locations[TOP_UID - 1] == (UIDVALIDITY, "\\Flagged")
    assert folder.highestmodseq == MAX_MODSEQ
    assert run_sync(account) is Outcome.DONE  # nothing changed: STATUS matches what is stored
    again, same = inbox_state(deps, account)
    assert (again.highestmodseq, same) == (MAX_MODSEQ, locations)


def test_past_mail_with_uids_near_the_top(mailbox, connect, run_sync, deps):
    # Windows of 20,000 UIDs from UID 1 would be 214,749 SEARCH commands here: the past sync starts at the
    # lowest UID the folder holds.
    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    mailbox.server.update_mailbox(mailbox.user, "INBOX", uid_validity=UIDVALIDITY, min_next_uid=TOP_UID - 1)
    uids = [mailbox.append("INBOX", make_message(subject=f"past {i}"), date=when) for i in range(2)]
    assert uids == [TOP_UID - 1, TOP_UID]
    account = connect(start="1m")
    clear_rawlog(mailbox)
    assert run_sync(account) is Outcome.DONE
    searches = [c for c in rawlog_commands(mailbox) if " SEARCH " in c.upper()]
    assert len(searches) <= 4, searches
    folder, locations = inbox_state(deps, account)
    assert locations == {uid: (UIDVALIDITY, "") for uid in uids}
    assert (folder.uidvalidity, folder.setup_uidnext, folder.fwd_uid, folder.backfill_done) == (
        UIDVALIDITY,
        TOP_UID + 1,
        TOP_UID,
        True,
    )
