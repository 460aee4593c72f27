"""Who sent an interaction, and short answers to it (ephemeral where there is a channel, else a DM)."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient


def caller(body: dict[str, Any]) -> tuple[str, str]:
    """(team, user) of the person who sent an interaction payload (Bolt checked its signature)."""
    user = body.get("user") or {}
    team = (body.get("team") or {}).get("id") or user.get("team_id")
    return str(team), str(user.get("id"))


def tell(client: WebClient, body: dict[str, Any], user_id: str, text: str) -> None:
    """A short answer to a click: ephemeral in the channel it came from, else a direct message."""
    channel = (body.get("channel") or {}).get("id")
    if channel:
        client.chat_postEphemeral(channel=channel, user=user_id, text=text)
    else:
        client.chat_postMessage(channel=user_id, text=text)
