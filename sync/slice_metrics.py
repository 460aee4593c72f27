"""Recording sync slices at the dispatcher boundary: kind, outcome, duration and errors, for /metrics.

A dispatcher runs each slice inside `observed_slice`; the engine's notifier is wrapped in
`MeteredNotifier`, which tells the slice on the same thread which kind of run it belongs to and counts
errors by class. A quiet slice reports nothing: it is an incremental poll, or (when it stopped on its
time budget or lost its lease) the kind of the run it continued, read from the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine

from models.db import session_scope
from models.states import RunKind
from models.tables import EmailAccount, SyncRun
from sync.metrics import count_error, observe_slice
from sync.notifier import Notifier, RunReport

_current = threading.local()


@dataclass
class SliceTally:
    """What one slice said about itself while it ran."""

    account_id: int
    kind: str | None = None
    outcome: str = "crashed"  # replaced by the engine's Outcome when the slice returns


@contextmanager
def observed_slice(db: Engine, account_id: int) -> Iterator[SliceTally]:
    """Time one slice on this thread; set ``tally.outcome`` before leaving. Recorded even if it raises."""
    tally = SliceTally(account_id)
    _current.tally = tally
    start = time.monotonic()
    try:
        yield tally
    finally:
        _current.tally = None
        kind = tally.kind or _quiet_kind(db, account_id, tally.outcome)
        observe_slice(kind, tally.outcome, time.monotonic() - start)


def _quiet_kind(db: Engine, account_id: int, outcome: str) -> str:
    """The kind of a slice that reported nothing."""
    if outcome in ("busy", "skipped"):
        return "none"  # no run: another process held the lease, or the account is paused or gone
    if outcome == "done":
        return RunKind.INCREMENTAL  # a poll that found nothing to say
    try:
        with session_scope(db, readonly=True) as session:
            account = session.get(EmailAccount, account_id)
            run = session.get(SyncRun, account.current_run_id) if account and account.current_run_id else None
            return run.kind if run is not None else RunKind.INCREMENTAL
    except Exception:
        return "unknown"  # metrics never fail a slice


def _note(report: RunReport) -> None:
    tally: SliceTally | None = getattr(_current, "tally", None)
    if tally is not None and tally.account_id == report.account_id:
        tally.kind = report.kind


class MeteredNotifier:
    """Wraps a Notifier: notes the run kind for the slice on this thread and counts errors by class."""

    def __init__(self, inner: Notifier) -> None:
        self.inner = inner

    def sync_started(self, report: RunReport) -> None:
        """Pass on."""
        _note(report)
        self.inner.sync_started(report)

    def sync_progress(self, report: RunReport) -> None:
        """Pass on."""
        _note(report)
        self.inner.sync_progress(report)

    def sync_completed(self, report: RunReport) -> None:
        """Pass on."""
        _note(report)
        self.inner.sync_completed(report)

    def sync_failed(self, report: RunReport, code: str, message: str, fix: str) -> None:
        """Count the error class, pass on."""
        _note(report)
        count_error(code)
        self.inner.sync_failed(report, code, message, fix)

    def sync_recovered(self, report: RunReport) -> None:
        """Pass on."""
        _note(report)
        self.inner.sync_recovered(report)


def metered(notifier: Notifier) -> Notifier:
    """The notifier wrapped once (wrapping twice would count errors twice)."""
    return notifier if isinstance(notifier, MeteredNotifier) else MeteredNotifier(notifier)
