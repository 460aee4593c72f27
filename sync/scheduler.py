"""The scheduler tick (APScheduler 3) that claims due accounts, and the in-process dispatcher."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from sqlmodel import Session

from models import accounts as account_queries
from models import retention
from models.db import session_scope
from sync.deadline import expire_all
from sync.engine import EngineDeps, Outcome, sync_account
from sync.failure_log import FailureReminder, database_causes
from sync.metrics import set_accounts_due, set_queue_depth
from sync.slice_metrics import metered, observed_slice

log = logging.getLogger(__name__)

HEARTBEAT_NAME = "clock"


@dataclass(frozen=True)
class Retention:
    """How long bookkeeping rows are kept, and how often they are pruned."""

    slack_events: dt.timedelta = dt.timedelta(hours=24)
    runs: dt.timedelta = dt.timedelta(days=30)
    connect_failures: dt.timedelta = dt.timedelta(days=1)  # longer than any failure-limit window
    tracking_events: dt.timedelta = dt.timedelta(days=90)  # opens and clicks of sent mail (DESIGN section 13)
    every_seconds: float = 3600.0


class Dispatcher(Protocol):
    """Hands a claimed account to whatever runs syncs (a thread pool here, a job queue elsewhere)."""

    def dispatch(self, account_id: int) -> None:
        """Start (or queue) one slice of the account's sync."""

    def shutdown(self, *, interrupt: bool = False) -> None:
        """Stop taking work and wait for what runs (with ``interrupt``, end it at once first)."""


class LocalDispatcher:
    """Runs syncs in a thread pool of this process; an account already running here is not queued twice."""

    def __init__(self, deps: EngineDeps, *, workers: int, slice_seconds: float | None) -> None:
        self.deps = replace(deps, notifier=metered(deps.notifier))  # slices and errors land in /metrics
        self.slice_seconds = slice_seconds
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync")
        self._running: set[int] = set()
        self._waiting = 0  # submitted, not yet started: the queue depth in /metrics
        self._futures: set[Future[Outcome | None]] = set()
        self._lock = threading.Lock()

    def dispatch(self, account_id: int) -> None:
        """Submit the account unless it is already running in this process."""
        with self._lock:
            if account_id in self._running:
                return
            self._running.add(account_id)
            future = self._pool.submit(self._run, account_id)
            self._futures.add(future)
            self._waiting += 1
            set_queue_depth(self._waiting)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[Outcome | None]) -> None:
        with self._lock:
            self._futures.discard(future)
            if future.cancelled():  # shut down before its turn: it never started, so it no longer waits
                self._waiting -= 1
                set_queue_depth(self._waiting)

    def _run(self, account_id: int) -> Outcome | None:
        with self._lock:
            self._waiting -= 1
            set_queue_depth(self._waiting)
        try:
            with observed_slice(self.deps.db, account_id) as tally:
                outcome = sync_account(self.deps, account_id, budget_seconds=self.slice_seconds)
                tally.outcome = outcome.value
            return outcome
        except Exception:
            log.exception("account %s: sync slice crashed", account_id)
            return None
        finally:
            with self._lock:
                self._running.discard(account_id)

    def shutdown(self, *, interrupt: bool = False) -> None:
        """Stop taking work and wait for the running slices; with ``interrupt``, end them at once (the process stops).

        Without ``interrupt`` each slice runs to its end (its budget, at most its deadline). With it, every
        live deadline of the process is expired (`sync.deadline.expire_all`): the connections are shut down,
        so a slice stuck on a server that drips or stays silent ends now, and the wait is seconds. The engine
        sees `deps.stopping` and ends such a slice like one whose time ran out (cursors kept, no failure
        recorded). Only the worker process runs slices; connection tests live in the web process.
        """
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not interrupt:
            self._pool.shutdown(wait=True)
            return
        self.deps.stopping.set()
        while True:
            with self._lock:
                running = set(self._futures)
            if not running:
                break
            expire_all()
            # Again until all have ended: a slice that was just starting may open its connection after this.
            wait(running, timeout=0.5)
        self._pool.shutdown(wait=True)


class Clock:
    """The tick: record a heartbeat, claim due accounts, dispatch them; and, hourly, prune bookkeeping rows."""

    def __init__(
        self,
        deps: EngineDeps,
        dispatcher: Dispatcher,
        *,
        tick_seconds: float,
        retention: Retention | None = None,
        guard: Callable[[Session], bool] | None = None,
    ) -> None:
        self.deps = deps
        self.dispatcher = dispatcher
        self.tick_seconds = tick_seconds
        self.retention = retention or Retention()
        # Checked first in the tick's own transaction: the elected clock ticks only while it holds its lock.
        self.guard = guard
        self.last_guarded = True
        self._scheduler = BackgroundScheduler(daemon=True)
        self._tick_failures = FailureReminder(log, "scheduler tick", describe=database_causes(deps.db))

    def tick(self) -> list[int]:
        """One tick; returns the accounts it dispatched."""
        with session_scope(self.deps.db) as session:
            self.last_guarded = self.guard is None or self.guard(session)
            if not self.last_guarded:
                return []
            account_queries.record_heartbeat(session, name=HEARTBEAT_NAME, owner=self.deps.owner)
            # Hold claimed accounts as long as a lease lives, so a dead worker's accounts come back.
            claimed = account_queries.claim_due_accounts(session, hold_seconds=self.deps.config.lease_ttl)
        set_accounts_due(len(claimed))
        for account_id in claimed:
            self.dispatcher.dispatch(account_id)
        return claimed

    def _safe_tick(self) -> None:
        try:
            self.tick()
        except Exception as exc:
            self._tick_failures.failed(exc)  # once, then reminders with backoff: not a traceback every tick
        else:
            self._tick_failures.recovered()

    def prune(self) -> retention.Pruned:
        """Delete handled Slack event ids and finished runs older than the retention."""
        with session_scope(self.deps.db) as session:
            pruned = retention.prune(
                session,
                slack_events_older_than=self.retention.slack_events,
                runs_older_than=self.retention.runs,
                connect_failures_older_than=self.retention.connect_failures,
                tracking_events_older_than=self.retention.tracking_events,
            )
        if pruned.tracking_events:
            log.info("pruned %d tracking events", pruned.tracking_events)
        if pruned.slack_events or pruned.runs or pruned.connect_failures:
            log.info(
                "pruned %d Slack event ids, %d finished runs and %d failed connects",
                pruned.slack_events,
                pruned.runs,
                pruned.connect_failures,
            )
        return pruned

    def _safe_prune(self) -> None:
        try:
            self.prune()
        except Exception as exc:
            cause = self._tick_failures.describe(exc)  # a dead database: one line, as for the tick
            if cause is None:
                log.exception("pruning bookkeeping rows failed")
            else:
                log.error("pruning bookkeeping rows failed: %s", cause)

    def start(self) -> None:
        """Tick now and then every tick_seconds, never two ticks at once; prune now and then every retention period."""
        self._scheduler.add_job(
            self._safe_tick,
            "interval",
            seconds=self.tick_seconds,
            max_instances=1,
            coalesce=True,
            id="tick",
            next_run_time=None,
        )
        self._scheduler.add_job(
            self._safe_prune,
            "interval",
            seconds=self.retention.every_seconds,
            max_instances=1,
            coalesce=True,
            id="prune",
            next_run_time=dt.datetime.now(dt.UTC),  # a worker that restarts often still prunes
        )
        self._scheduler.start()
        self._scheduler.modify_job("tick", next_run_time=dt.datetime.now(dt.UTC))

    def stop(self) -> None:
        """Stop ticking (running syncs are the dispatcher's to finish)."""
        self._scheduler.shutdown(wait=True)
