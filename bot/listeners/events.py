"""Events: the App Home tab (a fuller Home arrives with the account lifecycle)."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from bot.slack_app import SlackDeps
from bot.views import messages
from models import accounts as account_queries
from models.db import session_scope


def register(app: App, deps: SlackDeps) -> None:
    """Register event listeners."""

    @app.event("app_home_opened")
    def on_home_opened(event: dict[str, Any], context: Any, client: WebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        user_id = event["user"]
        team_id = context.get("team_id") or event.get("view", {}).get("team_id")
        with session_scope(deps.services.db) as session:
            accounts = [a for a in account_queries.list_accounts(session, team_id=team_id) if a.user_id == user_id]
            counts = account_queries.message_counts(session, [a.id for a in accounts if a.id is not None])
        client.views_publish(user_id=user_id, view=messages.home_view(accounts, counts))
