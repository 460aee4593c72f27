"""Small Block Kit element helpers shared by the view builders (Slack's text limits applied here)."""

from __future__ import annotations

from typing import Any

Block = dict[str, Any]


def clip(text: str, limit: int) -> str:
    """Shorten text to Slack's limit for its field, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plain(text: str, limit: int = 3000) -> dict[str, Any]:
    """A plain_text object."""
    return {"type": "plain_text", "text": clip(text, limit), "emoji": True}


def mrkdwn(text: str, limit: int = 3000) -> dict[str, Any]:
    """A mrkdwn text object."""
    return {"type": "mrkdwn", "text": clip(text, limit)}


def escape(text: str) -> str:
    """Escape &, < and > as Slack's mrkdwn requires (names come from mail servers and people)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def section(text: str, **extra: Any) -> Block:
    """A section block with mrkdwn text."""
    return {"type": "section", "text": mrkdwn(text), **extra}


def context(text: str) -> Block:
    """A context block with one mrkdwn element."""
    return {"type": "context", "elements": [mrkdwn(text)]}


def option(text: str, value: str, description: str | None = None) -> dict[str, Any]:
    """An option (text up to 75 chars, value up to 150)."""
    opt: dict[str, Any] = {"text": plain(text, 75), "value": clip(value, 150)}
    if description:
        opt["description"] = plain(description, 75)
    return opt


def button(
    text: str, action_id: str, value: str | None = None, *, url: str | None = None, style: str | None = None
) -> dict[str, Any]:
    """A button element."""
    btn: dict[str, Any] = {"type": "button", "text": plain(text, 75), "action_id": action_id}
    if value is not None:
        btn["value"] = clip(value, 2000)
    if url is not None:
        btn["url"] = url
    if style is not None:
        btn["style"] = style
    return btn


def modal(
    callback_id: str,
    title: str,
    blocks: list[Block],
    *,
    private_metadata: str = "",
    submit: str | None = None,
    close: str = "Cancel",
) -> dict[str, Any]:
    """A modal view (title up to 24 chars)."""
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title, 24),
        "close": plain(close, 24),
        "private_metadata": private_metadata,
        "blocks": blocks,
    }
    if submit:
        view["submit"] = plain(submit, 24)
    return view
