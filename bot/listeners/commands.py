"""The /emailsync slash command: setup, status, help, find, contact add; anything else gets the help."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import ids
from bot.actions.find import find_answer
from bot.actions.send import open_compose
from bot.actions.setup import start_and_open
from bot.deps import SlackDeps
from bot.views import messages
from bot.views.blocks import escape
from flows import lifecycle
from flows.contacts import add_contact
from flows.send import set_workspace_tracking

_MAILTO = re.compile(r"<mailto:([^|>\s]+)(?:\|[^>]*)?>", re.IGNORECASE)


def register(app: App, deps: SlackDeps) -> None:
    """Register the slash command."""

    @app.command(ids.COMMAND)
    def on_command(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        team_id, user_id = command["team_id"], command["user_id"]
        words = (command.get("text") or "").split()
        sub = words[0].lower() if words else ""
        if sub in ("", "setup"):
            accounts = lifecycle.summaries(deps.services.db, team_id=team_id, user_id=user_id) if sub == "" else []
            if accounts:
                respond(**messages.status_message(accounts))
            else:
                start_and_open(deps, client, command["trigger_id"], team_id, user_id)
        elif sub == "status":
            respond(**messages.status_message(lifecycle.summaries(deps.services.db, team_id=team_id, user_id=user_id)))
        elif sub in ("sync", "pause", "resume"):
            respond(**_for_each_account(deps, sub, team_id, user_id))
        elif sub == "find":
            query = (command.get("text") or "").strip()[len(words[0]) :]
            respond(**find_answer(deps, team_id=team_id, user_id=user_id, query=query))
        elif sub == "send":
            # An address as Slack may format it (<mailto:a@b.c|a@b.c>) is prefilled as the bare address.
            to = [_MAILTO.sub(r"\1", w) for w in words[1:2]]
            open_compose(deps, client, command["trigger_id"], team_id, user_id, to=to)
        elif sub == "tracking" and len(words) == 2 and words[1].lower() in ("on", "off"):
            respond(**_workspace_tracking(deps, client, team_id, user_id, words[1].lower() == "on"))
        elif sub == "contact" and len(words) >= 3 and words[1].lower() == "add":
            respond(**_add_contact(deps, team_id, words[2], " ".join(words[3:]) or None))
        else:
            respond(**messages.help_message())


def _for_each_account(deps: SlackDeps, verb: str, team_id: str, user_id: str) -> dict[str, Any]:
    """sync, pause or resume every mailbox of the caller; one line per mailbox."""
    done = {"sync": "syncs now", "pause": "is paused", "resume": "syncs again"}[verb]
    lines = []
    for outcome in lifecycle.for_each_account(deps.services.db, verb, team_id=team_id, user_id=user_id):
        if not outcome.done:
            lines.append(f"• {escape(outcome.email)}: {outcome.refusal}")
        else:
            extra = " right after the sync that is running" if outcome.queued else ""
            lines.append(f"• {escape(outcome.email)} {done}{extra}.")
    text = "\n".join(lines) or "You have no mailbox connected yet. Type `/emailsync setup` to connect one."
    return {"response_type": "ephemeral", "text": text}


def _add_contact(deps: SlackDeps, team_id: str, email: str, name: str | None) -> dict[str, Any]:
    try:
        address, linked = add_contact(deps.services.db, team_id=team_id, email=email, name=name, source="slack")
    except ValueError:
        text = f"`{escape(email)}` is not an email address. Try `/emailsync contact add name@example.com Jane Doe`."
        return {"response_type": "ephemeral", "text": text}
    text = f"{escape(address)} is a contact of your team now; {linked:,} synced emails are linked to it."
    return {"response_type": "ephemeral", "text": text}


def _workspace_tracking(
    deps: SlackDeps, client: WebClient, team_id: str, user_id: str, enabled: bool
) -> dict[str, Any]:
    """Only a workspace admin or owner turns open and click tracking on or off for everyone."""
    user = client.users_info(user=user_id).get("user") or {}
    if not (user.get("is_admin") or user.get("is_owner")) or user.get("team_id", team_id) != team_id:
        return {"response_type": "ephemeral", "text": "Only a workspace admin can change tracking for everyone."}
    set_workspace_tracking(deps.services.db, team_id=team_id, enabled=enabled)
    state = "on" if enabled else "off"
    text = f"Open and click tracking is {state} for everyone in this workspace."
    return {"response_type": "ephemeral", "text": text}
