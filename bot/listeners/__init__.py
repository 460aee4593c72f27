"""Slack listeners: each module registers its own through register(app, deps), gathered here."""

from __future__ import annotations

from collections.abc import Callable

from slack_bolt import App, BoltRequest, BoltResponse

from bot.deps import SlackDeps
from bot.listeners import commands, contacts, find, home, lifecycle, send, setup
from models import slack_events
from models.db import session_scope


def register_all(app: App, deps: SlackDeps) -> None:
    """Register every listener of the app, behind the retry filter."""

    @app.middleware
    def skip_retried_events(req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse:
        # Runs after Bolt checked the signature, so forged requests cannot fill the table.
        event_id = req.body.get("event_id")
        if event_id:
            with session_scope(deps.services.db) as session:
                if not slack_events.first_time(session, str(event_id)):
                    resp.status, resp.body = 200, ""
                    return resp
        return next()

    for module in (commands, setup, home, lifecycle, find, contacts, send):
        module.register(app, deps)
