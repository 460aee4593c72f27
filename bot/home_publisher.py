"""App Home publishing from the sync side: only when what the tab shows changed, at most once per interval.

Every report of a sync used to republish the person's Home tab; with many accounts that alone passes
Slack's rate limits. Here a request only schedules a publish on the Slack outbox. When it runs, the
view is built from the database as it is then and its digest compared with the last one this process
published for that person: the same content is not sent again. A request inside the interval after a
publish becomes one trailing publish at the end of the interval (built then, so it shows the latest
state): a change is delayed by at most the interval, never lost.

The memory is per process: the web process's own publishes (a button press answered at once) are not
seen here, and a tab changed there and changed back by a sync in this process would not be re-sent.
Reports that reach this publisher come with something new (a run's counts, its time, an error), so
that case needs two opposite changes within one report; it heals at the next change or Home opening.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient

from bot.slack_outbox import SlackOutbox

log = logging.getLogger(__name__)
BuildHome = Callable[[str, str], dict[str, Any]]  # (team_id, user_id) -> the Home view


@dataclass
class _Tab:
    digest: str | None = None
    published_at: float = float("-inf")  # time.monotonic() of the last publish
    scheduled: bool = False


def view_digest(view: dict[str, Any]) -> str:
    """A stable digest of a view's content (key order does not matter)."""
    return hashlib.sha256(json.dumps(view, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class HomePublisher:
    """Schedules Home publishes on the outbox; skips unchanged views and coalesces bursts per person."""

    def __init__(
        self,
        outbox: SlackOutbox,
        clients: Callable[[str], WebClient],
        build: BuildHome,
        *,
        every_seconds: float = 5.0,
    ) -> None:
        self.outbox = outbox
        self.clients = clients
        self.build = build
        self.every_seconds = every_seconds
        self._tabs: dict[tuple[str, str], _Tab] = {}
        self._lock = threading.Lock()

    def request(self, team_id: str, user_id: str) -> None:
        """Ask for the person's Home to show the current state (soon, once, and only if it changed)."""
        key = (team_id, user_id)
        with self._lock:
            tab = self._tabs.setdefault(key, _Tab())
            if tab.scheduled:
                return  # the publish already queued builds the view when it runs: it will show this too
            tab.scheduled = True
            due = tab.published_at + self.every_seconds
        self.outbox.submit(lambda: self._publish(team_id, user_id), key=("home", key), not_before=due)

    def _publish(self, team_id: str, user_id: str) -> None:
        key = (team_id, user_id)
        with self._lock:
            tab = self._tabs[key]
            # Cleared before building: a request from now on schedules another publish, so a change that
            # lands while this one builds or waits on Slack is published after it, not lost.
            tab.scheduled = False
        try:
            view = self.build(team_id, user_id)
            digest = view_digest(view)
            with self._lock:
                if digest == tab.digest:
                    return
            self.clients(team_id).views_publish(user_id=user_id, view=view)
        except Exception:
            log.warning("could not publish the Home tab of %s/%s", team_id, user_id, exc_info=True)
            return
        with self._lock:
            tab.digest = digest
            tab.published_at = time.monotonic()
