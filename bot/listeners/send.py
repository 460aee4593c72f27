"""Sending from Slack: /emailsync send, the shortcuts, Reply, address options and the compose modal's submit."""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import ids
from bot.actions.home import publish_home
from bot.actions.send import open_compose, send_config
from bot.deps import SlackDeps
from bot.view_state import caller, checked, picked, selected, text
from bot.views import send as views
from flows import richtext
from flows import send as send_flow
from flows.send import ComposeError, Draft

log = logging.getLogger(__name__)

# Which input block a ComposeError's field is shown under.
FIELD_BLOCKS = {"to": ids.B_SEND_TO, "cc": ids.B_SEND_CC, "from": ids.B_SEND_FROM}


def register(app: App, deps: SlackDeps) -> None:
    """Register the send listeners."""
    db = deps.services.db

    @app.shortcut(ids.SHORTCUT_SEND)
    def on_global_shortcut(ack: Ack, shortcut: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(shortcut)
        open_compose(deps, client, shortcut["trigger_id"], team_id, user_id)

    @app.shortcut(ids.SHORTCUT_SEND_MESSAGE)
    def on_message_shortcut(ack: Ack, shortcut: dict[str, Any], client: WebClient) -> None:
        ack()
        message = shortcut.get("message") or {}
        body = next((b for b in message.get("blocks") or [] if b.get("type") == "rich_text"), None)
        if body is None:
            body = richtext.from_text(str(message.get("text") or ""))
        team_id, user_id = caller(shortcut)
        open_compose(deps, client, shortcut["trigger_id"], team_id, user_id, body=body)

    @app.action(ids.A_REPLY)
    def on_reply(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            message_id = int(body["actions"][0]["value"])
        except (KeyError, ValueError):
            return
        team_id, user_id = caller(body)
        # The id is re-checked in reply_defaults: only a message this person may see is quoted.
        open_compose(
            deps,
            client,
            body["trigger_id"],
            team_id,
            user_id,
            reply_to=message_id,
            push=body.get("view") is not None,
        )

    def address_options(ack: Ack, body: dict[str, Any]) -> None:
        team_id, _ = caller(body)
        found = send_flow.address_suggestions(db, team_id=team_id, text=str(body.get("value") or ""))
        ack(options=[views.address_option(email, name) for email, name in found][: views.MAX_ADDRESS_OPTIONS])

    app.options(ids.A_SEND_TO)(address_options)
    app.options(ids.A_SEND_CC)(address_options)

    @app.view(ids.SEND_VIEW)
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        team_id, user_id = caller(body)
        values = view["state"]["values"]
        try:
            draft = _draft(values, view, team_id, user_id)
            # Addresses are checked before the modal changes, so a typo is an inline error, not a failed send.
            send_flow.parse_addresses(draft.to, "to")
            send_flow.parse_addresses(draft.cc, "cc")
            if not draft.to:
                raise ComposeError("to", "Add at least one recipient.")
        except ComposeError as exc:
            ack(response_action="errors", errors={FIELD_BLOCKS.get(exc.field, ids.B_SEND_TO): exc.message})
            return
        ack(response_action="update", view=views.sending_view())
        if ids.B_SEND_TRACKING in values:
            send_flow.save_tracking_defaults(
                db,
                team_id=team_id,
                user_id=user_id,
                opens=draft.track_opens,
                links=draft.track_links,
                notify=draft.notify,
            )
        try:
            result = send_flow.send(db, deps.services.secrets, send_config(deps), draft)
            blocks_args: dict[str, Any] = {
                "delivered": result.delivered,
                "failed": result.failed,
                "error": result.error,
                "fix": result.fix,
                "sent_copy_problem": result.sent_copy_problem,
            }
        except ComposeError as exc:
            blocks_args = {"delivered": [], "failed": [], "error": exc.message, "fix": None, "sent_copy_problem": None}
        try:
            client.views_update(view_id=view["id"], view=views.result_view(subject=draft.subject, **blocks_args))
        except SlackApiError:
            # The modal was closed meanwhile: the person still learns what happened, in a DM.
            blocks = views.result_blocks(subject=draft.subject, **blocks_args)
            client.chat_postMessage(channel=user_id, text="Your email", blocks=blocks)
        publish_home(db, client, team_id, user_id)  # the sent email appears in App Home


def _draft(values: dict[str, Any], view: dict[str, Any], team_id: str, user_id: str) -> Draft:
    try:
        account_id = int(selected(values, ids.B_SEND_FROM, ids.A_SEND_FROM) or "")
    except ValueError:
        raise ComposeError("from", "Choose the mailbox to send from.") from None
    tracking = checked(values, ids.B_SEND_TRACKING, ids.A_SEND_TRACKING)
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        reply_to = int(meta["reply_to"]) if meta.get("reply_to") is not None else None
    except (ValueError, TypeError, KeyError):
        reply_to = None
    return Draft(
        team_id=team_id,
        user_id=user_id,
        account_id=account_id,
        to=picked(values, ids.B_SEND_TO, ids.A_SEND_TO),
        cc=picked(values, ids.B_SEND_CC, ids.A_SEND_CC),
        subject=text(values, ids.B_SEND_SUBJECT, ids.A_SEND_SUBJECT, strip=False),
        body=(values.get(ids.B_SEND_BODY, {}).get(ids.A_SEND_BODY) or {}).get("rich_text_value"),
        track_opens="track_opens" in tracking,
        track_links="track_links" in tracking,
        notify="notify_tracking" in tracking,
        compose_key=str(view.get("id") or ""),
        reply_to=reply_to,
    )
