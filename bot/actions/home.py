"""Publishing a person's App Home tab (after a click, a setup, a send, or a sync run)."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.views import home as views
from bot.views.send import home_sent_blocks
from flows import lifecycle
from flows import send as send_flow
from flows.contacts import contact_count


def build_home(db: Engine, team_id: str, user_id: str) -> dict[str, Any]:
    """One person's Home tab as it should look now."""
    accounts = lifecycle.summaries(db, team_id=team_id, user_id=user_id)
    prefs, blocked = lifecycle.general_settings(db, team_id=team_id, user_id=user_id)
    contacts = contact_count(db, team_id=team_id)
    sent = home_sent_blocks(send_flow.recent_sent(db, team_id=team_id, user_id=user_id))
    return views.home_view(accounts, prefs, blocked, contacts=contacts, sent=sent)


def publish_home(db: Engine, client: WebClient, team_id: str, user_id: str) -> None:
    """Build and publish one person's Home tab (at once: the person just acted or opened it)."""
    client.views_publish(user_id=user_id, view=build_home(db, team_id, user_id))
