"""Workspace lifecycle events: the app uninstalled, tokens revoked, a person deactivated."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext

from bot.deps import SlackDeps
from flows import team as team_flow

log = logging.getLogger(__name__)


def register(app: App, deps: SlackDeps) -> None:
    """Register the lifecycle events (Bolt acks events itself; the work runs after the ack)."""
    db = deps.services.db

    @app.event("app_uninstalled")
    def on_app_uninstalled(context: BoltContext) -> None:
        team_id = _team(context)
        if team_id is not None:
            team_flow.pause_team(db, team_id=team_id, reason=team_flow.UNINSTALLED)

    @app.event("tokens_revoked")
    def on_tokens_revoked(event: dict[str, Any], context: BoltContext) -> None:
        team_id = _team(context)
        if team_id is None:
            return
        tokens = event.get("tokens")
        user_tokens, bot_tokens = (
            (tokens.get("oauth") or [], tokens.get("bot") or []) if isinstance(tokens, dict) else ([], [])
        )
        if user_tokens and not bot_tokens:
            # Only installers' user tokens went; the bot still speaks for the workspace.
            team_flow.forget_user_tokens(db, team_id=team_id, user_ids=[str(u) for u in user_tokens])
            return
        team_flow.pause_team(db, team_id=team_id, reason=team_flow.UNINSTALLED)

    @app.event("user_change")
    def on_user_change(event: dict[str, Any], context: BoltContext) -> None:
        user = event.get("user")
        team_id = _team(context)
        if not isinstance(user, dict) or team_id is None or user.get("deleted") is not True or not user.get("id"):
            return
        # Only this workspace's mailboxes of that person: the event speaks for the workspace it was sent to.
        team_flow.pause_user(db, team_id=team_id, user_id=str(user["id"]), reason=team_flow.USER_DEACTIVATED)


def _team(context: BoltContext) -> str | None:
    """The workspace the (signed) event was delivered for."""
    team_id = context.team_id
    if not team_id:
        log.warning("a lifecycle event without a workspace id (an org-wide install?) was ignored")
        return None
    return str(team_id)
