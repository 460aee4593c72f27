"""The Notifier protocol the engine reports through, and the logging implementation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RunReport:
    """A snapshot of a sync run, as the engine reports it."""

    account_id: int
    run_id: int
    team_id: str
    user_id: str
    email: str
    kind: str
    total: int
    processed: int
    stored: int
    skipped: int
    failed_messages: int
    contacts_matched: int
    elapsed_seconds: float


class Notifier(Protocol):
    """Where the engine says what it does; Slack implements this in bot/, logging here."""

    def sync_started(self, report: RunReport) -> None:
        """A run began (called once per logical run, not per slice)."""

    def sync_progress(self, report: RunReport) -> None:
        """Progress of a run; the engine calls this at most once per throttle interval."""

    def sync_completed(self, report: RunReport) -> None:
        """A run finished."""

    def sync_failed(self, report: RunReport, code: str, message: str, fix: str) -> None:
        """A run stopped on an error (the message is plain words and holds no secret)."""

    def sync_recovered(self, report: RunReport) -> None:
        """An account that was failing synced again."""


class LoggingNotifier:
    """Writes each notification to the log."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("emailsync.notify")

    def sync_started(self, report: RunReport) -> None:
        """Log the start."""
        self.log.info("account %s (%s): %s sync started", report.account_id, report.email, report.kind)

    def sync_progress(self, report: RunReport) -> None:
        """Log progress."""
        self.log.info(
            "account %s: %d/%d processed, %d stored",
            report.account_id,
            report.processed,
            report.total,
            report.stored,
        )

    def sync_completed(self, report: RunReport) -> None:
        """Log the summary."""
        self.log.info(
            "account %s: sync done in %.1fs: %d stored, %d skipped, %d failed, %d contacts matched",
            report.account_id,
            report.elapsed_seconds,
            report.stored,
            report.skipped,
            report.failed_messages,
            report.contacts_matched,
        )

    def sync_failed(self, report: RunReport, code: str, message: str, fix: str) -> None:
        """Log the error."""
        self.log.warning("account %s: sync failed [%s]: %s %s", report.account_id, code, message, fix)

    def sync_recovered(self, report: RunReport) -> None:
        """Log the recovery."""
        self.log.info("account %s: syncing again after an error", report.account_id)
