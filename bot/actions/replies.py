"""Short answers to a person: ephemeral where the click came from a channel, else a direct message."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient


def tell(client: WebClient, body: dict[str, Any], user_id: str, text: str) -> None:
    """A short answer to a click: ephemeral in the channel it came from, else a direct message."""
    channel = (body.get("channel") or {}).get("id")
    if channel:
        client.chat_postEphemeral(channel=channel, user=user_id, text=text)
    else:
        client.chat_postMessage(channel=user_id, text=text)


def post_dm(client: WebClient, user_id: str, message: dict[str, Any]) -> None:
    """A direct message from the bot (posting to a user id opens the DM with them)."""
    client.chat_postMessage(channel=user_id, **message)
