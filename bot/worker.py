"""The worker process: the scheduler tick, the sync pool and the weekly digest, stopped by SIGINT/SIGTERM."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import threading

from bot.metrics_server import MetricsListen, MetricsServer
from bot.services import Services
from sync.scheduler import Clock, LocalDispatcher, Retention


class MetricsPortUnavailable(Exception):
    """The --metrics-port cannot be bound (taken, or not allowed)."""


def run_worker(services: Services, stop: threading.Event, *, metrics: MetricsListen | None = None) -> None:
    """Run the scheduler tick, the sync pool and the weekly digest until ``stop`` is set, then stop them.

    With ``metrics``, /metrics and /healthz are served there.
    """
    settings = services.settings
    metrics_server = start_metrics_server(services, metrics) if metrics is not None else None
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
    from bot.digest import start_people_digest

    digest = start_people_digest(services)  # the weekly "people who are not contacts yet" DMs
    logging.getLogger("emailsync").info("worker %s started", deps.owner)
    try:
        stop.wait()
    finally:
        if digest is not None:
            digest.stop()
        clock.stop()
        # A slice stuck on a server that drips or stays silent would hold the stop for its whole deadline.
        dispatcher.shutdown(interrupt=True)
        close = getattr(services.notifier, "close", None)
        if close is not None:
            close()  # the Slack outbox: what the last slices queued is sent, within EMAILSYNC_SLACK_DRAIN_SECONDS
        if metrics_server is not None:
            metrics_server.stop()


def start_metrics_server(services: Services, where: MetricsListen) -> MetricsServer:
    """The worker's /metrics and /healthz, started."""
    from bot.health import clock_max_age, health_report

    max_age = clock_max_age(services.settings.tick_seconds)
    try:
        server = MetricsServer(where, lambda: health_report(services.db, max_age)).start()
    except OSError as exc:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {where.host}:{where.port} ({exc.strerror or exc}); choose another --metrics-port"
        ) from None
    logging.getLogger("emailsync").info("metrics on http://%s:%s/metrics", server.host, server.port)
    return server


def stop_on_signals() -> threading.Event:
    """An event that SIGINT or SIGTERM sets."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop
