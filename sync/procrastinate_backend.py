"""The many-machines backend: the tick defers `sync_account(id)` to Procrastinate, whose workers run slices.

Procrastinate's `lock` keeps two jobs of one account from running at once and its `queueing_lock` keeps
one waiting job per account, but neither is a fence against a worker paused past the stall timeout: the
account lease in the database (sync/engine.py) stays the fence. Jobs are doorbells; the account rows
(`next_sync_at`) are the truth, so a failed or lost job costs one tick, never a sync.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from procrastinate import App, PsycopgConnector
from procrastinate.exceptions import AlreadyEnqueued, ConnectorException
from procrastinate.jobs import Job, Status
from procrastinate.manager import JobManager
from sqlalchemy import make_url

from models.db import application_name, postgres_session_options
from sync.engine import EngineDeps, Outcome, sync_account
from sync.errors import LeaseLost
from sync.slice_metrics import metered, observed_slice

log = logging.getLogger(__name__)

TASK_NAME = "sync_account"
QUEUE = "sync"
CALL_TIMEOUT = 30.0  # seconds for one call into the job queue from the clock's threads
T = TypeVar("T")


def conninfo(database_url: str) -> str:
    """The libpq URL of a SQLAlchemy PostgreSQL URL (Procrastinate talks to psycopg directly)."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def make_app(database_url: str, *, max_connections: int) -> App:
    """A Procrastinate app on the app's database, its sessions set like the app's own (timeouts, name)."""
    connector = PsycopgConnector(
        conninfo=conninfo(database_url),
        min_size=1,
        max_size=max(1, max_connections),
        kwargs={"options": postgres_session_options(), "application_name": application_name()},
    )
    app = App(connector=connector)
    app.job_manager = _JobManager(connector)  # before any task is registered: tasks keep a reference
    return app


class _JobManager(JobManager):
    """Procrastinate's job manager, but a job the clock already finished as stalled is not an error."""

    async def finish_job(self, job: Job, status: Status, delete_job: bool) -> None:
        try:
            await super().finish_job(job, status, delete_job)
        except ConnectorException as exc:
            # A worker paused past the stall timeout wakes up and ends its job: the clock finished it as
            # failed meanwhile (and the lease kept this worker from writing). Nothing left to record.
            if 'not in "doing"' not in str(exc.__cause__):
                raise
            log.warning("job %s: finished as stalled by the clock while this worker was away", job.id)


def account_lock(account_id: int) -> str:
    """The Procrastinate lock and queueing lock of one account's jobs."""
    return f"emailsync-account-{account_id}"


def run_slice(deps: EngineDeps, account_id: int, budget_seconds: float | None) -> Outcome:
    """One slice of the account's sync (`sync.engine.sync_account`), counted in the metrics like a local one."""
    with observed_slice(deps.db, account_id) as tally:
        try:
            outcome = sync_account(deps, account_id, budget_seconds=budget_seconds)
        except LeaseLost:
            # Found at the slice's last commit: another process took over while this one was paused or slow.
            log.warning("account %s: lease lost; stopping without writing", account_id)
            outcome = Outcome.FAILED
        tally.outcome = outcome.value
    return outcome


def register_sync_task(app: App, deps: EngineDeps, *, slice_seconds: float | None) -> None:
    """Register the job that runs one slice of an account's sync in this worker."""
    deps = replace(deps, notifier=metered(deps.notifier))  # run kinds and errors by class land in /metrics

    # retry=False: the engine records failures and backs off by itself; a Procrastinate retry would also
    # collide with the queueing lock of the job the next tick defers.
    @app.task(name=TASK_NAME, queue=QUEUE, retry=False)
    def sync_account_job(account_id: int) -> str:
        try:
            return run_slice(deps, account_id, slice_seconds).value
        except Exception:
            log.exception("account %s: sync slice crashed", account_id)
            raise


@dataclass(frozen=True)
class StalledJob:
    """A job left in `doing` by a worker that stopped sending heartbeats."""

    job_id: int
    account_id: int | None
    worker_id: int | None


class _LoopThread:
    """An asyncio loop of its own in a daemon thread, so synchronous callers (the clock) use the async API."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._closed = False
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the job queue's connections are closed (the process is stopping)")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class ProcrastinateDispatcher:
    """Defers one `sync_account` job per claimed account (a `Dispatcher`, next to `LocalDispatcher`)."""

    def __init__(self, database_url: str) -> None:
        self._loop = _LoopThread("procrastinate-clock")
        self.app = make_app(database_url, max_connections=2)
        self._loop.run(self._open())

    async def _open(self) -> None:
        await self.app.open_async()

    def dispatch(self, account_id: int) -> None:
        """Queue the account's job; a job already waiting for it is enough (AlreadyEnqueued is not an error)."""
        lock = account_lock(account_id)
        deferrer = self.app.configure_task(TASK_NAME, queue=QUEUE, lock=lock, queueing_lock=lock)
        try:
            self._loop.run(deferrer.defer_async(account_id=account_id))
        except AlreadyEnqueued:
            log.debug("account %s: a sync job already waits", account_id)

    def finish_stalled(self, stall_seconds: float) -> list[StalledJob]:
        """Finish as failed the jobs of workers silent for stall_seconds (never retried in place).

        A retry would collide with the queueing lock of the job the next tick defers; the account row
        is the truth, so the next tick re-queues the account, and its lease keeps the paused worker
        from writing if it ever wakes up.
        """
        jobs = self._loop.run(
            self.app.job_manager.get_stalled_jobs(task_name=TASK_NAME, seconds_since_heartbeat=stall_seconds)
        )
        finished: list[StalledJob] = []
        for job in jobs:
            assert job.id is not None
            account = job.task_kwargs.get("account_id")
            stalled = StalledJob(job.id, account if isinstance(account, int) else None, job.worker_id)
            try:
                self._loop.run(
                    self.app.job_manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
                )
            except Exception as exc:  # it ended (or was finished by another clock) between the query and now
                log.info("stalled job %s: already finished (%s)", job.id, exc.__class__.__name__)
                continue
            log.warning(
                "stalled job %s (account %s, worker %s) finished as failed; the next tick re-queues the account",
                stalled.job_id,
                stalled.account_id,
                stalled.worker_id,
            )
            finished.append(stalled)
        return finished

    def queue_depth(self) -> int:
        """How many sync jobs wait to run."""
        queues = self._loop.run(self.app.job_manager.list_queues_async(queue=QUEUE))
        return sum(int(q["todo"]) for q in queues)

    def delete_old_jobs(self, older_than: dt.timedelta) -> None:
        """Delete finished jobs (succeeded or failed) older than the retention (their rows only feed doctor)."""
        hours = max(1, int(older_than.total_seconds() // 3600))
        self._loop.run(
            self.app.job_manager.delete_old_jobs(nb_hours=hours, queue=QUEUE, include_failed=True, include_aborted=True)
        )

    def shutdown(self, *, interrupt: bool = False) -> None:
        """Close the queue's connections (the jobs themselves run in the workers)."""
        try:
            self._loop.run(self.app.close_async(), timeout=10)
        except Exception:
            log.warning("closing the job queue's connections failed", exc_info=True)
        self._loop.close()
