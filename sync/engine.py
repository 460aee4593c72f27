"""The sync engine: one account, one IMAP session, folders synced with crash-safe cursors."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import imaplib
import logging
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import Engine
from sqlmodel import Session

from models import accounts as account_queries
from models import contacts as contact_queries
from models import mailstore
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox, SecretKeyError
from models.tables import EmailAccount, Folder, SyncRun
from sync.backoff import backoff_seconds
from sync.bodystructure import BodyPlan, build_body, plan_body
from sync.deadline import Deadline, deadline
from sync.errors import AuthFailed, FolderGone, LeaseLost, ProtocolError, SyncError, Throttled, Timeout
from sync.fetch import Command, FetchData, FetchPipe
from sync.folders import RemoteFolder, discover_folders, selected_by_default
from sync.imap_limits import ResponseLimits
from sync.imap_session import (
    STRICT_POLICY,
    ImapLogin,
    SslContextFactory,
    account_login,
    default_ssl_context,
    fetch_uid_range,
    imap_session,
)
from sync.metrics import count_stored
from sync.notifier import Notifier, RunReport
from sync.oauth import OAuthProviders
from sync.oauth_tokens import TokenKeeper
from sync.outbound import OutboundPolicy
from sync.parse import Body, Headers, parse_body, parse_headers

log = logging.getLogger(__name__)

HEADER_ITEM = b"BODY.PEEK[HEADER]"
HEADER_KEY = b"BODY[HEADER]"
BODY_ITEM = b"BODY.PEEK[]"
BODY_KEY = b"BODY[]"
STRUCTURE_ITEM = b"BODYSTRUCTURE"


@dataclass
class EngineConfig:
    """Tunables of the engine (built from Settings by the composition root)."""

    timeout: float = 30.0
    max_message_bytes: int = 25 * 1024 * 1024
    batch_size: int = 250  # UIDs per FETCH: a command line far below Dovecot's 64 KiB limit
    body_chunk_bytes: int = 8 * 1024 * 1024  # bytes of bodies per FETCH round: memory follows this
    use_bodystructure: bool = True  # fetch only the text parts; False: every body whole (BODY.PEEK[])
    search_window: int = 20_000  # UIDs per SEARCH: replies stay far below imaplib's 1 MB line limit
    flag_window: int = 5_000  # newest known UIDs covered by the periodic flag pass
    flag_pass_seconds: float = 3600.0  # servers without CONDSTORE get a flag pass this often
    lease_ttl: float = 120.0
    # A slice's overall deadline: a server that drips a byte every few seconds never trips the read timeout,
    # so when this passes the connection is shut down and the slice ends like a timeout. A slice stops
    # between batches early enough to finish inside it (see _slice_budget).
    slice_deadline_seconds: float = 360.0
    poll_seconds: float = 120.0
    progress_seconds: float = 5.0
    exit_after_batch: int | None = None  # test-only: os._exit after committing batch N
    ssl_context: SslContextFactory = default_ssl_context
    outbound: OutboundPolicy = STRICT_POLICY  # where stored hosts may still point (DNS changes)
    oauth: OAuthProviders = field(default_factory=OAuthProviders)  # for accounts signed in with Google/Microsoft
    token_margin: float = 600.0  # refresh an OAuth access token when it has less than this many seconds left


@dataclass
class EngineDeps:
    """What the engine needs from the outside world."""

    db: Engine
    secrets: SecretBox
    notifier: Notifier
    config: EngineConfig
    owner: str  # this process, for the lease
    stopping: threading.Event = field(default_factory=threading.Event)  # set when the process shuts down


class Outcome(enum.Enum):
    """How one call of sync_account ended."""

    DONE = "done"  # the run finished
    MORE = "more"  # the slice's time ran out; the run continues at the next tick
    BUSY = "busy"  # another process holds the lease
    FAILED = "failed"
    SKIPPED = "skipped"  # the account is gone, paused or disconnected


class _BudgetExhausted(Exception):
    """The slice's time is up; stop between batches."""


_batches_committed = 0  # per process, for the test-only hard exit


def sync_account(deps: EngineDeps, account_id: int, *, budget_seconds: float | None = None) -> Outcome:
    """Sync one account (one slice of its current run) under the account's lease and the slice deadline.

    The slice stops between batches once ``budget_seconds`` are spent (MORE), and early enough to end
    within ``config.slice_deadline_seconds`` without a budget too; when the deadline passes inside a
    command, the connection is shut down and the slice ends as a Timeout (what was committed stays).
    """
    with session_scope(deps.db) as session:
        token = account_queries.acquire_lease(
            session, account_id=account_id, owner=deps.owner, ttl=deps.config.lease_ttl
        )
    if token is None:
        return Outcome.BUSY
    # Wall-clock marks let an operator (and the concurrency test) see who held which account when.
    log.info("lease taken account=%s owner=%s token=%s at=%.6f", account_id, deps.owner, token, time.time())
    try:
        with deadline(deps.config.slice_deadline_seconds) as dl:
            return _AccountSync(deps, account_id, token, _slice_budget(deps.config, budget_seconds), dl).run()
    finally:
        at = time.time()
        with session_scope(deps.db) as session:
            account_queries.release_lease(session, account_id=account_id, owner=deps.owner, token=token)
        log.info("lease given back account=%s owner=%s token=%s at=%.6f", account_id, deps.owner, token, at)


@dataclass
class _Candidate:
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
        if self.gm_msgid is not None:
            return ("gm", self.gm_msgid)
        if self.headers.message_id:
            return ("mid", self.headers.message_id, self.size)
        return ("hash", self.headers.header_hash, self.size)


@dataclass
class _BatchWrite:
    """What one batch commits, kept until its turn (see _process_batch)."""

    folder: Folder
    cursor: dict[str, int]
    processed: int
    stored: list[_Candidate] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)  # of messages already stored
    late_locations: list[tuple[_Candidate, int, str]] = field(default_factory=list)  # of the batch before
    skipped: int = 0

    def stored_by_key(self) -> dict[mailstore.DedupKey, _Candidate]:
        return {c.key(): c for c in self.stored}


class _AccountSync:
    """One slice of a run for one account; holds the per-slice state."""

    def __init__(self, deps: EngineDeps, account_id: int, token: int, budget: float, dl: Deadline) -> None:
        self.deps = deps
        self.cfg = deps.config
        self.account_id = account_id
        self.token = token
        self.deadline = time.monotonic() + budget  # between batches: the slice's budget
        self.slice_deadline = dl  # inside a command: the connection is shut down when it passes
        self.started = time.monotonic()
        self.last_progress = 0.0
        self.slice_batches = 0  # committed in this slice
        self.batches_begun = 0  # started in this slice
        self.removed_locations = False
        self._pipe: FetchPipe | None = None
        self._ahead: tuple[tuple[int, ...], bytes] | None = None  # (UIDs, tag) of a header FETCH sent ahead
        self._pending: _BatchWrite | None = None  # a batch fetched but not committed yet
        self._structure = deps.config.use_bodystructure  # ask for BODYSTRUCTURE (until a server refuses)

    # ---- the run ---------------------------------------------------------------------------------

    def run(self) -> Outcome:
        with session_scope(self.deps.db) as session:
            account = account_queries.get_account(session, self.account_id)
            if account is None or account.state not in account_queries.SYNCABLE_STATES:
                return Outcome.SKIPPED
            self.account = account
            self.was_failing = account.last_error_code is not None
            try:
                # An OAuth account has no password: its access token is fetched in _login, outside this transaction.
                password = self.deps.secrets.decrypt(account.secret_encrypted) if account.auth_kind != "oauth" else ""
            except SecretKeyError as exc:
                self.run_row = self._current_run(session, account)
                session.commit()
                return self._fail(ProtocolError(str(exc), "An operator must restore the old key."))
            self.contacts = contact_queries.team_contact_emails(session, team_id=account.team_id)
            self.blocked = account_queries.blocked_patterns(session, team_id=account.team_id, user_id=account.user_id)
            self.run_row = self._current_run(session, account)
            account.state = "syncing"
            account.current_run_id = self.run_row.id
            session.add(account)
        limits = ResponseLimits.for_messages(self.cfg.max_message_bytes, self.cfg.body_chunk_bytes)
        try:
            login = self._login(account, password)
            with imap_session(
                login,
                timeout=self.cfg.timeout,
                ssl_context=self.cfg.ssl_context,
                outbound=self.cfg.outbound,
                limits=limits,
            ) as client:
                client.normalise_times = False
                self._sync_mailbox(client)
        except _BudgetExhausted:
            self._save_slice(done=False)
            return Outcome.MORE
        except LeaseLost:
            log.warning("account %s: lease lost; stopping without writing", self.account_id)
            return Outcome.FAILED
        except SyncError as exc:
            if isinstance(exc, Timeout) and self.slice_deadline.expired and self.deps.stopping.is_set():
                # The process is stopping and cut the connection (expire_all): not the server's fault.
                # The slice ends as if its time ran out; the next worker continues from the cursors.
                log.info("account %s: slice stopped by shutdown", self.account_id)
                self._save_slice(done=False)
                return Outcome.MORE
            return self._fail(exc)
        except Exception:
            log.exception("account %s: unexpected error during sync", self.account_id)
            return self._fail(ProtocolError("An unexpected error stopped the sync.", "It is retried automatically."))
        self._save_slice(done=True)
        return Outcome.DONE

    def _login(self, account: EmailAccount, password: str) -> ImapLogin:
        if account.auth_kind != "oauth":
            return account_login(account, password)
        # Signed in with Google/Microsoft: the access token is refreshed here, under this slice's lease.
        keeper = TokenKeeper(self.deps.db, self.deps.secrets, self.cfg.oauth, margin=self.cfg.token_margin)
        return keeper.login(account, self._writing)

    def _current_run(self, session: Session, account: EmailAccount) -> SyncRun:
        run = session.get(SyncRun, account.current_run_id) if account.current_run_id else None
        if run is None or run.status != "running":
            pending = any(f.selected and not f.backfill_done for f in account_queries.folders_of(session, account.id))  # type: ignore[arg-type]
            if account.start_date and not account.last_synced_at:
                kind = "past"
            else:
                kind = "widen" if pending else "incremental"
            run = account_queries.open_run(session, account_id=account.id, kind=kind)  # type: ignore[arg-type]
        run.slices += 1
        session.add(run)
        session.flush()
        return run

    def _sync_mailbox(self, client: IMAPClient) -> None:
        caps = {c.upper() for c in client.capabilities()}
        self.condstore = b"CONDSTORE" in caps
        self.gmail = b"X-GM-EXT-1" in caps
        if self.condstore and b"ENABLE" in caps:
            client.enable("CONDSTORE")
        remote = discover_folders(client)
        folders, vanished = self._reconcile_folders(remote)
        pending = [f for f in folders if f.selected and not f.backfill_done]
        self._estimate_total(client, pending)
        if self.run_row.slices == 1:
            self.deps.notifier.sync_started(self._report())  # after the estimate, so it shows a total
        for folder in folders:
            if folder.selected:
                try:
                    self._sync_folder(client, folder)
                except FolderGone:
                    log.info("account %s: folder %r vanished during sync", self.account_id, folder.name)
        if vanished:
            with self._writing() as session:
                for folder in vanished:
                    mailstore.delete_folder(session, folder)
            self.removed_locations = True
        if self.removed_locations:
            with self._writing() as session:
                account_queries.mark_sweep_pending(session, account_id=self.account_id)
            self.account.sweep_pending = True
        if self.account.sweep_pending and all(f.backfill_done for f in folders if f.selected):
            # A message leaves only when no folder holds it; waiting for every backfill first lets a
            # message moved into a folder not yet backfilled be found there instead of re-fetched.
            with self._writing() as session:
                mailstore.delete_orphan_messages(session, account_id=self.account_id)
                account_queries.mark_sweep_pending(session, account_id=self.account_id, pending=False)

    def _reconcile_folders(self, remote: list[RemoteFolder]) -> tuple[list[Folder], list[Folder]]:
        with session_scope(self.deps.db) as session:
            known = {f.name: f for f in account_queries.folders_of(session, self.account_id)}
            for rf in remote:
                folder = known.get(rf.name)
                if folder is None:
                    # A folder that appears later is treated like one seen at setup: past mail by the
                    # account's window and scope, new mail from now on.
                    selected = self.account.sync_mode == "all" and selected_by_default(rf.role)
                    folder = Folder(account_id=self.account_id, name=rf.name, role=rf.role, selected=selected)
                    session.add(folder)
                    known[rf.name] = folder
                elif folder.role != rf.role:
                    folder.role = rf.role
                    session.add(folder)
            session.flush()
            names = {rf.name for rf in remote}
            order = {rf.name: i for i, rf in enumerate(remote)}
            present = sorted((f for f in known.values() if f.name in names), key=lambda f: order[f.name])
            vanished = [f for f in known.values() if f.name not in names]
        return present, vanished

    def _estimate_total(self, client: IMAPClient, pending: list[Folder]) -> None:
        """Total = done so far + what remains; a folder's MESSAGES stands in until its SEARCH says exactly."""
        self.estimates: dict[int, int] = {}
        self.run_row.total = self.run_row.processed
        for folder in pending:
            try:
                count = int(client.folder_status(folder.name, [b"MESSAGES"])[b"MESSAGES"])
            except IMAPClientError as exc:
                _raise_if_connection_lost(exc)
                continue
            self.estimates[folder.id] = count  # type: ignore[index]
            self.run_row.total += count

    # ---- one folder ------------------------------------------------------------------------------

    def _sync_folder(self, client: IMAPClient, folder: Folder) -> None:
        items = [b"UIDNEXT", b"UIDVALIDITY", b"MESSAGES"] + ([b"HIGHESTMODSEQ"] if self.condstore else [])
        try:
            status = client.folder_status(folder.name, items)
        except IMAPClientError as exc:
            _raise_if_connection_lost(exc)
            raise FolderGone(f"The folder {folder.name} is gone.", "") from exc
        uidnext = int(status[b"UIDNEXT"])
        uidvalidity = int(status[b"UIDVALIDITY"])
        messages = int(status[b"MESSAGES"])
        modseq = int(status[b"HIGHESTMODSEQ"]) if b"HIGHESTMODSEQ" in status else None

        if folder.uidvalidity is None:
            self._init_folder(folder, uidvalidity, uidnext, rematch=False)
        elif folder.uidvalidity != uidvalidity:
            log.info("account %s: UIDVALIDITY of %r changed; re-matching", self.account_id, folder.name)
            self._init_folder(folder, uidvalidity, uidnext, rematch=True)

        flag_pass_due = not self.condstore and (
            folder.last_flag_pass_at is None
            or (utcnow() - folder.last_flag_pass_at).total_seconds() >= self.cfg.flag_pass_seconds
        )
        unchanged = (
            folder.backfill_done
            and folder.last_uidnext == uidnext
            and folder.last_messages == messages
            and (not self.condstore or folder.highestmodseq == modseq)
        )
        if unchanged and not flag_pass_due:
            return  # one STATUS round trip, no SELECT, no FETCH
        try:
            client.select_folder(folder.name, readonly=True)  # EXAMINE: we never change anything
        except IMAPClientError as exc:
            _raise_if_connection_lost(exc)
            raise FolderGone(f"The folder {folder.name} is gone.", "") from exc

        if uidnext - 1 > folder.fwd_uid:
            self._new_mail(client, folder)
        if not unchanged:
            self._sync_flags_condstore(client, folder, modseq)
            self._sync_deletions(client, folder, uidnext, messages)
        did_flag_pass = False
        if flag_pass_due and folder.fwd_uid:
            self._flag_pass(client, folder)
            did_flag_pass = True
        if not folder.backfill_done:
            self._backfill(client, folder)
        with self._writing() as session:
            values: dict[str, Any] = {"last_uidnext": uidnext, "last_messages": messages}
            if self.condstore:
                # Stored only now: every change up to this MODSEQ has been applied above.
                values["highestmodseq"] = modseq
            if did_flag_pass:
                values["last_flag_pass_at"] = utcnow()
            mailstore.update_folder(session, folder, **values)
        folder.last_uidnext, folder.last_messages = uidnext, messages
        if self.condstore:
            folder.highestmodseq = modseq

    def _init_folder(self, folder: Folder, uidvalidity: int, uidnext: int, *, rematch: bool) -> None:
        """Record the setup boundary: UIDs from UIDNEXT on are new mail, below it the past sync."""
        since = self.account.start_date
        values: dict[str, Any] = {
            "uidvalidity": uidvalidity,
            "setup_uidnext": uidnext,
            "fwd_uid": uidnext - 1,
            "backfill_hi": uidnext,
            # After a UIDVALIDITY change every UID is re-matched, whatever the start date.
            "backfill_done": not rematch and since is None,
            "backfill_since": since,
            "backfill_scope": self.account.contact_scope,
            "rematch": rematch,
            "last_uidnext": None,
            "last_messages": None,
            "highestmodseq": None,
        }
        with self._writing() as session:
            mailstore.update_folder(session, folder, **values)
        for name, value in values.items():
            setattr(folder, name, value)

    def _new_mail(self, client: IMAPClient, folder: Folder) -> None:
        # `n:*` always returns the last message, even below n: drop what is not above the cursor.
        uids = sorted(u for u in client.search(["UID", f"{folder.fwd_uid + 1}:*"]) if u > folder.fwd_uid)
        self.run_row.total += len(uids)
        for batch, ahead in _with_next(_chunks(uids, self.cfg.batch_size)):
            self._process_batch(client, folder, batch, past=False, cursor={"fwd_uid": max(batch)}, next_uids=ahead)
            folder.fwd_uid = max(batch)

    def _sync_flags_condstore(self, client: IMAPClient, folder: Folder, modseq: int | None) -> None:
        if not self.condstore or folder.highestmodseq is None or modseq == folder.highestmodseq:
            return
        if folder.fwd_uid < 1:
            return
        modifiers = [f"CHANGEDSINCE {folder.highestmodseq}"]
        for lo, hi in self._known_windows(folder, folder.fwd_uid):
            resp = fetch_uid_range(client, lo, hi, ["FLAGS"], modifiers=modifiers)
            changes = {uid: _flags(data.get(b"FLAGS", ())) for uid, data in resp.items() if uid <= folder.fwd_uid}
            if changes:
                with self._writing() as session:
                    mailstore.set_flags(session, folder, changes)

    def _flag_pass(self, client: IMAPClient, folder: Folder) -> None:
        """Without CONDSTORE a flag-only change leaves STATUS unchanged: re-read flags of recent mail."""
        with session_scope(self.deps.db) as session:
            top = mailstore.max_known_uid(session, folder)
            known = mailstore.known_uids(session, folder, lo=1, hi=top)[-self.cfg.flag_window :]
        for lo, hi in uid_windows(known, self.cfg.search_window):
            resp = fetch_uid_range(client, lo, hi, ["FLAGS"])
            changes = {uid: _flags(data.get(b"FLAGS", ())) for uid, data in resp.items()}
            with self._writing() as session:
                mailstore.set_flags(session, folder, changes)

    def _known_windows(self, folder: Folder, top: int) -> Iterator[tuple[int, int]]:
        """UID windows of search_window UIDs up to top, only those that hold a UID we know.

        One FETCH or SEARCH per window keeps each answer under the response limits (sync/imap_limits.py);
        skipping empty windows keeps a folder whose UIDs are sparse or sit near 2^32 from costing
        ~200,000 commands.
        """
        cursor = 1
        while cursor <= top:
            with session_scope(self.deps.db, readonly=True) as session:
                lo = mailstore.next_known_uid(session, folder, at_least=cursor)
            if lo is None or lo > top:
                return
            hi = min(top, lo + self.cfg.search_window - 1)
            yield lo, hi
            cursor = hi + 1

    def _sync_deletions(self, client: IMAPClient, folder: Folder, uidnext: int, messages: int) -> None:
        if folder.last_uidnext is not None and folder.last_messages is not None:
            # Appends raise UIDNEXT and MESSAGES alike; only expunges lower MESSAGES alone.
            expunged = (uidnext - folder.last_uidnext) - (messages - folder.last_messages)
            if expunged <= 0:
                return
        with session_scope(self.deps.db) as session:
            top = mailstore.max_known_uid(session, folder)
        for lo, hi in self._known_windows(folder, top):
            with session_scope(self.deps.db) as session:
                known = mailstore.known_uids(session, folder, lo=lo, hi=hi)
            present = set(client.search(["UID", f"{lo}:{hi}"]))
            gone = [u for u in known if u not in present]
            if gone:
                with self._writing() as session:
                    mailstore.remove_locations(session, folder, gone)
                self.removed_locations = True

    def _backfill(self, client: IMAPClient, folder: Folder) -> None:
        """The past sync of one folder, newest first, resumable from backfill_hi."""
        pending = array("I")
        hi = folder.backfill_hi - 1
        since = None if folder.rematch else folder.backfill_since
        floor = _lowest_uid(client) if hi >= 1 else 1
        while hi >= floor:
            lo = max(floor, hi - self.cfg.search_window + 1)
            criteria: list[Any] = ["UID", f"{lo}:{hi}"]
            if since is not None:
                criteria += ["SINCE", since]
            if folder.backfill_before is not None and not folder.rematch:
                criteria += ["BEFORE", folder.backfill_before]  # a widened window: only what is new to us
            found = sorted((u for u in client.search(criteria) if lo <= u <= hi), reverse=True)
            pending.extend(found)
            hi = lo - 1
        # The run's total was estimated from MESSAGES; now this folder's exact count is known.
        self.run_row.total += len(pending) - self.estimates.pop(folder.id, 0)  # type: ignore[arg-type]
        for batch, ahead in _with_next(_chunks(pending, self.cfg.batch_size)):
            self._process_batch(client, folder, batch, past=True, cursor={"backfill_hi": min(batch)}, next_uids=ahead)
            folder.backfill_hi = min(batch)
        with self._writing() as session:
            if folder.rematch:
                mailstore.drop_stale_locations(session, folder)
                self.removed_locations = True
            mailstore.update_folder(
                session, folder, backfill_done=True, backfill_hi=0, rematch=False, backfill_before=None
            )
        folder.backfill_done, folder.backfill_hi, folder.rematch, folder.backfill_before = True, 0, False, None

    # ---- one batch -------------------------------------------------------------------------------

    def _process_batch(
        self,
        client: IMAPClient,
        folder: Folder,
        uids: Sequence[int],
        *,
        past: bool,
        cursor: dict[str, int],
        next_uids: Sequence[int] | None = None,
    ) -> None:
        """Headers first, filter, bodies only for what is kept, then commit messages and cursor together.

        ``next_uids`` is the folder's next batch, if any. Then the IMAP server and this process take
        turns less: that batch's header FETCH is sent right after this batch's last body FETCH, and
        this batch's commit waits until the next batch's bodies have been asked for, so the server
        prepares them meanwhile. The commit stays one transaction with its cursor, in batch order, and
        the last batch of a loop commits before returning. A batch that is not committed yet (because
        the run stops on an error) is fetched again by the next run, from the cursor.
        """
        if self.batches_begun:
            try:
                self._check_budget()  # at least one batch per slice, so every slice makes progress
            except _BudgetExhausted:
                self._write_pending()
                raise
        self.batches_begun += 1
        pipe = self._pipe_of(client)
        ahead, self._ahead = self._ahead, None
        tag = ahead[1] if ahead is not None and ahead[0] == tuple(uids) else pipe.send(uids, self._header_items())
        try:
            resp = pipe.collect([tag])
        except IMAPClientError as exc:
            if isinstance(exc, imaplib.IMAP4.abort) or not self._structure:
                raise
            # A server that refuses BODYSTRUCTURE: whole messages for the rest of the session.
            log.warning("account %s: BODYSTRUCTURE refused (%s); fetching whole messages", self.account_id, exc)
            self._structure = False
            resp = pipe.fetch([(uids, self._header_items())])
        candidates: list[_Candidate] = []
        for uid in uids:
            data = resp.get(uid)
            if data is None:  # expunged since the SEARCH
                continue
            candidates.append(self._candidate(uid, data))
        del resp  # the candidates keep what they need; the structures and header blocks can go
        existing = self._existing(candidates)
        # Messages of the previous batch that are not committed yet count as stored.
        waiting = self._pending.stored_by_key() if self._pending is not None else {}
        batch = _BatchWrite(folder=folder, cursor=cursor, processed=len(uids))
        to_store: dict[mailstore.DedupKey, _Candidate] = {}
        for cand in candidates:
            key = cand.key()
            if key in existing:
                batch.locations.append(self._location(existing[key], folder, cand.uid, cand.flags))
            elif key in waiting:
                batch.late_locations.append((waiting[key], cand.uid, cand.flags))
            elif key in to_store:
                to_store[key].extra_uids.append((cand.uid, cand.flags))
            elif self._filtered_out(cand, folder, past):
                batch.skipped += 1
            else:
                to_store[key] = cand
        batch.stored = list(to_store.values())
        if next_uids and time.monotonic() >= self.deadline:
            next_uids = None  # this slice ends after this batch: nothing to send ahead
        self._fetch_bodies(pipe, batch.stored, next_uids)
        self._write_pending()  # the previous batch, if the body FETCH did not already wait for it
        self._pending = batch
        if not next_uids:
            self._write_pending()

    def _write_pending(self) -> None:
        """Commit the batch that waits, if any: messages, addresses, locations, cursor and counts."""
        batch, self._pending = self._pending, None
        if batch is None:
            return
        folder = batch.folder
        with self._writing() as session:
            rows = [self._message_row(c, folder) for c in batch.stored]
            pks = mailstore.insert_messages(session, rows)
            addresses: list[dict[str, Any]] = []
            locations = batch.locations
            for pk, cand in zip(pks, batch.stored, strict=True):
                cand.pk = pk
                addresses += [
                    {"message_id": pk, "role": a.role, "position": a.position, "email": a.email, "name": a.name}
                    for a in cand.headers.addresses
                ]
                locations.append(self._location(pk, folder, cand.uid, cand.flags))
                locations += [self._location(pk, folder, u, f) for u, f in cand.extra_uids]
            for earlier, uid, flags in batch.late_locations:
                assert earlier.pk is not None  # its batch committed first
                locations.append(self._location(earlier.pk, folder, uid, flags))
            mailstore.insert_addresses(session, addresses)
            mailstore.insert_locations(session, locations)
            mailstore.update_folder(session, folder, **batch.cursor)
            self.run_row.processed += batch.processed
            self.run_row.stored += len(pks)
            self.run_row.skipped += batch.skipped
            self.run_row.failed_messages += sum(1 for c in batch.stored if c.failed)
            account_queries.save_run_counts(session, self.run_row)
        count_stored(len(pks))  # after the commit: only what is really in the database
        self._after_commit()

    def _candidate(self, uid: int, data: dict[bytes, Any]) -> _Candidate:
        raw_header = data.get(HEADER_KEY) or b""
        failed = False
        try:
            headers = parse_headers(raw_header)
        except Exception:  # parse_headers is defensive; this is the last line
            log.warning("account %s: unreadable header of UID %s", self.account_id, uid, exc_info=True)
            headers = Headers(None, None, None, None, [], _hash(raw_header))
            failed = True
        internal = data.get(b"INTERNALDATE")
        if isinstance(internal, dt.datetime) and internal.tzinfo is None:
            internal = internal.replace(tzinfo=dt.UTC)
        gm = data.get(b"X-GM-MSGID")
        return _Candidate(
            uid=uid,
            size=int(data.get(b"RFC822.SIZE") or len(raw_header)),
            flags=_flags(data.get(b"FLAGS", ())),
            internal_date=internal,
            headers=headers,
            gm_msgid=int(gm) if gm is not None else None,
            plan=plan_body(data.get(STRUCTURE_ITEM)),
            header_len=len(raw_header),
            failed=failed,
        )

    def _existing(self, candidates: list[_Candidate]) -> dict[mailstore.DedupKey, int]:
        if not candidates:
            return {}
        with session_scope(self.deps.db, readonly=True) as session:  # no write lock: a snapshot is enough
            return mailstore.find_existing(session, account_id=self.account_id, keys=[c.key() for c in candidates])

    def _filtered_out(self, cand: _Candidate, folder: Folder, past: bool) -> bool:
        emails = cand.headers.emails()
        if self.blocked and any(_is_blocked(e, self.blocked) for e in emails):
            return True
        if not past:
            return False  # mail arriving after setup follows the folder choice alone
        since = folder.backfill_since
        if since is not None and cand.internal_date is not None and cand.internal_date.date() < since:
            return True  # only reached in a re-match, whose SEARCH has no SINCE
        return folder.backfill_scope == "contacts" and not (emails & self.contacts)

    def _header_items(self) -> list[bytes]:
        items = [b"RFC822.SIZE", b"INTERNALDATE", b"FLAGS", HEADER_ITEM]
        if self._structure:
            items.append(STRUCTURE_ITEM)
        if self.gmail:
            items.append(b"X-GM-MSGID")
        return items

    def _pipe_of(self, client: IMAPClient) -> FetchPipe:
        if self._pipe is None or self._pipe.client is not client:
            self._pipe, self._ahead = FetchPipe(client), None
        return self._pipe

    def _fetch_bodies(self, pipe: FetchPipe, cands: list[_Candidate], next_uids: Sequence[int] | None) -> None:
        """Bodies in size-bounded rounds of pipelined FETCHes; the next batch's headers are sent after the last."""
        planned: list[_Candidate] = []
        whole: list[_Candidate] = []
        for cand in cands:
            if cand.size > self.cfg.max_message_bytes:
                cand.truncated = True  # keep the headers, mark it; never pull a huge body
            elif cand.plan is None:
                whole.append(cand)  # no usable BODYSTRUCTURE: the whole message, parsed here
            elif not cand.plan.specs():
                cand.body = build_body(cand.plan, {})  # attachments only: the structure says it all
            else:
                planned.append(cand)
        rounds: list[tuple[list[Command], Callable[[FetchData], None], list[_Candidate] | None]] = []
        limit = self.cfg.body_chunk_bytes
        for chunk in _size_chunks(planned, limit, lambda c: c.plan.octets() + c.header_len):  # type: ignore[union-attr]
            rounds.append((*self._text_parts_round(chunk), chunk))
        for chunk in _size_chunks(whole, limit, lambda c: c.size):
            rounds.append((*self._whole_round(chunk), None))
        if not rounds and next_uids:
            self._ahead = (tuple(next_uids), pipe.send(next_uids, self._header_items()))
        for i, (commands, handle, parts_of) in enumerate(rounds):
            tags = [pipe.send(uids, items) for uids, items in commands]
            if i == len(rounds) - 1 and next_uids:
                self._ahead = (tuple(next_uids), pipe.send(next_uids, self._header_items()))
            self._write_pending()  # the batch before commits while the server prepares these bodies
            try:
                resp = pipe.collect(tags)
            except IMAPClientError as exc:
                if isinstance(exc, imaplib.IMAP4.abort) or parts_of is None:
                    raise
                # A server that refuses a part number: these messages whole, as before BODYSTRUCTURE.
                log.warning("account %s: body parts refused (%s); fetching whole messages", self.account_id, exc)
                commands, handle = self._whole_round(parts_of)
                resp = pipe.fetch(commands)
            handle(resp)
            del resp

    def _text_parts_round(self, chunk: list[_Candidate]) -> tuple[list[Command], Callable[[FetchData], None]]:
        """Only the text/plain and text/html parts: one FETCH per set of part numbers.

        A message that is a single text part is fetched whole (BODY.PEEK[]) and its body cut after
        the header: the same bytes as its part 1, with the header (already read) once more.
        """
        groups: dict[tuple[str, ...], list[int]] = {}
        for cand in chunk:
            groups.setdefault(cand.plan.sections(), []).append(cand.uid)  # type: ignore[union-attr]
        commands: list[Command] = [
            (uids, [b"BODY.PEEK[%s]" % s.encode() for s in sections]) for sections, uids in groups.items()
        ]

        def handle(resp: FetchData) -> None:
            for cand in chunk:
                plan = cand.plan
                assert plan is not None
                data = resp.get(cand.uid) or {}
                if plan.single:
                    whole = data.get(BODY_KEY)
                    if whole is not None and not _after_header(whole, cand.header_len):
                        self._parse_whole(cand, whole)  # the header FETCH did not match: parse it all
                        continue
                    parts = {"1": whole[cand.header_len :] if whole is not None else None}
                else:
                    parts = {s: data.get(b"BODY[%s]" % s.encode()) for s in plan.specs()}
                if any(v is None for v in parts.values()):
                    cand.failed = True  # expunged since the header FETCH
                    continue
                try:
                    cand.body = build_body(plan, parts)  # type: ignore[arg-type]
                except Exception:
                    log.warning("account %s: undecodable body of UID %s", self.account_id, cand.uid, exc_info=True)
                    cand.failed = True

        return commands, handle

    def _whole_round(self, chunk: list[_Candidate]) -> tuple[list[Command], Callable[[FetchData], None]]:
        """Whole messages (BODY.PEEK[]), parsed here: for a message without a usable BODYSTRUCTURE."""

        def handle(resp: FetchData) -> None:
            for cand in chunk:
                raw = (resp.get(cand.uid) or {}).get(BODY_KEY)
                if raw is None:
                    cand.failed = True
                else:
                    self._parse_whole(cand, raw)

        return [([c.uid for c in chunk], [BODY_ITEM])], handle

    def _parse_whole(self, cand: _Candidate, raw: bytes) -> None:
        try:
            cand.body = parse_body(raw)
        except Exception:
            log.warning("account %s: unparsable body of UID %s", self.account_id, cand.uid, exc_info=True)
            cand.failed = True

    def _message_row(self, cand: _Candidate, folder: Folder) -> dict[str, Any]:
        body = cand.body
        sender = cand.headers.sender()
        sent = folder.role == "sent" or (sender is not None and sender == self.account.email.lower())
        return {
            "account_id": self.account_id,
            "team_id": self.account.team_id,
            "message_id": cand.headers.message_id,
            "gm_msgid": cand.gm_msgid,
            "size": cand.size,
            "content_hash": cand.headers.header_hash,
            "thread_key": cand.headers.thread_key,
            "subject": cand.headers.subject,
            "date": cand.headers.date,
            "internal_date": cand.internal_date,
            "direction": "sent" if sent else "received",
            "visibility": self.account.visibility,
            "snippet": body.snippet if body else None,
            "text_body": body.text if body else None,
            "html_body": body.html if body else None,
            "attachments": body.attachments_json() if body else None,
            "truncated": cand.truncated,
            "bulk": cand.headers.bulk,
            "created_at": utcnow(),
        }

    @staticmethod
    def _location(message_pk: int, folder: Folder, uid: int, flags: str) -> dict[str, Any]:
        return {
            "message_id": message_pk,
            "folder_id": folder.id,
            "uidvalidity": folder.uidvalidity,
            "uid": uid,
            "flags": flags,
        }

    # ---- transactions, progress, endings ---------------------------------------------------------

    def _writing(self) -> AbstractContextManager[Session]:
        """A write transaction that first checks, in the same transaction, that we still hold the lease."""
        return _fenced_session(self.deps, self.account_id, self.token)

    def _after_commit(self) -> None:
        global _batches_committed
        _batches_committed += 1
        self.slice_batches += 1
        if self.cfg.exit_after_batch is not None and _batches_committed >= self.cfg.exit_after_batch:
            os._exit(3)  # test-only: die hard right after a commit, like a kill -9
        now = time.monotonic()
        if now - self.last_progress >= self.cfg.progress_seconds:
            self.last_progress = now
            self.deps.notifier.sync_progress(self._report())

    def _check_budget(self) -> None:
        if time.monotonic() >= self.deadline:
            raise _BudgetExhausted

    def _report(self) -> RunReport:
        run = self.run_row
        return RunReport(
            account_id=self.account_id,
            run_id=run.id,  # type: ignore[arg-type]
            team_id=self.account.team_id,
            user_id=self.account.user_id,
            email=self.account.email,
            kind=run.kind,
            total=max(run.total, run.processed),
            processed=run.processed,
            stored=run.stored,
            skipped=run.skipped,
            failed_messages=run.failed_messages,
            contacts_matched=run.contacts_matched,
            elapsed_seconds=(utcnow() - run.started_at).total_seconds(),
        )

    def _save_slice(self, *, done: bool) -> None:
        with self._writing() as session:
            account = session.get(EmailAccount, self.account_id)
            run = session.get(SyncRun, self.run_row.id)
            assert account is not None and run is not None
            now = utcnow()
            # Paused or disconnected while this slice ran (by the owner, an uninstall, a deactivation): that wins.
            stopped = account.state in ("paused", "disconnected")
            if not done:
                if not stopped:
                    account.next_sync_at = now  # continue at the next tick; other accounts get a turn first
                    account.state = "syncing"
                session.add(account)
                return
            run.status = "done"
            run.finished_at = now
            if run.stored:  # nothing stored, nobody newly matched: a no-change sync stays O(1) here
                run.contacts_matched = mailstore.contacts_matched_since(
                    session, account_id=self.account_id, team_id=account.team_id, since=run.started_at
                )
            self.run_row.contacts_matched = run.contacts_matched
            session.add(run)
            if not stopped:
                account.state = "active"
            account.current_run_id = None
            account.failures = 0
            account.last_error_code = account.last_error_message = None
            account.last_error_at = None
            account.last_synced_at = now
            rerun = account.sync_requested
            account.sync_requested = False
            if not stopped:
                account.next_sync_at = now if rerun else now + dt.timedelta(seconds=self.cfg.poll_seconds)
            session.add(account)
        self.deps.notifier.sync_completed(self._report())
        if self.was_failing:
            self.deps.notifier.sync_recovered(self._report())

    def _fail(self, exc: SyncError) -> Outcome:
        log.warning("account %s: sync failed [%s] %s", self.account_id, exc.code, exc.message)
        try:
            with self._writing() as session:
                account = session.get(EmailAccount, self.account_id)
                assert account is not None
                now = utcnow()
                account.failures += 1
                account.last_error_code = exc.code
                account.last_error_message = str(exc)
                account.last_error_at = now
                if isinstance(exc, AuthFailed):
                    account.state = "needs_reauth"
                    account.next_sync_at = None  # nothing to retry until the person reconnects
                    run = session.get(SyncRun, self.run_row.id)
                    if run is not None:
                        run.status = "failed"
                        run.finished_at = now
                        run.error_code, run.error_message = exc.code, str(exc)
                        session.add(run)
                    account.current_run_id = None
                elif account.state not in ("paused", "disconnected"):  # a pause that landed meanwhile wins
                    account.state = "error"
                    wait = exc.retry_after if isinstance(exc, Throttled) else backoff_seconds(account.failures)
                    account.next_sync_at = now + dt.timedelta(seconds=wait)
                session.add(account)
        except LeaseLost:
            return Outcome.FAILED
        self.deps.notifier.sync_failed(self._report(), exc.code, exc.message, exc.fix)
        return Outcome.FAILED


@contextmanager
def _fenced_session(deps: EngineDeps, account_id: int, token: int) -> Iterator[Session]:
    """A session whose transaction starts by renewing the lease (the fence), or raises LeaseLost."""
    with session_scope(deps.db) as session:
        if not account_queries.renew_lease(
            session, account_id=account_id, owner=deps.owner, token=token, ttl=deps.config.lease_ttl
        ):
            raise LeaseLost("Another process took over this account's sync.")
        yield session


def uid_windows(uids: Sequence[int], span: int) -> Iterator[tuple[int, int]]:
    """Windows of at most span UIDs covering the sorted uids, none of them empty."""
    i = 0
    while i < len(uids):
        lo = uids[i]
        hi = lo + span - 1
        while i < len(uids) and uids[i] <= hi:
            i += 1
        yield lo, min(hi, uids[i - 1])


def _lowest_uid(client: IMAPClient) -> int:
    """The UID of message 1, below which no window can hold anything (1 for an empty folder).

    UIDs may start anywhere up to 2^32-1: searching 1..UIDNEXT in fixed windows from 1 would cost
    ~200,000 SEARCHes for a folder whose UIDs sit near the top.
    """
    try:
        found = client.search(["1"])  # a bare "1" is message sequence number 1
    except IMAPClientError:
        return 1  # an empty folder: some servers answer BAD for a sequence number that does not exist
    return min(found) if found else 1


def _slice_budget(cfg: EngineConfig, budget: float | None) -> float:
    """The slice's budget, leaving room before the deadline for the batch that runs when it is spent."""
    room = cfg.slice_deadline_seconds - min(60.0, cfg.slice_deadline_seconds / 2)
    return room if budget is None else min(budget, room)


def _raise_if_connection_lost(exc: IMAPClientError) -> None:
    """Re-raise an abort: the connection is gone (or the slice deadline cut it), not the folder."""
    if isinstance(exc, imaplib.IMAP4.abort):
        raise exc


def _flags(raw: Iterable[Any]) -> str:
    names = (f.decode() if isinstance(f, bytes) else str(f) for f in raw)
    # \Recent belongs to one IMAP session, not to the message: storing it would flap on every sync.
    return " ".join(sorted(n for n in names if n.lower() != "\\recent"))


def _is_blocked(email: str, blocked: set[str]) -> bool:
    if email in blocked:
        return True
    domain = email.rpartition("@")[2]
    # A domain blocks its subdomains too: blocking example.com blocks mail.example.com.
    parts = domain.split(".")
    return any(".".join(parts[i:]) in blocked for i in range(len(parts) - 1))


def _hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


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


def _after_header(whole: bytes, header_len: int) -> bool:
    """Whether ``whole`` (BODY[]) has its header's blank line where BODY[HEADER] ended."""
    return header_len >= len(whole) or whole[:header_len].endswith((b"\n\r\n", b"\n\n"))


def _size_chunks(cands: list[_Candidate], limit: int, size: Callable[[_Candidate], int]) -> Iterator[list[_Candidate]]:
    chunk: list[_Candidate] = []
    total = 0
    for cand in cands:
        n = size(cand)
        if chunk and total + n > limit:
            yield chunk
            chunk, total = [], 0
        chunk.append(cand)
        total += n
    if chunk:
        yield chunk
