"""The worker process: the scheduler tick, the sync pool, the IDLE watcher and the weekly digest; stops on SIGTERM."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading
from collections.abc import Callable

from bot.services import Services
from models import accounts as account_queries
from models.db import session_scope
from sync.engine import EngineDeps
from sync.idle import start_idle_watcher
from sync.scheduler import Clock, LocalDispatcher, Retention


def run_worker(services: Services, stop: threading.Event) -> None:
    """Run the scheduler tick, the sync pool and the weekly digest until ``stop`` is set, then stop them."""
    settings = services.settings
    from bot.slack_app import slack_notifier

    services.notifier = slack_notifier(services) or services.notifier
    deps = services.engine_deps("worker")
    dispatcher = LocalDispatcher(deps, workers=settings.workers, slice_seconds=settings.slice_seconds)
    keep = Retention(
        slack_events=dt.timedelta(hours=settings.slack_event_retention_hours),
        runs=dt.timedelta(days=settings.run_retention_days),
        tracking_events=dt.timedelta(days=settings.tracking_event_retention_days),
    )
    clock = Clock(deps, dispatcher, tick_seconds=settings.tick_seconds, retention=keep)
    clock.start()
    idle = start_idle_watcher(services, _sync_soon(deps, dispatcher))  # INBOX changes start a sync in seconds
    from bot.digest import start_people_digest

    digest = start_people_digest(services)  # the weekly "people who are not contacts yet" DMs
    logging.getLogger("emailsync").info("worker %s started", deps.owner)
    try:
        stop.wait()
    finally:
        idle.stop()
        if digest is not None:
            digest.stop()
        clock.stop()
        # A slice stuck on a server that drips or stays silent would hold the stop for its whole deadline.
        dispatcher.shutdown(interrupt=True)


def _sync_soon(deps: EngineDeps, dispatcher: LocalDispatcher) -> Callable[[int], None]:
    """The IDLE trigger of the local backend: the account is due now ("Sync now" semantics), and starts at once."""

    def trigger(account_id: int) -> None:
        with session_scope(deps.db) as session:
            # Due now, and remembered if a run is going on, so the run after it picks the change up.
            account_queries.request_sync_now(session, account_id=account_id)
        dispatcher.dispatch(account_id)  # not one tick later: delivery-to-stored stays well under 2 s

    return trigger


def stop_on_signals() -> threading.Event:
    """An event that SIGINT or SIGTERM sets."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
