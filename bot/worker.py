"""The worker process: syncs, IDLE watches, the scheduler tick and the weekly digest, stopped by SIGINT/SIGTERM.

On the local backend one worker ticks and runs syncs in a thread pool. On the procrastinate backend
(many machines) it runs Procrastinate jobs, and with ``clock`` it also competes to be the one clock.
Either way it holds IDLE watches (each watch leased to one worker) that start a sync within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from bot.health import clock_max_age, health_report
from bot.metrics_server import MetricsListen, MetricsServer
from bot.services import Services
from models import accounts as account_queries
from models.db import session_scope
from sync.deadline import expire_all
from sync.engine import EngineDeps
from sync.idle import IdleWatcher, start_idle_watcher
from sync.scheduler import Clock, Dispatcher, LocalDispatcher, Retention

if TYPE_CHECKING:
    from procrastinate import App

log = logging.getLogger("emailsync")
STOP_POLL_SECONDS = 0.2


class MetricsPortUnavailable(Exception):
    """The --metrics-port cannot be bound (taken, or not allowed)."""


def run_worker(
    services: Services,
    stop: threading.Event,
    *,
    concurrency: int | None = None,
    clock: bool = False,
    metrics: MetricsListen | None = None,
) -> None:
    """Run syncs (and, where this process is the clock, the tick and the digest) until ``stop`` is set.

    With ``metrics``, /metrics and /healthz are served there.
    """
    settings = services.settings
    metrics_server = start_metrics_server(services, metrics) if metrics is not None else None
    from bot.slack_app import slack_notifier

    services.notifier = slack_notifier(services) or services.notifier
    try:
        if settings.backend == "procrastinate":
            _run_procrastinate_worker(services, stop, concurrency=concurrency or settings.workers, clock=clock)
        else:
            _run_local_worker(services, stop, concurrency=concurrency or settings.workers)
    finally:
        close = getattr(services.notifier, "close", None)
        if close is not None:
            close()  # the Slack outbox: what the last slices queued is sent, within EMAILSYNC_SLACK_DRAIN_SECONDS
        if metrics_server is not None:
            metrics_server.stop()


def _run_local_worker(services: Services, stop: threading.Event, *, concurrency: int) -> None:
    """One machine: the tick, a thread pool of syncs, IDLE watches and the weekly digest."""
    settings = services.settings
    deps = services.engine_deps("worker")
    dispatcher = LocalDispatcher(deps, workers=concurrency, slice_seconds=settings.slice_seconds)
    ticker = Clock(deps, dispatcher, tick_seconds=settings.tick_seconds, retention=_retention(services))
    ticker.start()  # one machine: every worker ticks (claims are atomic, the lease fences each sync)
    idle = _start_idle(services, deps, dispatcher)  # INBOX changes start a sync in seconds
    from bot.digest import start_people_digest

    digest = start_people_digest(services)  # the weekly "people who are not contacts yet" DMs
    log.info("worker %s started", deps.owner)
    try:
        stop.wait()
    finally:
        idle.stop()
        if digest is not None:
            digest.stop()
        ticker.stop()
        # A slice stuck on a server that drips or stays silent would hold the stop for its whole deadline.
        dispatcher.shutdown(interrupt=True)


def start_metrics_server(services: Services, where: MetricsListen) -> MetricsServer:
    """The worker's /metrics and /healthz, started."""
    max_age = clock_max_age(services.settings.tick_seconds)
    try:
        server = MetricsServer(where, lambda: health_report(services.db, max_age)).start()
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {where.host}:{where.port} ({exc.strerror or exc}); choose another --metrics-port"
        ) from None
    log.info("metrics on http://%s:%s/metrics", server.host, server.port)
    return server


def _start_idle(services: Services, deps: EngineDeps, dispatcher: Dispatcher) -> IdleWatcher:
    """This process's IDLE watches (the owner reads idle:worker:<host>:<pid>:<suffix>)."""
    settings = services.settings
    trigger = _sync_soon(deps, dispatcher)
    return start_idle_watcher(deps, trigger, idle_seconds=settings.idle_seconds, lease_ttl=settings.lease_ttl)


def _sync_soon(deps: EngineDeps, dispatcher: Dispatcher) -> Callable[[int], None]:
    """The IDLE trigger: the account is due now ("Sync now" semantics) and starts at once (or its job is queued)."""

    def trigger(account_id: int) -> None:
        with session_scope(deps.db) as session:
            # Due now, and remembered if a run is going on, so the run after it picks the change up.
            account_queries.request_sync_now(session, account_id=account_id)
        dispatcher.dispatch(account_id)  # not one tick later: delivery-to-stored stays well under 2 s

    return trigger


def _retention(services: Services) -> Retention:
    settings = services.settings
    return Retention(
        slack_events=dt.timedelta(hours=settings.slack_event_retention_hours),
        runs=dt.timedelta(days=settings.run_retention_days),
        tracking_events=dt.timedelta(days=settings.tracking_event_retention_days),
    )


def _run_procrastinate_worker(services: Services, stop: threading.Event, *, concurrency: int, clock: bool) -> None:
    """Procrastinate jobs in this process; with ``clock``, compete to tick (an advisory lock elects one)."""
    from sync.clock_election import ElectedClock
    from sync.procrastinate_backend import ProcrastinateDispatcher, make_app, register_sync_task

    settings = services.settings
    deps = services.engine_deps("worker")
    app = make_app(settings.database_url, max_connections=concurrency + 3)
    register_sync_task(app, deps, slice_seconds=settings.slice_seconds)
    elected = dispatcher = digest = None
    if clock:
        dispatcher = ProcrastinateDispatcher(settings.database_url)
        elected = ElectedClock(
            deps,
            dispatcher,
            database_url=settings.database_url,
            tick_seconds=settings.tick_seconds,
            clock_seconds=settings.clock_seconds,
            stall_seconds=settings.stall_seconds,
            retention=_retention(services),
        )
        elected.start()
        from bot.digest import start_people_digest

        digest = start_people_digest(services)
    # IDLE watches on every worker (each watch is leased to one); a change queues the account's job now.
    deferrer = ProcrastinateDispatcher(settings.database_url)
    idle = _start_idle(services, deps, deferrer)
    competing = ", competing for the clock" if clock else ""
    log.info("worker %s started (procrastinate, concurrency %d%s)", deps.owner, concurrency, competing)
    try:
        asyncio.run(_work(app, deps, stop, concurrency=concurrency, stall_seconds=settings.stall_seconds))
    finally:
        idle.stop()
        deferrer.shutdown()
        if digest is not None:
            digest.stop()
        if elected is not None:
            elected.stop()
        if dispatcher is not None:
            dispatcher.shutdown()


async def _work(app: App, deps: EngineDeps, stop: threading.Event, *, concurrency: int, stall_seconds: float) -> None:
    from sync.procrastinate_backend import QUEUE

    # Sync jobs run in the loop's default executor: one thread per job this worker may run at once.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(concurrency + 2, thread_name_prefix="sync"))
    async with app.open_async():
        while True:
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE],
                    name=deps.owner,
                    concurrency=concurrency,
                    install_signal_handlers=False,  # SIGTERM is ours: it also interrupts slices stuck on a server
                    # Heartbeats several times per stall period, so only a worker silent that long looks stalled.
                    update_heartbeat_interval=max(0.5, stall_seconds / 4),
                    # A starting worker deletes the rows of workers silent this long. Far above the stall
                    # timeout: a worker only paused (and its jobs finished as stalled) keeps its row.
                    stalled_worker_timeout=max(600.0, 10 * stall_seconds),
                    delete_jobs="successful",  # a job per poll: keep only the failed ones (pruned by the clock)
                    fetch_job_polling_interval=max(0.5, min(5.0, stall_seconds / 4)),
                )
            )
            while not stop.is_set() and not worker.done():
                await asyncio.sleep(STOP_POLL_SECONDS)
            if not worker.done():
                break
            try:
                worker.result()
            except Exception as exc:
                # A worker row deleted while this process was paused, a lost connection: the job worker
                # ends; its jobs are finished (or finished as stalled by the clock). Register afresh.
                log.warning("the job worker stopped (%s: %s); starting it again", exc.__class__.__name__, exc.__cause__)
            if stop.is_set():
                return
            await asyncio.sleep(1.0)
        # Like LocalDispatcher.shutdown(interrupt=True): running slices end at their next batch boundary,
        # and one stuck inside a command has its connection cut; each commits what it has and says MORE.
        deps.stopping.set()
        worker.cancel()
        while not worker.done():
            expire_all()
            await asyncio.wait({worker}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            worker.result()
        log.info("worker %s stopped", deps.owner)


def stop_on_signals() -> threading.Event:
    """An event that SIGINT or SIGTERM sets."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
