"""Find in Slack: `/emailsync find`, the "Emails with this person" message shortcut, result pages and threads.

Every answer is computed again for the person who clicked: a page button carries a query, a View button
a message id, and neither is proof of anything (flows/find.py decides what that person may see).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot import ids
from bot.actions.replies import tell
from bot.deps import SlackDeps
from bot.view_state import caller
from bot.views import find as views
from flows import find as find_flow
from flows.contacts import normalise_email
from flows.find import FindError, NotOwner, NotVisible

log = logging.getLogger(__name__)
GONE = "That email is gone, or it is not shared with you any more."
NOT_OWNER = "Only the person whose mailbox holds this thread can change who sees it. Nothing was changed."
_MAILTO = re.compile(r"<mailto:([^|>\s]+)(?:\|[^>]*)?>", re.IGNORECASE)
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def addresses_in(text: str) -> list[str]:
    """The email addresses a Slack message mentions (mailto links first), lower-cased, each once."""
    found = [m.group(1) for m in _MAILTO.finditer(text)] + _ADDRESS.findall(_MAILTO.sub(" ", text))
    out: list[str] = []
    for raw in found:
        address = normalise_email(raw)
        if address is not None and address not in out:
            out.append(address)
    return out


def register(app: App, deps: SlackDeps) -> None:
    """Register the message shortcut, paging, thread views and the owner's visibility buttons."""
    db = deps.services.db

    @app.shortcut(ids.SHORTCUT_FIND)
    def on_shortcut(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        # A trigger lives 3 s: the modal opens at once and gets the results when the query is done.
        opened = client.views_open(trigger_id=body["trigger_id"], view=views.loading_modal())["view"]
        message = body.get("message") or {}
        addresses = addresses_in(_message_text(message))
        if not addresses:
            view = views.notice_modal(
                "This message mentions no email address. Try `/emailsync find <address, name or domain>`.",
                title="Emails with this person",
            )
        else:
            result = find_flow.find(db, team_id=team_id, user_id=user_id, query=addresses[0])
            view = views.results_modal(result, others=addresses[1:])
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=view)

    @app.action(re.compile(rf"^{ids.A_FIND_PAGE}_(newer|older)$"))
    def on_page(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            query, offset = views.parse_page_value(body["actions"][0].get("value") or "")
            result = find_flow.find(db, team_id=team_id, user_id=user_id, query=query, offset=offset)
        except (ValueError, FindError):
            tell(client, body, user_id, "That button is broken; search again with `/emailsync find`.")
            return
        _show(client, body, respond, result)

    @app.action(re.compile(rf"^{ids.A_FIND_OTHER}_\d+$"))
    def on_other(ack: Ack, body: dict[str, Any], client: WebClient, respond: Respond) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            result = find_flow.find(db, team_id=team_id, user_id=user_id, query=body["actions"][0].get("value") or "")
        except FindError as exc:
            tell(client, body, user_id, exc.message)
            return
        _show(client, body, respond, result)

    @app.action(ids.A_FIND_OPEN)
    def on_open(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            message_id = int(body["actions"][0].get("value") or "")
            thread = find_flow.open_thread(db, team_id=team_id, user_id=user_id, message_id=message_id)
        except (ValueError, NotVisible):
            tell(client, body, user_id, GONE)
            return
        view = views.thread_modal(thread)
        if (body.get("container") or {}).get("type") == "view":
            client.views_push(trigger_id=body["trigger_id"], view=view)
        else:
            client.views_open(trigger_id=body["trigger_id"], view=view)

    @app.action(ids.A_THREAD_QUOTES)
    def on_quotes(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            state = json.loads(body["actions"][0].get("value") or "")
            thread = find_flow.open_thread(
                db, team_id=team_id, user_id=user_id, message_id=int(state["m"]), unfold=bool(state["u"])
            )
        except (ValueError, KeyError, TypeError, NotVisible):
            tell(client, body, user_id, GONE)
            return
        _update_view(client, body, views.thread_modal(thread))

    @app.action(re.compile(rf"^{ids.A_THREAD_VISIBILITY}_(shared|private)$"))
    def on_visibility(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            visibility, _, raw_id = (body["actions"][0].get("value") or "").partition(":")
            message_id = int(raw_id)
            changed = find_flow.change_thread_visibility(
                db, team_id=team_id, user_id=user_id, message_id=message_id, visibility=visibility
            )
        except NotOwner:
            log.warning("user %s of team %s tried to change the visibility of someone else's thread", user_id, team_id)
            tell(client, body, user_id, NOT_OWNER)
            return
        except (ValueError, NotVisible):
            tell(client, body, user_id, GONE)
            return
        notice = (
            f"Your team sees this thread now ({changed} emails)."
            if visibility == "shared"
            else f"Only you see this thread now ({changed} emails)."
        )
        unfold = _unfolded(body)
        thread = find_flow.open_thread(db, team_id=team_id, user_id=user_id, message_id=message_id, unfold=unfold)
        _update_view(client, body, views.thread_modal(thread, notice=notice))


def _message_text(message: dict[str, Any]) -> str:
    """The text of a message as the shortcut payload carries it, with the text of its blocks."""
    parts = [str(message.get("text") or "")]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "link" and isinstance(node.get("url"), str):
                parts.append(f"<{node['url']}>")
            if isinstance(node.get("text"), str):
                parts.append(node["text"])
            for value in node.values():
                if isinstance(value, (dict, list)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("blocks") or [])
    return "\n".join(parts)


def _show(client: WebClient, body: dict[str, Any], respond: Respond, result: find_flow.FindResult) -> None:
    """A results page where the click came from: the modal, else the ephemeral message (replaced)."""
    if (body.get("container") or {}).get("type") == "view":
        _update_view(client, body, views.results_modal(result))
    else:
        respond(**views.results_message(result, replace=True))


def _update_view(client: WebClient, body: dict[str, Any], view: dict[str, Any]) -> None:
    current = body.get("view") or {}
    if current.get("id"):
        client.views_update(view_id=current["id"], hash=current.get("hash"), view=view)


def _unfolded(body: dict[str, Any]) -> bool:
    try:
        return bool(json.loads((body.get("view") or {}).get("private_metadata") or "{}").get("u"))
    except (ValueError, AttributeError):
        return False
