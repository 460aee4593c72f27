"""Opening the compose modal (from the command, the shortcuts or Reply) with the person's defaults."""

from __future__ import annotations

from slack_sdk import WebClient

from bot.deps import SlackDeps
from bot.views import send as views
from flows import richtext
from flows import send as send_flow
from flows.send import ComposeError, SendConfig


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
