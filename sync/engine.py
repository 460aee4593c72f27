"""The run's lifecycle: take the lease, open (or continue) the run, sync one slice, then save it or record the failure.

The parts of a slice live in their own modules: ``folder_plan`` (what a folder needs, pure), ``passes``
(new mail, flags, deletions, backfill), ``fetch_pipeline`` (one batch from the server), ``batch_writer``
(one batch into the database), ``uid_search`` (windowed SEARCH), ``slice_context`` (what they share).
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import threading
import time
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import Engine
from sqlmodel import Session

from models import accounts as account_queries
from models import contacts as contact_queries
from models import mailstore, states
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox, SecretKeyError
from models.states import AccountState, RunKind, RunStatus
from models.tables import EmailAccount, Folder, SyncRun
from sync.backoff import backoff_seconds
from sync.batch_writer import BatchWriter
from sync.deadline import Deadline, deadline
from sync.errors import AuthFailed, FolderGone, LeaseLost, ProtocolError, SyncError, Throttled, Timeout
from sync.fetch_pipeline import BatchFetcher
from sync.folders import RemoteFolder, discover_folders, selected_by_default
from sync.imap_limits import ResponseLimits
from sync.imap_session import (
    STRICT_POLICY,
    ImapLogin,
    SslContextFactory,
    account_login,
    default_ssl_context,
    imap_session,
)
from sync.notifier import Notifier
from sync.oauth import OAuthProviders
from sync.oauth_tokens import TokenKeeper
from sync.outbound import OutboundPolicy
from sync.passes import FolderPasses, raise_if_connection_lost
from sync.slice_context import BudgetExhausted, SliceContext, fenced_session
from sync.uid_search import uid_windows

__all__ = ["EngineConfig", "EngineDeps", "Outcome", "sync_account", "uid_windows"]

log = logging.getLogger(__name__)


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
            return _run_slice(deps, account_id, token, _slice_budget(deps.config, budget_seconds), dl)
    finally:
        at = time.time()
        with session_scope(deps.db) as session:
            account_queries.release_lease(session, account_id=account_id, owner=deps.owner, token=token)
        log.info("lease given back account=%s owner=%s token=%s at=%.6f", account_id, deps.owner, token, at)


def _run_slice(deps: EngineDeps, account_id: int, token: int, budget: float, dl: Deadline) -> Outcome:
    """Load the account and its run, then sync the mailbox (or record why it cannot be)."""
    key_error: SecretKeyError | None = None
    password = ""
    # Fenced like every other write: a process paused between taking the lease and this transaction (past
    # the TTL) must not mark the account syncing or open a run under another process's lease.
    try:
        with fenced_session(deps, account_id, token) as session:
            account = account_queries.get_account(session, account_id)
            if account is None or account.state not in account_queries.SYNCABLE_STATES:
                return Outcome.SKIPPED
            was_failing = account.last_error_code is not None
            try:
                # An OAuth account has no password: its access token is fetched in _login, outside this transaction.
                password = deps.secrets.decrypt(account.secret_encrypted) if account.auth_kind != "oauth" else ""
            except SecretKeyError as exc:
                key_error = exc
            run, recorded = _open_run(session, account)
            if recorded:
                states.move(account, AccountState.SYNCING)
                account.current_run_id = run.id
                session.add(account)
            ctx = SliceContext(deps, account, run, token=token, budget=budget, slice_deadline=dl, recorded=recorded)
            if key_error is None:
                ctx.contacts = contact_queries.team_contact_emails(session, team_id=account.team_id)
                ctx.blocked = account_queries.blocked_patterns(
                    session, team_id=account.team_id, user_id=account.user_id
                )
    except LeaseLost:
        log.warning("account %s: lease lost before the slice began; stopping without writing", account_id)
        return Outcome.FAILED
    lifecycle = _AccountSync(ctx, was_failing=was_failing)
    if key_error is not None:
        return lifecycle.fail(ProtocolError(str(key_error), "An operator must restore the old key."))
    return lifecycle.run(password)


def _open_run(session: Session, account: EmailAccount) -> tuple[SyncRun, bool]:
    """The run this slice belongs to, and whether it has a row.

    A run that is going on continues (one run across its slices). A plain poll of a healthy account
    gets a run that lives in memory only: its row is written when something happens (see
    SliceContext.note_change), so a poll that finds nothing leaves no trace.
    """
    run = session.get(SyncRun, account.current_run_id) if account.current_run_id else None
    if run is None or run.status != RunStatus.RUNNING:
        pending = any(f.selected and not f.backfill_done for f in account_queries.folders_of(session, account.id))  # type: ignore[arg-type]
        first_sync = account.start_date is not None and not account.last_synced_at
        kind = RunKind.PAST if first_sync else RunKind.WIDEN if pending else RunKind.INCREMENTAL
        # A poll of a healthy account that has synced before: its row waits until something happens.
        # The first sync of an account, a retry after an error and any other state are events already.
        plain_poll = (
            kind == RunKind.INCREMENTAL
            and account.state == AccountState.ACTIVE
            and account.last_error_code is None
            and account.last_synced_at is not None
        )
        if plain_poll:
            return SyncRun(account_id=account.id, kind=kind), False  # type: ignore[arg-type]
        run = account_queries.open_run(session, account_id=account.id, kind=kind)  # type: ignore[arg-type]
    run.slices += 1
    session.add(run)
    session.flush()
    return run, True


class _AccountSync:
    """One slice of a run for one account: connect, sync every folder, then save the slice or record the failure."""

    def __init__(self, ctx: SliceContext, *, was_failing: bool) -> None:
        self.ctx = ctx
        self.deps = ctx.deps
        self.cfg = ctx.cfg
        self.account_id = ctx.account_id
        self.was_failing = was_failing  # the account had an error: its success is a recovery to tell
        self.writer = BatchWriter(ctx)
        self.fetcher = BatchFetcher(ctx, self.writer)
        self.passes = FolderPasses(ctx, self.fetcher)

    def run(self, password: str) -> Outcome:
        """Sync the mailbox and save the slice; every ending becomes an Outcome."""
        limits = ResponseLimits.for_messages(self.cfg.max_message_bytes, self.cfg.body_chunk_bytes)
        try:
            login = self._login(password)
            with imap_session(
                login,
                timeout=self.cfg.timeout,
                ssl_context=self.cfg.ssl_context,
                outbound=self.cfg.outbound,
                limits=limits,
            ) as client:
                client.normalise_times = False
                self._sync_mailbox(client)
        except BudgetExhausted:
            self._save_slice(done=False)
            return Outcome.MORE
        except LeaseLost:
            log.warning("account %s: lease lost; stopping without writing", self.account_id)
            return Outcome.FAILED
        except SyncError as exc:
            if isinstance(exc, Timeout) and self.ctx.slice_deadline.expired and self.deps.stopping.is_set():
                # The process is stopping and cut the connection (expire_all): not the server's fault.
                # The slice ends as if its time ran out; the next worker continues from the cursors.
                log.info("account %s: slice stopped by shutdown", self.account_id)
                self._save_slice(done=False)
                return Outcome.MORE
            return self.fail(exc)
        except Exception:
            log.exception("account %s: unexpected error during sync", self.account_id)
            return self.fail(ProtocolError("An unexpected error stopped the sync.", "It is retried automatically."))
        self._save_slice(done=True)
        return Outcome.DONE

    def _login(self, password: str) -> ImapLogin:
        account = self.ctx.account
        if account.auth_kind != "oauth":
            return account_login(account, password)
        # Signed in with Google/Microsoft: the access token is refreshed here, under this slice's lease.
        keeper = TokenKeeper(self.deps.db, self.deps.secrets, self.cfg.oauth, margin=self.cfg.token_margin)
        return keeper.login(account, self.ctx.writing)

    def _sync_mailbox(self, client: IMAPClient) -> None:
        ctx = self.ctx
        caps = {c.upper() for c in client.capabilities()}
        ctx.condstore = b"CONDSTORE" in caps
        ctx.gmail = b"X-GM-EXT-1" in caps
        if ctx.condstore and b"ENABLE" in caps:
            client.enable("CONDSTORE")
        remote = discover_folders(client)
        folders, vanished = self._reconcile_folders(remote)
        pending = [f for f in folders if f.selected and not f.backfill_done]
        self._estimate_total(client, pending)
        if ctx.recorded and ctx.run.slices == 1:
            self.deps.notifier.sync_started(ctx.report())  # after the estimate, so it shows a total
        for folder in folders:
            if folder.selected:
                try:
                    self.passes.sync_folder(client, folder)
                except FolderGone:
                    log.info("account %s: folder %r vanished during sync", self.account_id, folder.name)
        if vanished:
            with ctx.writing() as session:
                ctx.note_change(session)
                for folder in vanished:
                    mailstore.delete_folder(session, folder)
            ctx.after_write()
            ctx.removed_locations = True
        if ctx.removed_locations:
            with ctx.writing() as session:
                account_queries.mark_sweep_pending(session, account_id=self.account_id)
            ctx.account.sweep_pending = True
        if ctx.account.sweep_pending and all(f.backfill_done for f in folders if f.selected):
            # A message leaves only when no folder holds it; waiting for every backfill first lets a
            # message moved into a folder not yet backfilled be found there instead of re-fetched.
            with ctx.writing() as session:
                if mailstore.delete_orphan_messages(session, account_id=self.account_id):
                    ctx.note_change(session)
                account_queries.mark_sweep_pending(session, account_id=self.account_id, pending=False)
            ctx.after_write()

    def _reconcile_folders(self, remote: list[RemoteFolder]) -> tuple[list[Folder], list[Folder]]:
        with session_scope(self.deps.db) as session:
            known = {f.name: f for f in account_queries.folders_of(session, self.account_id)}
            for rf in remote:
                folder = known.get(rf.name)
                if folder is None:
                    # A folder that appears later is treated like one seen at setup: past mail by the
                    # account's window and scope, new mail from now on.
                    selected = self.ctx.account.sync_mode == "all" and selected_by_default(rf.role)
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
        ctx = self.ctx
        ctx.estimates = {}
        ctx.run.total = ctx.run.processed
        for folder in pending:
            try:
                count = int(client.folder_status(folder.name, [b"MESSAGES"])[b"MESSAGES"])
            except IMAPClientError as exc:
                raise_if_connection_lost(exc)
                continue
            ctx.estimates[folder.id] = count  # type: ignore[index]
            ctx.run.total += count

    # ---- endings ---------------------------------------------------------------------------------

    def _save_slice(self, *, done: bool) -> None:
        """Keep the cursors' work: continue at the next tick (not done) or finish the run and schedule the next poll."""
        ctx = self.ctx
        with ctx.writing() as session:
            account = session.get(EmailAccount, self.account_id)
            assert account is not None
            now = utcnow()
            # Paused or disconnected while this slice ran (by the owner, an uninstall, a deactivation): that wins.
            stopped = account.state in (AccountState.PAUSED, AccountState.DISCONNECTED)
            if not done:
                if not stopped:
                    account.next_sync_at = now  # continue at the next tick; other accounts get a turn first
                    if ctx.recorded:
                        states.move(account, AccountState.SYNCING)
                session.add(account)
                return
            if ctx.recorded:
                run = session.get(SyncRun, ctx.run.id)
                assert run is not None
                run.status = RunStatus.DONE
                run.finished_at = now
                if run.stored:  # nothing stored, nobody newly matched: a no-change sync stays O(1) here
                    run.contacts_matched = mailstore.contacts_matched_since(
                        session, account_id=self.account_id, team_id=account.team_id, since=run.started_at
                    )
                ctx.run.contacts_matched = run.contacts_matched
                session.add(run)
                if not stopped:
                    states.move(account, AccountState.ACTIVE)
                account.current_run_id = None
            # A poll without a row left the state alone: it was "active" and nothing happened to change it
            # (writing it each poll would make Home see a change where there is none).
            account.failures = 0
            account.last_error_code = account.last_error_message = None
            account.last_error_at = None
            account.last_synced_at = now
            rerun = account.sync_requested
            account.sync_requested = False
            if not stopped:
                account.next_sync_at = now if rerun else now + dt.timedelta(seconds=self.cfg.poll_seconds)
            session.add(account)
        if not ctx.recorded:
            return  # nothing happened: no notification, so no Slack call
        self.deps.notifier.sync_completed(ctx.report())
        if self.was_failing:
            self.deps.notifier.sync_recovered(ctx.report())

    def fail(self, exc: SyncError) -> Outcome:
        """Record the error on the account (and its run), schedule the retry, tell the owner."""
        ctx = self.ctx
        log.warning("account %s: sync failed [%s] %s", self.account_id, exc.code, exc.message)
        try:
            with ctx.writing() as session:
                if ctx.recorded and session.get(SyncRun, ctx.run.id) is None:
                    ctx.forget_unsaved_run()  # its insert was rolled back with the write that failed
                ctx.note_change(session)  # an error is an event: the run gets its row
                ctx.skip_announcement()  # the failure notification says it all
                account = session.get(EmailAccount, self.account_id)
                assert account is not None
                now = utcnow()
                account.failures += 1
                account.last_error_code = exc.code
                account.last_error_message = str(exc)
                account.last_error_at = now
                if isinstance(exc, AuthFailed):
                    states.move(account, AccountState.NEEDS_REAUTH)
                    account.next_sync_at = None  # nothing to retry until the person reconnects
                    run = session.get(SyncRun, ctx.run.id)
                    if run is not None:
                        run.status = RunStatus.FAILED
                        run.finished_at = now
                        run.error_code, run.error_message = exc.code, str(exc)
                        session.add(run)
                    account.current_run_id = None
                elif account.state not in (AccountState.PAUSED, AccountState.DISCONNECTED):  # a pause landed meanwhile
                    states.move(account, AccountState.ERROR)
                    wait = exc.retry_after if isinstance(exc, Throttled) else backoff_seconds(account.failures)
                    account.next_sync_at = now + dt.timedelta(seconds=wait)
                session.add(account)
        except LeaseLost:
            log.warning("account %s: lease lost; stopping without writing", self.account_id)
            return Outcome.FAILED
        self.deps.notifier.sync_failed(ctx.report(), exc.code, exc.message, exc.fix)
        return Outcome.FAILED


def _slice_budget(cfg: EngineConfig, budget: float | None) -> float:
    """The slice's budget, leaving room before the deadline for the batch that runs when it is spent."""
    room = cfg.slice_deadline_seconds - min(60.0, cfg.slice_deadline_seconds / 2)
    return room if budget is None else min(budget, room)
