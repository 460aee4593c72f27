"""Reading what Slack sent: who clicked, and the values of a view's inputs (one reader per element kind)."""

from __future__ import annotations

from typing import Any


def caller(body: dict[str, Any]) -> tuple[str, str]:
    """(team, user) of the person behind an interaction, as the signed request says: the only ids we trust.

    Block actions and view submissions carry `user` and `team` objects (`team` is null for some org
    installs: then the user's own team); option requests of older payloads carry flat `team_id`/`user_id`.
    """
    user = body.get("user") or {}
    team = (body.get("team") or {}).get("id") or user.get("team_id") or body.get("team_id")
    return str(team), str(user.get("id") or body.get("user_id"))


def _element(values: dict[str, Any], block: str, action: str) -> dict[str, Any]:
    element = (values.get(block) or {}).get(action)
    return element if isinstance(element, dict) else {}


def selected(values: dict[str, Any], block: str, action: str) -> str | None:
    """The value of a single-choice input (static select, radio buttons), or None when nothing is chosen."""
    option = _element(values, block, action).get("selected_option")
    return str(option["value"]) if isinstance(option, dict) and "value" in option else None


def picked(values: dict[str, Any], block: str, action: str) -> list[str]:
    """The values of a multi-choice input (checkboxes, multi-selects) in Slack's order; empty when none."""
    options = _element(values, block, action).get("selected_options") or []
    return [str(o["value"]) for o in options if isinstance(o, dict) and "value" in o]


def checked(values: dict[str, Any], block: str, action: str) -> set[str]:
    """The ticked boxes of a checkbox group, as a set of their values."""
    return set(picked(values, block, action))


def text(values: dict[str, Any], block: str, action: str, *, strip: bool = True) -> str:
    """A plain-text input's value (stripped unless asked not to); empty when left blank."""
    value = str(_element(values, block, action).get("value") or "")
    return value.strip() if strip else value
