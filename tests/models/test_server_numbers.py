"""Numbers from the IMAP server are 64-bit on every database (issue 8, defect 1).

UIDVALIDITY, UID, UIDNEXT and MESSAGES go up to 2^32-1, MODSEQ up to 2^63-1, Gmail's X-GM-MSGID is a
64-bit id such as 1278455344230334866, and RFC822.SIZE is an unsigned 32-bit number.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Engine, inspect
from sqlmodel import Session

from models import accounts, mailstore, messages
from models.db import session_scope
from models.tables import Folder

U32 = 2**32 - 1  # the largest UIDVALIDITY, UID, UIDNEXT, MESSAGES, RFC822.SIZE
I63 = 2**63 - 1  # the largest MODSEQ (RFC 7162) and what a signed BIGINT holds
GMAIL_ID = 1278455344230334866  # a real-world X-GM-MSGID

SERVER_NUMBER_COLUMNS = {
    "folder": {
        "uidvalidity",
        "setup_uidnext",
        "fwd_uid",
        "backfill_hi",
        "highestmodseq",
        "last_uidnext",
        "last_messages",
    },
    "message": {"gm_msgid", "size"},
    "message_location": {"uidvalidity", "uid"},
}


def test_server_number_columns_are_bigint_in_the_database(db: Engine) -> None:
    inspector = inspect(db)
    narrow = {
        (table, c["name"]): str(c["type"])
        for table, names in SERVER_NUMBER_COLUMNS.items()
        for c in inspector.get_columns(table)
        if c["name"] in names and not isinstance(c["type"], BigInteger)
    }
    assert narrow == {}


def _account(session: Session) -> int:
    account = accounts.create_account(
        session,
        team_id="T1",
        user_id="U1",
        email="big@example.net",
        imap_host="imap.example.net",
        username="big@example.net",
        secret_encrypted="not-a-secret",
    )
    assert account.id is not None
    return account.id


def _message_row(account_id: int, *, gm_msgid: int, size: int, subject: str) -> dict[str, Any]:
    # The same keys the engine's insert uses for every row (one executemany).
    return {"account_id": account_id, "team_id": "T1", "message_id": f"<{subject}@x>", "gm_msgid": gm_msgid,
            "size": size, "subject": subject}  # fmt: skip


def test_largest_server_numbers_round_trip(db: Engine) -> None:
    with session_scope(db) as session:
        account_id = _account(session)
        folder = Folder(account_id=account_id, name="INBOX", role="inbox")
        session.add(folder)
        session.flush()
        mailstore.update_folder(
            session,
            folder,
            uidvalidity=U32,
            setup_uidnext=U32,
            fwd_uid=U32,
            backfill_hi=U32,
            highestmodseq=I63,
            last_uidnext=U32,
            last_messages=U32,
        )
        folder.uidvalidity = U32
        top, gmail = mailstore.insert_messages(
            session,
            [
                _message_row(account_id, gm_msgid=I63, size=U32, subject="top"),
                _message_row(account_id, gm_msgid=GMAIL_ID, size=1, subject="gmail"),
            ],
        )
        mailstore.insert_locations(
            session,
            [
                {"message_id": top, "folder_id": folder.id, "uidvalidity": U32, "uid": U32, "flags": ""},
                {"message_id": gmail, "folder_id": folder.id, "uidvalidity": U32, "uid": U32 - 1, "flags": ""},
            ],
        )

    with session_scope(db) as session:
        (stored,) = accounts.folders_of(session, account_id)
        assert (stored.uidvalidity, stored.setup_uidnext, stored.fwd_uid, stored.backfill_hi) == (U32, U32, U32, U32)
        assert (stored.highestmodseq, stored.last_uidnext, stored.last_messages) == (I63, U32, U32)
        # Look-ups bind the large numbers as query parameters.
        assert mailstore.find_existing(session, account_id=account_id, keys=[("gm", I63), ("gm", GMAIL_ID)]) == {
            ("gm", I63): top,
            ("gm", GMAIL_ID): gmail,
        }
        assert mailstore.known_uids(session, stored, lo=U32 - 1, hi=U32) == [U32 - 1, U32]
        assert mailstore.max_known_uid(session, stored) == U32
        assert mailstore.set_flags(session, stored, {U32: "\\Seen"}) == 1
        assert mailstore.location_flags(session, stored, [U32 - 1, U32]) == {U32 - 1: "", U32: "\\Seen"}

    with session_scope(db) as session:
        page = messages.export_page(session, account_id=account_id, after_id=0, limit=10)
        assert {m["subject"]: m["size"] for m in page} == {"top": U32, "gmail": 1}
        mailstore.remove_locations(session, stored, [U32])
        assert mailstore.known_uids(session, stored, lo=1, hi=U32) == [U32 - 1]
