"""Sending from Slack: /emailsync send, the shortcuts, Reply, address options and the compose modal's submit."""

from __future__ import annotations

import json
import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import ids
from bot.listeners.home import publish_home
from bot.slack_app import SlackDeps
from bot.views import send as views
from flows import richtext
from flows import send as send_flow
from flows.send import ComposeError, Draft, SendConfig

log = logging.getLogger(__name__)

# Which input block a ComposeError's field is shown under.
FIELD_BLOCKS = {"to": ids.B_SEND_TO, "cc": ids.B_SEND_CC, "from": ids.B_SEND_FROM}


def send_config(deps: SlackDeps) -> SendConfig:
    """The sending settings of this process."""
    s = deps.services.settings
    return SendConfig(
        public_base_url=deps.public_base_url,
        timeout=s.imap_timeout,
        max_bytes=s.send_max_bytes,
        sends_per_hour=s.sends_per_hour,
        tracking_allowed=s.tracking_enabled,
        ssl_context=deps.ssl_context,
        outbound=s.outbound_policy,
        oauth=deps.services.oauth,
    )


def open_compose(
    deps: SlackDeps,
    client: WebClient,
    trigger_id: str,
    team_id: str,
    user_id: str,
    *,
    to: list[str] | None = None,
    body: richtext.RichText | None = None,
    reply_to: int | None = None,
    push: bool = False,
) -> None:
    """Open the compose modal (pushed over the modal it comes from), prefilled with the person's defaults."""
    db = deps.services.db
    accounts, prefs, allowed = send_flow.compose_defaults(db, send_config(deps), team_id=team_id, user_id=user_id)
    show = client.views_push if push else client.views_open
    if not accounts:
        show(trigger_id=trigger_id, view=views.no_account_view())
        return
    subject, account_id = "", None
    if reply_to is not None:
        try:
            first, subject, mine, body = send_flow.reply_defaults(
                db, team_id=team_id, user_id=user_id, message_id=reply_to
            )
        except ComposeError:
            reply_to = None
        else:
            to = [first] if first else []
            account_id = next((a.id for a in accounts if a.email == mine), None)
    view = views.compose_view(
        accounts,
        to=to or [],
        subject=subject,
        body=body,
        account_id=account_id,
        opens=prefs.track_opens,
        links=prefs.track_links,
        notify=prefs.notify_tracking,
        tracking_allowed=allowed,
        reply_to=reply_to,
    )
    show(trigger_id=trigger_id, view=view)


def register(app: App, deps: SlackDeps) -> None:
    """Register the send listeners."""
    db = deps.services.db

    @app.shortcut(ids.SHORTCUT_SEND)
    def on_global_shortcut(ack: Ack, shortcut: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id = (shortcut.get("team") or {}).get("id") or shortcut.get("team_id")
        open_compose(deps, client, shortcut["trigger_id"], str(team_id), shortcut["user"]["id"])

    @app.shortcut(ids.SHORTCUT_SEND_MESSAGE)
    def on_message_shortcut(ack: Ack, shortcut: dict[str, Any], client: WebClient) -> None:
        ack()
        message = shortcut.get("message") or {}
        body = next((b for b in message.get("blocks") or [] if b.get("type") == "rich_text"), None)
        if body is None:
            body = richtext.from_text(str(message.get("text") or ""))
        team_id = (shortcut.get("team") or {}).get("id")
        open_compose(deps, client, shortcut["trigger_id"], str(team_id), shortcut["user"]["id"], body=body)

    @app.action(ids.A_REPLY)
    def on_reply(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        try:
            message_id = int(body["actions"][0]["value"])
        except (KeyError, ValueError):
            return
        team_id = (body.get("team") or {}).get("id") or body["user"].get("team_id")
        # The id is re-checked in reply_defaults: only a message this person may see is quoted.
        open_compose(
            deps,
            client,
            body["trigger_id"],
            str(team_id),
            body["user"]["id"],
            reply_to=message_id,
            push=body.get("view") is not None,
        )

    def address_options(ack: Ack, body: dict[str, Any]) -> None:
        team_id = (body.get("team") or {}).get("id") or body["user"].get("team_id")
        found = send_flow.address_suggestions(db, team_id=str(team_id), text=str(body.get("value") or ""))
        ack(options=[views.address_option(email, name) for email, name in found][: views.MAX_ADDRESS_OPTIONS])

    app.options(ids.A_SEND_TO)(address_options)
    app.options(ids.A_SEND_CC)(address_options)

    @app.view(ids.SEND_VIEW)
    def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        team_id = str((body.get("team") or {}).get("id") or body["user"].get("team_id"))
        user_id = body["user"]["id"]
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
    def picked(block: str, action: str) -> list[str]:
        state = (values.get(block) or {}).get(action)
        options = state.get("selected_options") if isinstance(state, dict) else None
        return [str(o.get("value")) for o in options or [] if isinstance(o, dict)]

    chosen = (values.get(ids.B_SEND_FROM, {}).get(ids.A_SEND_FROM) or {}).get("selected_option") or {}
    try:
        account_id = int(chosen.get("value") or "")
    except ValueError:
        raise ComposeError("from", "Choose the mailbox to send from.") from None
    tracking = picked(ids.B_SEND_TRACKING, ids.A_SEND_TRACKING)
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
        reply_to = int(meta["reply_to"]) if meta.get("reply_to") is not None else None
    except (ValueError, TypeError, KeyError):
        reply_to = None
    return Draft(
        team_id=team_id,
        user_id=user_id,
        account_id=account_id,
        to=picked(ids.B_SEND_TO, ids.A_SEND_TO),
        cc=picked(ids.B_SEND_CC, ids.A_SEND_CC),
        subject=(values.get(ids.B_SEND_SUBJECT, {}).get(ids.A_SEND_SUBJECT) or {}).get("value") or "",
        body=(values.get(ids.B_SEND_BODY, {}).get(ids.A_SEND_BODY) or {}).get("rich_text_value"),
        track_opens="track_opens" in tracking,
        track_links="track_links" in tracking,
        notify="notify_tracking" in tracking,
        compose_key=str(view.get("id") or ""),
        reply_to=reply_to,
    )
