"""Prometheus metrics of the engine, the scheduler and the Slack side, defined once for every process.

A leaf module (it imports only prometheus_client), so the engine, the dispatchers, the IDLE watcher and
`bot/` all record through the same small functions. `/metrics` renders `REGISTRY`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

SLICES = Counter(
    "emailsync_sync_slices", "Sync slices run, by run kind and outcome", ["kind", "outcome"], registry=REGISTRY
)
SLICE_SECONDS = Histogram(
    "emailsync_sync_slice_seconds",
    "Duration of sync slices, by run kind and outcome",
    ["kind", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
ERRORS = Counter("emailsync_sync_errors", "Sync failures, by error class (code)", ["code"], registry=REGISTRY)
STORED = Counter("emailsync_messages_stored", "Messages stored by syncs", registry=REGISTRY)
ACCOUNTS_DUE = Gauge("emailsync_accounts_due", "Accounts claimed by the last tick", registry=REGISTRY)
QUEUE_DEPTH = Gauge("emailsync_queue_depth", "Sync jobs waiting to run", registry=REGISTRY)
IDLE_WATCHES = Gauge("emailsync_idle_watches", "INBOX IDLE watches held by this process", registry=REGISTRY)
SLACK_CALLS = Counter(
    "emailsync_slack_calls", "Slack Web API calls, by method and status", ["method", "status"], registry=REGISTRY
)
SLACK_RATE_LIMITED = Counter(
    "emailsync_slack_rate_limited", "Slack 429 answers, by method", ["method"], registry=REGISTRY
)


def observe_slice(kind: str, outcome: str, seconds: float) -> None:
    """Count one sync slice and its duration."""
    SLICES.labels(kind=kind, outcome=outcome).inc()
    SLICE_SECONDS.labels(kind=kind, outcome=outcome).observe(seconds)


def count_error(code: str) -> None:
    """Count one sync failure of the given error class."""
    ERRORS.labels(code=code).inc()


def count_stored(messages: int) -> None:
    """Count messages stored."""
    if messages:
        STORED.inc(messages)


def set_accounts_due(count: int) -> None:
    """How many accounts the last tick found due."""
    ACCOUNTS_DUE.set(count)


def set_queue_depth(count: int) -> None:
    """How many sync jobs wait to run."""
    QUEUE_DEPTH.set(count)


def set_idle_watches(count: int) -> None:
    """How many IDLE watches this process holds."""
    IDLE_WATCHES.set(count)


def count_slack_call(method: str, status: str) -> None:
    """Count one Slack Web API call (status: ok, error or rate_limited)."""
    SLACK_CALLS.labels(method=method, status=status).inc()
    if status == "rate_limited":
        SLACK_RATE_LIMITED.labels(method=method).inc()
