"""The elected clock of the many-machines backend: any number of `worker --clock`, exactly one ticks.

The one that holds a PostgreSQL advisory lock ticks. The lock lives as long as the session that took it,
so it is taken on a dedicated connection kept open for the whole leadership; every tick runs in that same
session and starts by checking, in its own transaction, that the session still holds the lock (a tick
whose connection was lost and silently replaced claims nothing). The leader checks its connection every
`EMAILSYNC_CLOCK_SECONDS`; when it is gone it stops ticking at once and competes again, and standbys try
for the lock that often, so another takes over within seconds of the leader's death. The server ends a
leader's session idle for several clock periods (a frozen process), which frees the lock too.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import Engine, create_engine, text, update
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, col, select

from models.accounts import SYNCABLE_STATES
from models.clock import utcnow
from models.db import IDLE_IN_TRANSACTION_MS, LOCK_TIMEOUT_MS, session_scope
from models.retention import Pruned
from models.tables import EmailAccount
from sync import metrics
from sync.engine import EngineDeps
from sync.procrastinate_backend import ProcrastinateDispatcher
from sync.scheduler import Clock, Retention

log = logging.getLogger(__name__)

# pg_try_advisory_lock(int4, int4): pg_locks shows classid = LOCK_CLASS, objid = LOCK_ID, objsubid = 2.
LOCK_CLASS = 0x656D  # "em"
LOCK_ID = 1
TRY_LOCK = text("SELECT pg_try_advisory_lock(:c, :o)")
HOLDS_LOCK = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = :c AND objid = :o"
    " AND objsubid = 2 AND granted AND pid = pg_backend_pid())"
)
HOLDER = text(
    "SELECT a.application_name, a.client_addr, a.backend_start FROM pg_locks l JOIN pg_stat_activity a"
    " ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.classid = :c AND l.objid = :o AND l.objsubid = 2"
    " AND l.granted"
    # Advisory locks are per database: another database's clock on the same server is not ours.
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def clock_holder(db: Engine) -> dict[str, str] | None:
    """Who holds the clock now (its application name names the process), or None when nobody does."""
    with db.connect() as conn:
        row = conn.execute(HOLDER, {"c": LOCK_CLASS, "o": LOCK_ID}).first()
    if row is None:
        return None
    name, addr, since = row
    return {"owner": str(name).removeprefix("emailsync-clock:"), "address": str(addr or "local"), "since": str(since)}


class _Collect:
    """A dispatcher that only notes the accounts (the fenced tick queues them after its transaction)."""

    def __init__(self, into: list[int]) -> None:
        self.into = into

    def dispatch(self, account_id: int) -> None:
        self.into.append(account_id)

    def shutdown(self, *, interrupt: bool = False) -> None:
        """Nothing runs here."""


class _FencedClock(Clock):
    """The tick and the pruning, run in the session that holds the clock lock, one at a time."""

    def __init__(self, election: ElectedClock, deps: EngineDeps, dispatcher: ProcrastinateDispatcher) -> None:
        self.claimed: list[int] = []
        super().__init__(
            deps,
            _Collect(self.claimed),  # claims are collected in the session, queued after it lets go of the connection
            tick_seconds=election.tick_seconds,
            retention=election.retention,
            guard=self._holds_lock,
        )
        self.election = election
        self.procrastinate = dispatcher

    def _holds_lock(self, session: Session) -> bool:
        held = bool(session.exec(HOLDS_LOCK, params={"c": LOCK_CLASS, "o": LOCK_ID}).scalar())  # type: ignore[call-overload]
        if not held:
            log.warning("clock: this session no longer holds the clock lock; not ticking")
        return held

    def tick(self) -> list[int]:
        begun = time.time()
        with self.election.connection_use:
            self.claimed.clear()
            claimed = super().tick()
        # Queued outside the dedicated connection's lock: a slow queue must not keep the check from it
        # (the server ends that session when it stays idle for several clock periods).
        for account_id in claimed:
            try:
                self.procrastinate.dispatch(account_id)
            except Exception:  # this account waits for the claim hold; the others are queued now
                log.warning("account %s: queueing its sync failed", account_id, exc_info=True)
        if self.last_guarded:
            # Marks with wall-clock times and owner: operators (and the takeover test) see who ticked when.
            log.info(
                "tick owner=%s begun=%.6f ended=%.6f claimed=%d", self.deps.owner, begun, time.time(), len(claimed)
            )
        return claimed

    def prune(self) -> Pruned:
        with self.election.connection_use:
            pruned = super().prune()
        self.procrastinate.delete_old_jobs(self.retention.runs)
        return pruned

    def halt(self) -> None:
        """Stop ticking now, without waiting for a tick that is stuck on a lost connection."""
        self._scheduler.shutdown(wait=False)


class ElectedClock:
    """Competes for the clock; while elected, ticks (deferring jobs), finds stalled jobs and reports queue depth."""

    def __init__(
        self,
        deps: EngineDeps,
        dispatcher: ProcrastinateDispatcher,
        *,
        database_url: str,
        tick_seconds: float,
        clock_seconds: float,
        stall_seconds: float,
        retention: Retention | None = None,
    ) -> None:
        self.deps = deps
        self.dispatcher = dispatcher
        self.database_url = database_url
        self.tick_seconds = tick_seconds
        self.clock_seconds = clock_seconds
        self.stall_seconds = stall_seconds
        self.retention = retention or Retention()
        self.connection_use = threading.Lock()  # one statement at a time on the dedicated connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clock-election", daemon=True)
        self._engine: Engine | None = None
        self._clock: _FencedClock | None = None
        self._last_stall_check = 0.0

    @property
    def leading(self) -> bool:
        """True while this process is the clock."""
        return self._clock is not None

    def start(self) -> None:
        """Start competing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop ticking and give the lock back (closing the dedicated connection)."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._resign("stopping", wait=True)  # a tick under way finishes (it is short) before the queue closes

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._clock is None:
                    self._compete()
                elif not self._still_held():
                    self._resign("lost the connection that holds the clock lock")
                    continue  # compete again at once
            except Exception:
                log.exception("clock: election round failed")
                self._resign("the election round failed")
            if self._clock is not None:
                try:
                    self._housekeeping()
                except Exception:  # the job queue or the database is slow or away: next period
                    log.exception("clock: finding stalled jobs failed")
            self._stop.wait(self.clock_seconds)

    def _dedicated_engine(self) -> Engine:
        # One connection for the whole leadership (StaticPool); no pre-ping: a lost connection must show
        # as lost, and the guard catches a silently replaced one. The server ends the session when the
        # process stays silent for several clock periods (frozen), which frees the lock.
        idle_ms = int(max(4 * self.clock_seconds, 5.0) * 1000)
        options = (
            f"-c idle_session_timeout={idle_ms} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
            f" -c lock_timeout={LOCK_TIMEOUT_MS} -c statement_timeout={int(max(self.clock_seconds, 5.0) * 2000)}"
        )
        name = f"emailsync-clock:{self.deps.owner}"[:63]
        return create_engine(
            self.database_url,
            poolclass=StaticPool,
            hide_parameters=True,
            connect_args={
                "options": options,
                "application_name": name,
                "connect_timeout": max(2, int(self.clock_seconds * 2)),
                "keepalives": 1,
                "keepalives_idle": max(1, int(self.clock_seconds)),
                "keepalives_interval": 1,
                "keepalives_count": 3,
            },
        )

    def _compete(self) -> None:
        engine = self._engine or self._dedicated_engine()
        self._engine = engine
        with self.connection_use, engine.connect() as conn:
            won = bool(conn.execute(TRY_LOCK, {"c": LOCK_CLASS, "o": LOCK_ID}).scalar())
            conn.commit()
        if not won:
            return
        log.info("clock: elected; %s ticks now", self.deps.owner)
        deps = EngineDeps(
            db=engine,
            secrets=self.deps.secrets,
            notifier=self.deps.notifier,
            config=self.deps.config,
            owner=self.deps.owner,
            stopping=self.deps.stopping,
        )
        self._clock = _FencedClock(self, deps, self.dispatcher)
        self._clock.start()

    def _still_held(self) -> bool:
        assert self._engine is not None
        try:
            with self.connection_use, self._engine.connect() as conn:
                held = bool(conn.execute(HOLDS_LOCK, {"c": LOCK_CLASS, "o": LOCK_ID}).scalar())
                conn.commit()
        except Exception as exc:
            log.warning("clock: the dedicated connection failed (%s)", exc.__class__.__name__)
            return False
        return held

    def _resign(self, why: str, *, wait: bool = False) -> None:
        clock, self._clock = self._clock, None
        if clock is not None:
            if wait:
                clock.stop()
            else:
                clock.halt()  # the connection is gone: a tick stuck on it must not hold up the next leader
            log.warning("clock: %s stops ticking (%s)", self.deps.owner, why)
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()  # closes the session: the lock, if still ours, goes with it

    def _housekeeping(self) -> None:
        """Stalled jobs and queue depth, every clock period at most (cheap queries on the job table)."""
        now = time.monotonic()
        if now - self._last_stall_check < self.clock_seconds:
            return
        self._last_stall_check = now
        stalled = self.dispatcher.finish_stalled(self.stall_seconds)
        if stalled:
            self._make_due([s.account_id for s in stalled if s.account_id is not None])
        metrics.set_queue_depth(self.dispatcher.queue_depth())

    def _make_due(self, account_ids: list[int]) -> None:
        """Make the stalled jobs' accounts due, so the next tick re-queues them (their lease still fences)."""
        # A row locked by a frozen transaction is skipped: its lease (and the claim hold) brings it back.
        unlocked = (
            select(col(EmailAccount.id))
            .where(col(EmailAccount.id).in_(account_ids), col(EmailAccount.state).in_(SYNCABLE_STATES))
            .with_for_update(skip_locked=True)
        )
        with session_scope(self.deps.db) as session:
            session.exec(update(EmailAccount).where(col(EmailAccount.id).in_(unlocked)).values(next_sync_at=utcnow()))
