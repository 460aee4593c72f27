"""Near-real-time mail: the INBOX of each syncable account is watched with IMAP IDLE, and a change triggers a sync.

One `IdleWatcher` per worker process. Its pieces, each a bounded number of threads whatever the number of watches:

- the manager thread reconciles the watches with the database every few seconds: it claims free watch leases
  (`idle_watch`, one owner at a time, like the sync lease), renews the ones it holds, gives back those of accounts
  that left (paused, needs_reauth, disconnected, deleted) and restarts a watch whose login changed;
- a small pool logs in and selects INBOX (a slow server holds one pool thread, never the others), then hands the
  socket to the loop;
- the loop (`sync/idle_loop.py`) keeps every connection in IDLE with one selector;
- the trigger thread calls ``trigger(account_id)`` for each change (the worker marks the account due and starts
  its sync), so a slow database never stalls the loop.

A dropped connection comes back after a backoff (`sync/backoff.py`), and a sync is triggered once it is back (mail
may have come while nobody watched). A server without IDLE gets no watch (polling covers it; it is asked again
hourly). A refused login stops the watch for a long while and triggers one sync: the engine reports the error to
the person and marks the account needs_reauth, which releases the watch (no second notification from here).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from imapclient import IMAPClient

from models import accounts as account_queries
from models import idle_watches
from models.db import session_scope
from models.secrets import SecretKeyError
from sync import metrics
from sync.backoff import MAX_SECONDS, backoff_seconds
from sync.deadline import Deadline, deadline
from sync.engine import EngineDeps
from sync.errors import AuthFailed, SyncError, Throttled
from sync.failure_log import FailureReminder, database_causes
from sync.idle_loop import Ended, Handover, IdleLoop
from sync.imap_limits import MB, ResponseLimits
from sync.imap_session import ImapLogin, account_login, close_client, open_logged_in, translate_errors
from sync.oauth_tokens import TokenKeeper

log = logging.getLogger(__name__)

# Login, CAPABILITY and EXAMINE INBOX: a handful of short responses (a huge mailbox's EXAMINE is still a few lines).
IDLE_LIMITS = ResponseLimits(literal_bytes=1 * MB, untagged_count=10_000, untagged_bytes=4 * MB)
NO_IDLE_RECHECK = 3600.0  # seconds before a server without IDLE is asked again
LIVED_LONG = 60.0  # a connection that lasted this long and then dropped comes back after the shortest backoff
CLAIMS_PER_ROUND = 50  # logins start in waves, not all at once after a restart


@dataclass
class _Watch:
    """One account's watch as the manager sees it (guarded by the watcher's lock)."""

    account_id: int
    token: int
    fingerprint: str
    generation: int = 0
    state: str = "waiting"  # waiting | connecting | idling | no_idle | auth_failed | backoff
    failures: int = 0
    next_attempt: float = 0.0  # monotonic
    reconnect: bool = False  # the next IDLE follows a gap: trigger a sync when it starts
    connects: int = 0


@dataclass
class IdleStats:
    """Counters of one watcher, for tests and doctor."""

    triggers: int = 0
    connects: int = 0
    drops: int = 0
    reasons: list[str] = field(default_factory=list)  # the last few reasons a connection ended


class IdleWatcher:
    """Watches the INBOX of the accounts whose watch leases this process holds; see the module docstring."""

    def __init__(
        self,
        deps: EngineDeps,
        trigger: Callable[[int], None],
        *,
        idle_seconds: float = 1500.0,
        lease_ttl: float | None = None,
        reconcile_seconds: float = 3.0,
        capacity: int = 500,
        login_workers: int = 4,
    ) -> None:
        self.deps = deps
        self.trigger = trigger
        self.idle_seconds = idle_seconds
        self.lease_ttl = lease_ttl if lease_ttl is not None else deps.config.lease_ttl
        self._reconcile_failures = FailureReminder(log, "IDLE watches: reconciling", describe=database_causes(deps.db))
        # Renew well inside the lease: three chances before it runs out.
        self.reconcile_seconds = min(reconcile_seconds, self.lease_ttl / 3)
        self.capacity = capacity
        # The process's owner name plus a suffix: two watchers in one process (tests) never share leases.
        self.owner = f"idle:{deps.owner}:{uuid.uuid4().hex[:6]}"[:128]
        self.stats = IdleStats()
        self._watches: dict[int, _Watch] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=login_workers, thread_name_prefix="idle-login")
        self._logins: set[Deadline] = set()
        self._triggers: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._pending: set[int] = set()
        self._loop = IdleLoop(
            idle_seconds=idle_seconds,
            timeout=deps.config.timeout,
            on_change=self._changed,
            on_idling=self._idling,
            on_end=self._ended,
            is_current=self._is_current,
            on_count=metrics.set_idle_watches,
        )
        self._manager = threading.Thread(target=self._manage, name="idle-manager", daemon=True)
        self._trigger_thread = threading.Thread(target=self._run_triggers, name="idle-trigger", daemon=True)

    # ---- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> IdleWatcher:
        """Start the loop, the manager and the trigger thread; returns self."""
        self._loop.start()
        self._trigger_thread.start()
        self._manager.start()
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stop within seconds: logins cut, DONE and LOGOUT sent (``grace`` seconds for answers), leases given back."""
        self._stop.set()
        self._wake.set()
        self._manager.join(10.0)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for dl in list(self._logins):
            dl.expire()  # a login under way ends now (a login starting after this sees _stop and ends itself)
        self._pool.shutdown(wait=True)
        self._loop.stop(grace)
        self._triggers.put(None)
        self._trigger_thread.join(5.0)
        with self._lock:
            held = list(self._watches)
            self._watches.clear()
        try:
            with session_scope(self.deps.db) as session:
                idle_watches.release(session, owner=self.owner, account_ids=held)
        except Exception:
            # The leases run out on their own; another worker takes the watches then.
            log.warning("could not give back %d IDLE watches; they move when their leases expire", len(held))
        metrics.set_idle_watches(0)

    def states(self) -> dict[int, str]:
        """Each watch's state (a snapshot)."""
        with self._lock:
            return {a: w.state for a, w in self._watches.items()}

    @property
    def idle_commands(self) -> int:
        """IDLE commands sent so far (every connection)."""
        return self._loop.idle_commands

    # ---- the manager ----------------------------------------------------------------------------------

    def _manage(self) -> None:
        next_reconcile = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_reconcile:
                try:
                    self.reconcile()
                except Exception as exc:
                    self._reconcile_failures.failed(exc)  # a dead database: once, then reminders with backoff
                else:
                    self._reconcile_failures.recovered()
                next_reconcile = time.monotonic() + self.reconcile_seconds
            self._start_logins()
            self._wake.wait(min(0.5, max(0.0, next_reconcile - time.monotonic())))
            self._wake.clear()

    def reconcile(self) -> None:
        """One round: renew held leases, give back watches of accounts that left, claim free ones, note changes."""
        with self._lock:
            held = set(self._watches)
        with session_scope(self.deps.db) as session:
            idle_watches.add_missing_rows(session)
            kept = idle_watches.renew(session, owner=self.owner, account_ids=held, ttl=self.lease_ttl)
            current = idle_watches.fingerprints(session, kept)
            leaving = kept - set(current)
            idle_watches.release(session, owner=self.owner, account_ids=leaving)
            room = min(CLAIMS_PER_ROUND, self.capacity - len(current))
            claimed = idle_watches.claim(session, owner=self.owner, ttl=self.lease_ttl, limit=room)
        for account_id in held - kept:
            log.warning("account %s: IDLE watch lease lost to another process; closing it here", account_id)
            self._drop(account_id)
        for account_id in leaving:
            log.info("account %s: no longer syncable; IDLE watch released", account_id)
            self._drop(account_id)
        with self._lock:
            for account_id, fingerprint in current.items():
                watch = self._watches.get(account_id)
                if watch is not None and watch.fingerprint != fingerprint:
                    log.info("account %s: its login changed; the IDLE watch starts again", account_id)
                    watch.fingerprint = fingerprint
                    self._restart(watch)
            for target in claimed:
                # A token above 1 means someone watched it before (a worker that died or stopped): mail may have
                # come meanwhile, so the first IDLE triggers a sync.
                self._watches[target.account_id] = _Watch(
                    target.account_id, target.token, target.fingerprint, reconnect=target.token > 1
                )
        if claimed:
            log.info("IDLE: %d watches claimed (%d held)", len(claimed), len(self._watches))
            self._wake.set()

    def _drop(self, account_id: int) -> None:
        with self._lock:
            self._watches.pop(account_id, None)
        self._loop.remove(account_id)

    def _restart(self, watch: _Watch) -> None:
        """(Lock held.) Forget the current connection or login; log in afresh now."""
        watch.generation += 1
        watch.state, watch.failures, watch.next_attempt, watch.reconnect = "waiting", 0, 0.0, True
        self._loop.remove(watch.account_id)

    def _start_logins(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [
                w
                for w in self._watches.values()
                if w.state in ("waiting", "backoff", "no_idle", "auth_failed") and now >= w.next_attempt
            ]
            for w in due:
                w.state = "connecting"
                w.connects += 1
            jobs = [(w.account_id, w.generation) for w in due]
        for account_id, generation in jobs:
            if self._stop.is_set():
                return
            self._pool.submit(self._login, account_id, generation)

    # ---- the pool: log in, select INBOX, hand over ------------------------------------------------------

    def _login(self, account_id: int, generation: int) -> None:
        self.stats.connects += 1
        try:
            with deadline(self.deps.config.timeout * 2 + 10) as dl:
                self._logins.add(dl)
                if self._stop.is_set():
                    self._logins.discard(dl)
                    return  # stopping: stop() may already have expired the logins it saw
                try:
                    handover = self._open(account_id, generation)
                finally:
                    self._logins.discard(dl)
        except _NoIdle:
            log.info("account %s: the server does not offer IDLE; polling only", account_id)
            self._after_failure(account_id, generation, "no_idle", NO_IDLE_RECHECK)
            return
        except _NotWatchable as exc:
            log.info("account %s: not watched (%s)", account_id, exc)
            self._after_failure(account_id, generation, "backoff", MAX_SECONDS)
            return
        except AuthFailed:
            # The engine tells the person and marks the account needs_reauth (which releases this watch);
            # here: one sync to let it find out now, and no retry storm against the server's login limits.
            log.info("account %s: IDLE login refused; a sync reports it", account_id)
            self._after_failure(account_id, generation, "auth_failed", None, extra_failures=4)
            self._enqueue(account_id)
            return
        except SyncError as exc:
            wait = exc.retry_after if isinstance(exc, Throttled) else None
            log.info("account %s: IDLE connection failed (%s: %s)", account_id, exc.code, exc.message)
            self._after_failure(account_id, generation, "backoff", wait)
            return
        except Exception:
            if not self._stop.is_set():
                log.exception("account %s: IDLE login crashed", account_id)
            self._after_failure(account_id, generation, "backoff", None)
            return
        if self._stop.is_set():
            handover.sock.close()
            return
        self._loop.add(handover)

    def _open(self, account_id: int, generation: int) -> Handover:
        login, expires_at = self._login_data(account_id)
        cfg = self.deps.config
        client = open_logged_in(
            login, timeout=cfg.timeout, ssl_context=cfg.ssl_context, outbound=cfg.outbound, limits=IDLE_LIMITS
        )
        try:
            with translate_errors(login):
                if not client.has_capability("IDLE"):
                    raise _NoIdle()
                client.select_folder("INBOX", readonly=True)  # EXAMINE: the watch never changes anything
                sock, leftover = _take_socket(client)
        except BaseException:
            close_client(client)
            raise
        return Handover(account_id, generation, sock, leftover, expires_at, keep=client)

    def _login_data(self, account_id: int) -> tuple[ImapLogin, float | None]:
        with session_scope(self.deps.db, readonly=True) as session:
            account = account_queries.get_account(session, account_id)
            if account is None or account.state not in account_queries.SYNCABLE_STATES:
                raise _NotWatchable("the account is gone or not syncable")
            if account.auth_kind != "oauth":
                try:
                    return account_login(account, self.deps.secrets.decrypt(account.secret_encrypted)), None
                except SecretKeyError:
                    raise _NotWatchable("its password cannot be decrypted with the current keys") from None
        # Signed in with Google/Microsoft: the same token path as preview and doctor (the stored access token
        # while it lives, else a refresh under the borrowed sync lease).
        keeper = TokenKeeper(
            self.deps.db, self.deps.secrets, self.deps.config.oauth, margin=self.deps.config.token_margin
        )
        login = keeper.login_outside_sync(account, owner=self.owner)
        with session_scope(self.deps.db, readonly=True) as session:
            fresh = account_queries.get_account(session, account_id)
            expires = fresh.oauth_expires_at if fresh is not None else None
        return login, expires.timestamp() if expires is not None else None

    def _after_failure(
        self, account_id: int, generation: int, state: str, wait: float | None, *, extra_failures: int = 0
    ) -> None:
        with self._lock:
            watch = self._watches.get(account_id)
            if watch is None or watch.generation != generation:
                return
            watch.failures += 1
            watch.state = state
            watch.reconnect = True
            delay = backoff_seconds(watch.failures + extra_failures)
            watch.next_attempt = time.monotonic() + max(delay, wait or 0.0)

    # ---- callbacks from the loop (its thread: never block) ----------------------------------------------

    def _is_current(self, account_id: int, generation: int) -> bool:
        with self._lock:
            watch = self._watches.get(account_id)
            return watch is not None and watch.generation == generation and not self._stop.is_set()

    def _idling(self, account_id: int, generation: int, first: bool) -> None:
        with self._lock:
            watch = self._watches.get(account_id)
            if watch is None or watch.generation != generation:
                return
            watch.state = "idling"
            catch_up = first and watch.reconnect
            watch.reconnect = False
        if first:
            log.info("account %s: watching INBOX with IDLE", account_id)
        if catch_up:
            self._enqueue(account_id)

    def _changed(self, account_id: int) -> None:
        self._enqueue(account_id)

    def _ended(self, account_id: int, generation: int, ended: Ended) -> None:
        self.stats.drops += 1
        self.stats.reasons = [*self.stats.reasons[-9:], ended.reason]
        with self._lock:
            watch = self._watches.get(account_id)
            if watch is None or watch.generation != generation:
                return
            watch.generation += 1
            watch.reconnect = True
            if ended.relogin:
                watch.state, watch.next_attempt = "waiting", 0.0
            elif ended.no_idle:
                watch.state, watch.next_attempt = "no_idle", time.monotonic() + NO_IDLE_RECHECK
            else:
                watch.failures = 1 if ended.lived >= LIVED_LONG else watch.failures + 1
                watch.state = "backoff"
                watch.next_attempt = time.monotonic() + backoff_seconds(watch.failures)
        log.info("account %s: IDLE connection ended (%s); it comes back", account_id, ended.reason)
        self._wake.set()

    # ---- triggers -------------------------------------------------------------------------------------

    def _enqueue(self, account_id: int) -> None:
        with self._lock:
            if account_id in self._pending:
                return  # already waiting: one sync covers both changes
            self._pending.add(account_id)
        self._triggers.put(account_id)

    def _run_triggers(self) -> None:
        while True:
            account_id = self._triggers.get()
            if account_id is None:
                return
            with self._lock:
                self._pending.discard(account_id)
            if self._stop.is_set():
                continue
            self.stats.triggers += 1
            try:
                self.trigger(account_id)
            except Exception:
                log.exception("account %s: triggering a sync after an IDLE notice failed", account_id)


class _NoIdle(Exception):
    """The server does not advertise IDLE."""


class _NotWatchable(Exception):
    """The account cannot be watched now (gone, paused, undecryptable)."""


def _take_socket(client: IMAPClient) -> tuple[socket.socket, bytes]:
    """The connection's socket, non-blocking, and whatever imaplib had already read beyond the last reply."""
    imap = client._imap
    sock: socket.socket = imap.sock
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        # A dead peer without a FIN (a lost route) is found in minutes, not at the next DONE only.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 20)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    leftover = b""
    with contextlib.suppress(OSError, ValueError):
        # Only what is buffered already (or arrives this instant): the raw read below is non-blocking.
        leftover = imap.file.read1(65536) or b""
    return sock, leftover


def start_idle_watcher(
    deps: EngineDeps, trigger: Callable[[int], None], *, idle_seconds: float, lease_ttl: float
) -> IdleWatcher:
    """Start watching INBOXes for this worker process; ``trigger(account_id)`` is called on each change."""
    return IdleWatcher(deps, trigger, idle_seconds=idle_seconds, lease_ttl=lease_ttl).start()
