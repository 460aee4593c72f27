"""The passes over one folder: new mail, flags (CONDSTORE or the periodic pass), deletions, and the backfill.

``FolderPasses.sync_folder`` asks STATUS, lets ``folder_plan.plan_folder`` decide, and runs only the
passes the plan asks for; an unchanged folder costs that one round trip.
"""

from __future__ import annotations

import imaplib
import logging
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from models import mailstore
from models.clock import utcnow
from models.db import session_scope
from models.tables import Folder
from sync.errors import FolderGone
from sync.fetch_pipeline import BatchFetcher, flag_text
from sync.folder_plan import MODSEQ_ITEM, STATUS_ITEMS, FolderStatus, StoredFolder, plan_folder
from sync.imap_session import fetch_uid_range
from sync.slice_context import SliceContext
from sync.uid_search import search_newest_first, search_uid_range, uid_windows

log = logging.getLogger(__name__)


class FolderPasses:
    """Runs the passes of each folder of one slice, through the shared fetch pipeline."""

    def __init__(self, ctx: SliceContext, fetcher: BatchFetcher) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.fetcher = fetcher

    def sync_folder(self, client: IMAPClient, folder: Folder) -> None:
        """One folder: STATUS, then only what the plan says."""
        ctx = self.ctx
        items = STATUS_ITEMS + ([MODSEQ_ITEM] if ctx.condstore else [])
        try:
            status = FolderStatus.parse(client.folder_status(folder.name, items))
        except IMAPClientError as exc:
            raise_if_connection_lost(exc)
            raise FolderGone(f"The folder {folder.name} is gone.", "") from exc
        plan = plan_folder(
            StoredFolder.of(folder),
            status,
            condstore=ctx.condstore,
            has_start_date=ctx.account.start_date is not None,
            now=utcnow(),
            flag_pass_seconds=self.cfg.flag_pass_seconds,
        )
        if plan.initialise:
            if plan.rematch:
                log.info("account %s: UIDVALIDITY of %r changed; re-matching", ctx.account_id, folder.name)
            self.init_folder(folder, status.uidvalidity, status.uidnext, rematch=plan.rematch)
        if plan.skip:
            return  # one STATUS round trip, no SELECT, no FETCH
        try:
            client.select_folder(folder.name, readonly=True)  # EXAMINE: we never change anything
        except IMAPClientError as exc:
            raise_if_connection_lost(exc)
            raise FolderGone(f"The folder {folder.name} is gone.", "") from exc

        if plan.new_mail:
            self.new_mail(client, folder)
        if plan.condstore_flags:
            self.flags_changed_since(client, folder)
        if plan.check_deletions:
            self.deletions(client, folder)
        did_flag_pass = False
        if plan.flag_pass_due and folder.fwd_uid:
            self.flag_pass(client, folder)
            did_flag_pass = True
        if plan.backfill:
            self.backfill(client, folder)
        with ctx.writing() as session:
            values: dict[str, Any] = {"last_uidnext": status.uidnext, "last_messages": status.messages}
            if ctx.condstore:
                # Stored only now: every change up to this MODSEQ has been applied above.
                values["highestmodseq"] = status.highestmodseq
            if did_flag_pass:
                values["last_flag_pass_at"] = utcnow()
            mailstore.update_folder(session, folder, **values)
        folder.last_uidnext, folder.last_messages = status.uidnext, status.messages
        if ctx.condstore:
            folder.highestmodseq = status.highestmodseq

    def init_folder(self, folder: Folder, uidvalidity: int, uidnext: int, *, rematch: bool) -> None:
        """Record the setup boundary: UIDs from UIDNEXT on are new mail, below it the past sync."""
        since = self.ctx.account.start_date
        values: dict[str, Any] = {
            "uidvalidity": uidvalidity,
            "setup_uidnext": uidnext,
            "fwd_uid": uidnext - 1,
            "backfill_hi": uidnext,
            # After a UIDVALIDITY change every UID is re-matched, whatever the start date.
            "backfill_done": not rematch and since is None,
            "backfill_since": since,
            "backfill_scope": self.ctx.account.contact_scope,
            "rematch": rematch,
            "last_uidnext": None,
            "last_messages": None,
            "highestmodseq": None,
        }
        with self.ctx.writing() as session:
            mailstore.update_folder(session, folder, **values)
        for name, value in values.items():
            setattr(folder, name, value)

    def new_mail(self, client: IMAPClient, folder: Folder) -> None:
        """Everything above the forward cursor, oldest first; the cursor moves with each batch's commit."""
        # `n:*` always returns the last message, even below n: drop what is not above the cursor.
        uids = sorted(u for u in client.search(["UID", f"{folder.fwd_uid + 1}:*"]) if u > folder.fwd_uid)
        self.ctx.run.total += len(uids)
        for batch, ahead in _with_next(_chunks(uids, self.cfg.batch_size)):
            self.fetcher.process(client, folder, batch, past=False, cursor={"fwd_uid": max(batch)}, next_uids=ahead)
            folder.fwd_uid = max(batch)

    def flags_changed_since(self, client: IMAPClient, folder: Folder) -> None:
        """CONDSTORE: the flags of known UIDs that changed since the stored MODSEQ."""
        if folder.fwd_uid < 1:
            return
        modifiers = [f"CHANGEDSINCE {folder.highestmodseq}"]
        for lo, hi in self._known_windows(folder, folder.fwd_uid):
            resp = fetch_uid_range(client, lo, hi, ["FLAGS"], modifiers=modifiers)
            changes = {uid: flag_text(data.get(b"FLAGS", ())) for uid, data in resp.items() if uid <= folder.fwd_uid}
            if changes:
                self._set_flags(folder, changes)

    def flag_pass(self, client: IMAPClient, folder: Folder) -> None:
        """Without CONDSTORE a flag-only change leaves STATUS unchanged: re-read flags of recent mail."""
        with session_scope(self.ctx.deps.db) as session:
            top = mailstore.max_known_uid(session, folder)
            known = mailstore.known_uids(session, folder, lo=1, hi=top)[-self.cfg.flag_window :]
        for lo, hi in uid_windows(known, self.cfg.search_window):
            resp = fetch_uid_range(client, lo, hi, ["FLAGS"])
            self._set_flags(folder, {uid: flag_text(data.get(b"FLAGS", ())) for uid, data in resp.items()})

    def _set_flags(self, folder: Folder, changes: dict[int, str]) -> None:
        with self.ctx.writing() as session:
            if mailstore.set_flags(session, folder, changes):
                self.ctx.note_change(session)  # a flag really changed; re-reading the same flags is no event
        self.ctx.after_write()

    def _known_windows(self, folder: Folder, top: int) -> Iterator[tuple[int, int]]:
        """UID windows of search_window UIDs up to top, only those that hold a UID we know.

        One FETCH or SEARCH per window keeps each answer under the response limits (sync/imap_limits.py);
        skipping empty windows keeps a folder whose UIDs are sparse or sit near 2^32 from costing
        ~200,000 commands.
        """
        cursor = 1
        while cursor <= top:
            with session_scope(self.ctx.deps.db, readonly=True) as session:
                lo = mailstore.next_known_uid(session, folder, at_least=cursor)
            if lo is None or lo > top:
                return
            hi = min(top, lo + self.cfg.search_window - 1)
            yield lo, hi
            cursor = hi + 1

    def deletions(self, client: IMAPClient, folder: Folder) -> None:
        """Compare the UIDs we know with the server's, window by window; forget the ones it no longer has."""
        with session_scope(self.ctx.deps.db) as session:
            top = mailstore.max_known_uid(session, folder)
        for lo, hi in self._known_windows(folder, top):
            with session_scope(self.ctx.deps.db) as session:
                known = mailstore.known_uids(session, folder, lo=lo, hi=hi)
            present = set(search_uid_range(client, lo, hi))
            gone = [u for u in known if u not in present]
            if gone:
                with self.ctx.writing() as session:
                    self.ctx.note_change(session)
                    mailstore.remove_locations(session, folder, gone)
                self.ctx.after_write()
                self.ctx.removed_locations = True

    def backfill(self, client: IMAPClient, folder: Folder) -> None:
        """The past sync of one folder, newest first, resumable from backfill_hi."""
        ctx = self.ctx
        criteria: list[Any] = []
        since = None if folder.rematch else folder.backfill_since
        if since is not None:
            criteria += ["SINCE", since]
        if folder.backfill_before is not None and not folder.rematch:
            criteria += ["BEFORE", folder.backfill_before]  # a widened window: only what is new to us
        pending = array("I")
        top = folder.backfill_hi - 1
        for found in search_newest_first(client, top=top, window=self.cfg.search_window, criteria=criteria):
            pending.extend(found)
        # The run's total was estimated from MESSAGES; now this folder's exact count is known.
        ctx.run.total += len(pending) - ctx.estimates.pop(folder.id, 0)  # type: ignore[arg-type]
        for batch, ahead in _with_next(_chunks(pending, self.cfg.batch_size)):
            self.fetcher.process(client, folder, batch, past=True, cursor={"backfill_hi": min(batch)}, next_uids=ahead)
            folder.backfill_hi = min(batch)
        with ctx.writing() as session:
            if folder.rematch:
                ctx.note_change(session)
                mailstore.drop_stale_locations(session, folder)
                ctx.removed_locations = True
            mailstore.update_folder(
                session, folder, backfill_done=True, backfill_hi=0, rematch=False, backfill_before=None
            )
        ctx.after_write()
        folder.backfill_done, folder.backfill_hi, folder.rematch, folder.backfill_before = True, 0, False, None


def raise_if_connection_lost(exc: IMAPClientError) -> None:
    """Re-raise an abort: the connection is gone (or the slice deadline cut it), not the folder."""
    if isinstance(exc, imaplib.IMAP4.abort):
        raise exc


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _with_next(batches: Iterator[list[int]]) -> Iterator[tuple[list[int], list[int] | None]]:
    """Each batch with the one after it (None for the last), one batch ahead only."""
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        yield current, following
        current = following
