"""The Slack implementation of the engine's Notifier: direct messages to the account's owner."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.views import notifications as texts
from models import notifications as memory
from models.clock import utcnow
from models.db import session_scope
from sync.notifier import LoggingNotifier, RunReport

log = logging.getLogger(__name__)
ClientForTeam = Callable[[str], WebClient]
PublishHome = Callable[[WebClient, str, str], None]
LOUD_KINDS = ("past", "widen")  # incremental polls every few minutes stay silent unless something breaks
# Errors nobody can act on that pass by themselves (a provider's token endpoint down or throttling): the
# engine backs off and retries; a DM would only worry the person.
QUIET_CODES = ("provider_unavailable",)


class SlackNotifier:
    """Posts and edits direct messages; never lets a Slack failure reach the sync."""

    def __init__(
        self,
        db: Engine,
        clients: ClientForTeam,
        *,
        publish_home: PublishHome | None = None,
        edit_every: dt.timedelta = dt.timedelta(seconds=5),
        remind_after: dt.timedelta = dt.timedelta(days=1),
    ) -> None:
        self.db = db
        self.clients = clients
        self.publish_home = publish_home
        self.edit_every = edit_every
        self.remind_after = remind_after
        self.log = LoggingNotifier()

    def sync_started(self, report: RunReport) -> None:
        """Post the progress message of a past sync."""
        self.log.sync_started(report)
        if report.kind in LOUD_KINDS and self._level(report) == "everything":
            self._safely(self._post_progress, report)
        self._home(report)

    def sync_progress(self, report: RunReport) -> None:
        """Edit the progress message in place, at most once per edit_every per run."""
        self.log.sync_progress(report)
        if report.kind in LOUD_KINDS and self._level(report) == "everything":
            self._safely(self._edit_progress, report, final=False)

    def sync_completed(self, report: RunReport) -> None:
        """Finish the progress message and post the summary."""
        self.log.sync_completed(report)
        if report.kind in LOUD_KINDS and self._level(report) == "everything":
            self._safely(self._edit_progress, report, final=True)
            self._safely(self._post, report, texts.done_message(report))
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
        self._safely(self._post, report, texts.error_message(report.account_id, report.email, code, message, fix))
        self._home(report)

    def sync_recovered(self, report: RunReport) -> None:
        """Say so when an account that was failing (and was told so) syncs again."""
        self.log.sync_recovered(report)
        with session_scope(self.db) as session:
            told_code, _ = memory.error_notified(session, report.account_id)
            memory.save_error_notified(session, report.account_id, code=None, at=None)
        if told_code is not None and self._level(report) != "nothing":
            self._safely(self._post, report, texts.recovered_message(report.email))
        self._home(report)

    def _post_progress(self, report: RunReport) -> None:
        response = self.clients(report.team_id).chat_postMessage(
            channel=report.user_id, **texts.progress_message(report)
        )
        with session_scope(self.db) as session:
            memory.save_progress_message(
                session, report.run_id, channel=response["channel"], ts=response["ts"], updated_at=utcnow()
            )

    def _edit_progress(self, report: RunReport, *, final: bool) -> None:
        now = utcnow()
        with session_scope(self.db) as session:
            channel, ts, updated_at = memory.progress_message(session, report.run_id)
            if channel is None or ts is None:
                return
            if not final and updated_at is not None and now - updated_at < self.edit_every:
                return
            memory.save_progress_message(session, report.run_id, channel=channel, ts=ts, updated_at=now)
        self.clients(report.team_id).chat_update(channel=channel, ts=ts, **texts.progress_message(report))
        if not final:
            self._home(report)

    def _post(self, report: RunReport, message: dict[str, Any]) -> None:
        self.clients(report.team_id).chat_postMessage(channel=report.user_id, **message)

    def _home(self, report: RunReport) -> None:
        if self.publish_home is not None:
            self._safely(lambda r: self.publish_home(self.clients(r.team_id), r.team_id, r.user_id), report)  # type: ignore[misc]

    def _level(self, report: RunReport) -> str:
        with session_scope(self.db) as session:
            return memory.notification_level(session, team_id=report.team_id, user_id=report.user_id)

    def _safely(self, action: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        try:
            action(*args, **kwargs)
        except Exception:
            log.warning("account %s: could not notify in Slack", args[0].account_id if args else "?", exc_info=True)
