"""Commits one batch: its messages, addresses and locations, the folder's cursor and the run's counts, together.

A batch waits here one turn (the fetch pipeline asks for the next batch's bodies first), so the
server prepares them while this process writes; batches still commit in order, each in one fenced
transaction with its cursor, so a crash at any point resumes exactly.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from models import accounts as account_queries
from models import mailstore
from models.clock import utcnow
from models.tables import Folder
from sync.bodystructure import BodyPlan
from sync.metrics import count_stored
from sync.parse import Body, Headers
from sync.slice_context import SliceContext


@dataclass
class Candidate:
    """One message of a batch, from its header FETCH to its row."""

    uid: int
    size: int
    flags: str
    internal_date: dt.datetime | None
    headers: Headers
    gm_msgid: int | None
    plan: BodyPlan | None = None  # from BODYSTRUCTURE; None: fetch and parse the whole message
    header_len: int = 0  # bytes of the header block (BODY[HEADER], blank line included)
    body: Body | None = None
    truncated: bool = False
    failed: bool = False
    extra_uids: list[tuple[int, str]] = field(default_factory=list)  # same message twice in one folder
    pk: int | None = None  # once stored

    def key(self) -> mailstore.DedupKey:
        """The dedup key: Gmail id, else Message-ID and size, else the header hash and size."""
        if self.gm_msgid is not None:
            return ("gm", self.gm_msgid)
        if self.headers.message_id:
            return ("mid", self.headers.message_id, self.size)
        return ("hash", self.headers.header_hash, self.size)


@dataclass
class BatchWrite:
    """What one batch commits, kept until its turn."""

    folder: Folder
    cursor: dict[str, int]
    processed: int
    stored: list[Candidate] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)  # of messages already stored
    late_locations: list[tuple[Candidate, int, str]] = field(default_factory=list)  # of the batch before
    skipped: int = 0

    def stored_by_key(self) -> dict[mailstore.DedupKey, Candidate]:
        """The messages this batch stores, by dedup key."""
        return {c.key(): c for c in self.stored}


class BatchWriter:
    """Holds at most one batch that waits for its commit, and commits it."""

    def __init__(self, ctx: SliceContext) -> None:
        self.ctx = ctx
        self.pending: BatchWrite | None = None

    def waiting_by_key(self) -> dict[mailstore.DedupKey, Candidate]:
        """Messages of the batch not committed yet: they count as stored for the next batch."""
        return self.pending.stored_by_key() if self.pending is not None else {}

    def hold(self, batch: BatchWrite) -> None:
        """Commit the batch that waits, then keep this one waiting."""
        self.flush()
        self.pending = batch

    def flush(self) -> None:
        """Commit the batch that waits, if any: messages, addresses, locations, cursor and counts."""
        batch, self.pending = self.pending, None
        if batch is None:
            return
        ctx = self.ctx
        folder = batch.folder
        run = ctx.run
        with ctx.writing() as session:
            if batch.processed:
                ctx.note_change(session)  # mail arrived: this run gets its row (DESIGN section 5, item 12)
            rows = [self.message_row(c, folder) for c in batch.stored]
            pks = mailstore.insert_messages(session, rows)
            addresses: list[dict[str, Any]] = []
            locations = batch.locations
            for pk, cand in zip(pks, batch.stored, strict=True):
                cand.pk = pk
                addresses += [
                    {"message_id": pk, "role": a.role, "position": a.position, "email": a.email, "name": a.name}
                    for a in cand.headers.addresses
                ]
                locations.append(location(pk, folder, cand.uid, cand.flags))
                locations += [location(pk, folder, u, f) for u, f in cand.extra_uids]
            for earlier, uid, flags in batch.late_locations:
                assert earlier.pk is not None  # its batch committed first
                locations.append(location(earlier.pk, folder, uid, flags))
            mailstore.insert_addresses(session, addresses)
            mailstore.insert_locations(session, locations)
            mailstore.update_folder(session, folder, **batch.cursor)
            run.processed += batch.processed
            run.stored += len(pks)
            run.skipped += batch.skipped
            run.failed_messages += sum(1 for c in batch.stored if c.failed)
            if ctx.recorded:
                account_queries.save_run_counts(session, run)
        count_stored(len(pks))  # after the commit: only what is really in the database
        ctx.after_batch()

    def message_row(self, cand: Candidate, folder: Folder) -> dict[str, Any]:
        """The message table's row for a candidate."""
        account = self.ctx.account
        body = cand.body
        sender = cand.headers.sender()
        sent = folder.role == "sent" or (sender is not None and sender == account.email.lower())
        return {
            "account_id": self.ctx.account_id,
            "team_id": account.team_id,
            "message_id": cand.headers.message_id,
            "gm_msgid": cand.gm_msgid,
            "size": cand.size,
            "content_hash": cand.headers.header_hash,
            "thread_key": cand.headers.thread_key,
            "subject": cand.headers.subject,
            "date": cand.headers.date,
            "internal_date": cand.internal_date,
            "direction": "sent" if sent else "received",
            "visibility": account.visibility,
            "snippet": body.snippet if body else None,
            "text_body": body.text if body else None,
            "html_body": body.html if body else None,
            "attachments": body.attachments_json() if body else None,
            "truncated": cand.truncated,
            "bulk": cand.headers.bulk,
            "created_at": utcnow(),
        }


def location(message_pk: int, folder: Folder, uid: int, flags: str) -> dict[str, Any]:
    """The message_location row of one UID."""
    return {
        "message_id": message_pk,
        "folder_id": folder.id,
        "uidvalidity": folder.uidvalidity,
        "uid": uid,
        "flags": flags,
    }
