"""The Slack implementation of the engine's Notifier: direct messages to the account's owner, and App Home.

Decisions (whether to tell, the edit throttle, the error memory) are made on the calling sync thread
from the database; every Slack call goes to the outbox's sender thread, so a 429 never holds a sync.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.home_publisher import BuildHome, HomePublisher
from bot.slack_outbox import SlackOutbox
from bot.views import notifications as texts
from models import notifications as memory
from models.clock import utcnow
from models.db import session_scope
from models.states import RunKind
from sync.notifier import LoggingNotifier, RunReport

log = logging.getLogger(__name__)
ClientForTeam = Callable[[str], WebClient]
LOUD_KINDS = (RunKind.PAST, RunKind.WIDEN)  # incremental polls every few minutes stay silent unless something breaks
# Errors nobody can act on that pass by themselves (a provider's token endpoint down or throttling): the
# engine backs off and retries; a DM would only worry the person.
QUIET_CODES = ("provider_unavailable",)


class SlackNotifier:
    """Posts and edits direct messages and republishes App Home; never lets Slack slow or fail a sync."""

    def __init__(
        self,
        db: Engine,
        clients: ClientForTeam,
        *,
        build_home: BuildHome | None = None,
        edit_every: dt.timedelta = dt.timedelta(seconds=5),
        remind_after: dt.timedelta = dt.timedelta(days=1),
        home_every_seconds: float = 5.0,
        drain_seconds: float = 10.0,
        outbox: SlackOutbox | None = None,
    ) -> None:
        self.db = db
        self.clients = clients
        self.edit_every = edit_every
        self.remind_after = remind_after
        self.drain_seconds = drain_seconds
        self.outbox = outbox or SlackOutbox()
        self.home = (
            HomePublisher(self.outbox, clients, build_home, every_seconds=home_every_seconds)
            if build_home is not None
            else None
        )
        self.log = LoggingNotifier()
        self._edited_at: dict[int, dt.datetime] = {}  # run id -> last progress edit queued by this process
        self._lock = threading.Lock()

    def sync_started(self, report: RunReport) -> None:
        """Post the progress message of a past sync."""
        self.log.sync_started(report)
        if report.kind in LOUD_KINDS and self._level(report) == "everything":
            with self._lock:
                self._edited_at[report.run_id] = utcnow()
            self._send(self._post_progress, report)
        self._home(report)

    def sync_progress(self, report: RunReport) -> None:
        """Edit the progress message in place, at most once per edit_every per run."""
        self.log.sync_progress(report)
        if report.kind in LOUD_KINDS and self._level(report) == "everything" and self._edit_due(report.run_id):
            self._send(self._edit_progress, report, key=("progress", report.run_id))
            self._home(report)

    def sync_completed(self, report: RunReport) -> None:
        """Finish the progress message and post the summary."""
        self.log.sync_completed(report)
        if report.kind in LOUD_KINDS and self._level(report) == "everything":
            with self._lock:
                self._edited_at.pop(report.run_id, None)
            # Same key as the progress edits: a queued edit is replaced by the final state.
            self._send(self._edit_progress, report, key=("progress", report.run_id))
            self._send(self._post, report, texts.done_message(report))
        self._home(report)

    def sync_failed(self, report: RunReport, code: str, message: str, fix: str) -> None:
        """Tell the owner once per kind of error, then remind at most once a day."""
        self.log.sync_failed(report, code, message, fix)
        if code in QUIET_CODES:
            self._home(report)
            return
        if self._level(report) == "nothing":
            return
        now = utcnow()
        with session_scope(self.db) as session:
            told_code, told_at = memory.error_notified(session, report.account_id)
            if told_code == code and told_at is not None and now - told_at < self.remind_after:
                return
            memory.save_error_notified(session, report.account_id, code=code, at=now)
        self._send(self._post, report, texts.error_message(report.account_id, report.email, code, message, fix))
        self._home(report)

    def sync_recovered(self, report: RunReport) -> None:
        """Say so when an account that was failing (and was told so) syncs again."""
        self.log.sync_recovered(report)
        with session_scope(self.db) as session:
            told_code, _ = memory.error_notified(session, report.account_id)
            memory.save_error_notified(session, report.account_id, code=None, at=None)
        if told_code is not None and self._level(report) != "nothing":
            self._send(self._post, report, texts.recovered_message(report.email))
        self._home(report)

    def flush(self, timeout: float = 30.0) -> bool:
        """Send everything queued now (Home's waits included); False if that took longer than ``timeout``."""
        return self.outbox.flush(timeout)

    def close(self) -> None:
        """Send what is queued, for at most drain_seconds, and stop the sender."""
        self.outbox.close(self.drain_seconds)

    def _edit_due(self, run_id: int) -> bool:
        """Claim the next progress edit of a run if edit_every has passed since the last one."""
        now = utcnow()
        with self._lock:
            last = self._edited_at.get(run_id)
        if last is None:  # a run continued from another process's slice: its last edit is in the database
            with session_scope(self.db, readonly=True) as session:
                _, _, last = memory.progress_message(session, run_id)
        if last is not None and now - last < self.edit_every:
            return False
        with self._lock:
            self._edited_at[run_id] = now
        return True

    # ---- run on the outbox's sender thread ----------------------------------------------------------

    def _post_progress(self, report: RunReport) -> None:
        response = self.clients(report.team_id).chat_postMessage(
            channel=report.user_id, **texts.progress_message(report)
        )
        with session_scope(self.db) as session:
            memory.save_progress_message(
                session, report.run_id, channel=response["channel"], ts=response["ts"], updated_at=utcnow()
            )

    def _edit_progress(self, report: RunReport) -> None:
        with session_scope(self.db) as session:
            channel, ts, _ = memory.progress_message(session, report.run_id)
            if channel is None or ts is None:
                return  # the progress message was never posted (Slack refused it): nothing to edit
            memory.save_progress_message(session, report.run_id, channel=channel, ts=ts, updated_at=utcnow())
        self.clients(report.team_id).chat_update(channel=channel, ts=ts, **texts.progress_message(report))

    def _post(self, report: RunReport, message: dict[str, Any]) -> None:
        self.clients(report.team_id).chat_postMessage(channel=report.user_id, **message)

    # ---- helpers -----------------------------------------------------------------------------------------

    def _home(self, report: RunReport) -> None:
        if self.home is not None:
            self.home.request(report.team_id, report.user_id)

    def _level(self, report: RunReport) -> str:
        with session_scope(self.db) as session:
            return memory.notification_level(session, team_id=report.team_id, user_id=report.user_id)

    def _send(self, action: Callable[..., None], report: RunReport, *args: Any, key: Any = None) -> None:
        def guarded() -> None:
            try:
                action(report, *args)
            except Exception:
                log.warning("account %s: could not notify in Slack", report.account_id, exc_info=True)

        if not self.outbox.submit(guarded, key=key):
            log.info("account %s: stopping; a Slack notification was not queued", report.account_id)
