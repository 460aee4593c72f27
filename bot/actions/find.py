"""The answer to `/emailsync find <query>`, shared by the slash command and Find's own listeners."""

from __future__ import annotations

from typing import Any

from bot.deps import SlackDeps
from bot.views import find as views
from flows import find as find_flow
from flows.find import FindError


def find_answer(deps: SlackDeps, *, team_id: str, user_id: str, query: str) -> dict[str, Any]:
    """The ephemeral answer to `/emailsync find <query>` (called after the command was acked)."""
    try:
        result = find_flow.find(deps.services.db, team_id=team_id, user_id=user_id, query=query)
    except FindError as exc:
        return views.find_error_message(exc.message)
    return views.results_message(result)
