"""The weekly "people who are not contacts yet" DM: a small APScheduler job of the worker that posts due digests."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.services import Services
from bot.tokens import client_for_team
from bot.views.contacts import digest_message
from flows import people
from models.clock import utcnow

log = logging.getLogger(__name__)
ClientForTeam = Callable[[str], WebClient]
CHECK_EVERY_SECONDS = 300.0  # a digest comes within five minutes of its hour


class PeopleDigestJob:
    """Posts each person's digest when their day and hour come (one per person and week, however many workers)."""

    def __init__(self, db: Engine, clients: ClientForTeam, *, every_seconds: float = CHECK_EVERY_SECONDS) -> None:
        self.db = db
        self.clients = clients
        self.every_seconds = every_seconds
        self._scheduler = BackgroundScheduler(daemon=True)

    def run_once(self, now: dt.datetime | None = None) -> int:
        """Post every digest due at `now`; return how many DMs were posted."""
        now = now or utcnow()
        posted = 0
        for due, prefs in people.due_digests(self.db, now=now):
            if prefs.digest_day is None or prefs.notification_level == "nothing":
                continue
            try:
                if prefs.timezone is None:
                    # Never asked yet: the day and hour are the person's own, so learn their zone once.
                    prefs.timezone = self._timezone(prefs.team_id, prefs.user_id)
                    due = people.due_digest(self.db, prefs, now)
                if due is not None and self._send(due):
                    posted += 1
            except Exception:
                log.exception("the weekly digest of %s in %s failed", prefs.user_id, prefs.team_id)
        return posted

    def _timezone(self, team_id: str, user_id: str) -> str | None:
        try:
            zone = self.clients(team_id).users_info(user=user_id)["user"].get("tz")
        except Exception:
            log.warning("could not read the time zone of %s in %s; using UTC", user_id, team_id)
            return None
        people.save_timezone(self.db, team_id=team_id, user_id=user_id, timezone=zone or None)
        return zone or None

    def _send(self, due: people.DueDigest) -> bool:
        suggestions = people.suggestions_for(
            self.db, team_id=due.team_id, user_id=due.user_id, start=due.window_start, end=due.window_end
        )
        digest_id = people.claim_digest(self.db, due, suggestions)
        if digest_id is None or not suggestions:
            return False  # another worker has it, or nobody to suggest this week (recorded: no recount)
        digest = people.load_digest(self.db, digest_id, team_id=due.team_id, user_id=due.user_id)
        try:
            response = self.clients(due.team_id).chat_postMessage(channel=due.user_id, **digest_message(digest))
        except Exception:
            people.digest_not_posted(self.db, digest_id)  # the next check tries again
            raise
        people.digest_posted(self.db, digest_id, channel=response["channel"], ts=response["ts"])
        return True

    def _safe_run(self) -> None:
        try:
            self.run_once()
        except Exception:
            log.exception("the weekly digest job failed")

    def start(self) -> None:
        """Check now and then every every_seconds, never two checks at once."""
        self._scheduler.add_job(
            self._safe_run,
            "interval",
            seconds=self.every_seconds,
            max_instances=1,
            coalesce=True,
            id="people_digest",
            next_run_time=dt.datetime.now(dt.UTC),
        )
        self._scheduler.start()

    def stop(self) -> None:
        """Stop checking."""
        self._scheduler.shutdown(wait=True)


def start_people_digest(services: Services) -> PeopleDigestJob | None:
    """Start the job in a worker when Slack is configured (None otherwise: nobody to send it to)."""
    settings = services.settings
    if not (settings.slack_bot_token or settings.slack_client_id):
        return None
    job = PeopleDigestJob(services.db, lambda team_id: client_for_team(services, team_id))
    job.start()
    return job
