"""Block Kit for sending from Slack: the compose modal, its address options, results, tracking DMs, Home."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from bot import ids
from bot.views.blocks import Block, clip, context, escape, modal, option, plain, section
from models.tables import EmailAccount, SentEmail

MAX_ADDRESS_OPTIONS = 100  # Slack shows at most 100 options
TIMES = "\u00d7"  # the multiplication sign of "opened 3x"


def address_option(email: str, name: str | None = None) -> dict[str, Any]:
    """An option for a To/Cc select: the value is the address as typed (checked on submit)."""
    label = f"{name} <{email}>" if name else email
    return option(clip(label, 75), clip(email, 150))


def compose_view(
    accounts: Sequence[EmailAccount],
    *,
    to: Sequence[str] = (),
    subject: str = "",
    body: dict[str, Any] | None = None,
    account_id: int | None = None,
    opens: bool = True,
    links: bool = True,
    notify: bool = True,
    tracking_allowed: bool = True,
    reply_to: int | None = None,
) -> dict[str, Any]:
    """The compose modal: From, To, Cc, Subject, Body and the tracking switches (the person's defaults)."""
    choices = [option(clip(a.email, 75), str(a.id)) for a in accounts][:100]
    chosen = next((o for o in choices if o["value"] == str(account_id)), choices[0] if choices else None)
    from_select: dict[str, Any] = {"type": "static_select", "action_id": ids.A_SEND_FROM, "options": choices}
    if chosen is not None:
        from_select["initial_option"] = chosen
    to_select: dict[str, Any] = {
        "type": "multi_external_select",
        "action_id": ids.A_SEND_TO,
        "min_query_length": 1,
        "placeholder": plain("A contact's name, or any address"),
    }
    if to:
        to_select["initial_options"] = [address_option(a) for a in to][:MAX_ADDRESS_OPTIONS]
    body_input: dict[str, Any] = {"type": "rich_text_input", "action_id": ids.A_SEND_BODY}
    if body:
        body_input["initial_value"] = body
    subject_input: dict[str, Any] = {"type": "plain_text_input", "action_id": ids.A_SEND_SUBJECT, "max_length": 250}
    if subject:
        subject_input["initial_value"] = clip(subject, 250)
    blocks: list[Block] = [
        {"type": "input", "block_id": ids.B_SEND_FROM, "label": plain("From"), "element": from_select},
        {"type": "input", "block_id": ids.B_SEND_TO, "label": plain("To"), "element": to_select},
        {
            "type": "input",
            "block_id": ids.B_SEND_CC,
            "label": plain("Cc"),
            "optional": True,
            "element": {"type": "multi_external_select", "action_id": ids.A_SEND_CC, "min_query_length": 1},
        },
        {"type": "input", "block_id": ids.B_SEND_SUBJECT, "label": plain("Subject"), "element": subject_input},
        {"type": "input", "block_id": ids.B_SEND_BODY, "label": plain("Message"), "element": body_input},
    ]
    if tracking_allowed:
        options = [
            option("Track opens", "track_opens"),
            option("Track link clicks", "track_links"),
            option("Tell me in Slack when it is opened or clicked", "notify_tracking"),
        ]
        initial = [o for o, on in zip(options, (opens, links, notify), strict=True) if on]
        element: dict[str, Any] = {"type": "checkboxes", "action_id": ids.A_SEND_TRACKING, "options": options}
        if initial:
            element["initial_options"] = initial
        blocks.append(
            {
                "type": "input",
                "block_id": ids.B_SEND_TRACKING,
                "label": plain("Tracking"),
                "optional": True,
                "element": element,
                "hint": plain("What you choose here becomes your default."),
            }
        )
    else:
        blocks.append(context("Open and click tracking is turned off in this workspace."))
    metadata = json.dumps({"reply_to": reply_to}) if reply_to is not None else ""
    return modal(ids.SEND_VIEW, "Send email", blocks, private_metadata=metadata, submit="Send")


def no_account_view() -> dict[str, Any]:
    """The modal for someone with no mailbox to send from."""
    return modal(
        ids.SEND_VIEW,
        "Send email",
        [section("You have no mailbox connected yet. Type `/emailsync setup` to connect one, then send from Slack.")],
        close="Close",
    )


def sending_view() -> dict[str, Any]:
    """Shown while the email goes out."""
    return modal(ids.SEND_VIEW, "Send email", [section(":hourglass_flowing_sand: Sending…")], close="Close")


def result_view(
    *,
    subject: str,
    delivered: Sequence[str],
    failed: Sequence[tuple[str, str]],
    error: str | None,
    fix: str | None,
    sent_copy_problem: str | None,
) -> dict[str, Any]:
    """What happened: sent to whom, refused for whom and why, or why nothing was sent."""
    return modal(
        ids.SEND_VIEW,
        "Send email",
        result_blocks(
            subject=subject,
            delivered=delivered,
            failed=failed,
            error=error,
            fix=fix,
            sent_copy_problem=sent_copy_problem,
        ),
        close="Close",
    )


def result_blocks(
    *,
    subject: str,
    delivered: Sequence[str],
    failed: Sequence[tuple[str, str]],
    error: str | None,
    fix: str | None,
    sent_copy_problem: str | None,
) -> list[Block]:
    """The result as blocks (for the modal or a DM)."""
    title = f"*{escape(subject or '(no subject)')}*"
    blocks: list[Block] = []
    if delivered and not failed:
        blocks.append(section(f":white_check_mark: {title} was sent to {escape(', '.join(delivered))}."))
    elif delivered:
        blocks.append(section(f":warning: {title} was sent to {escape(', '.join(delivered))} only."))
    else:
        blocks.append(section(f":x: {title} was not sent to anyone."))
    if error:
        blocks.append(section(escape(error) + (f"\n{escape(fix)}" if fix else "")))
    if failed:
        lines = "\n".join(f"• {escape(email)}: {escape(reason)}" for email, reason in failed[:20])
        blocks.append(section(clip(f"Not delivered (nothing is sent again automatically):\n{lines}", 3000)))
    if sent_copy_problem:
        blocks.append(context(escape(sent_copy_problem)))
    return blocks


def tracking_dm(sent: SentEmail, *, who: str, clicked: Sequence[str]) -> dict[str, Any]:
    """The one DM per sent email: the first open (or click), edited as more arrive."""
    subject = escape(sent.subject or "(no subject)")
    when = _time(sent.last_open_at)
    if sent.opens == 1:
        text = f":eyes: {escape(who)} opened *{subject}* · {when}"
    elif sent.opens:
        text = f":eyes: {escape(who)} · *{subject}* · opened {sent.opens}{TIMES} · last {when}"
    else:
        text = f":link: {escape(who)} clicked a link in *{subject}*"
    lines = [text]
    if clicked:
        lines.append("Clicked: " + ", ".join(escape(clip(u, 80)) for u in clicked[:5]))
    return {"text": "\n".join(lines), "blocks": [section("\n".join(lines))]}


def _time(at: dt.datetime | None) -> str:
    if at is None:
        return ""
    # Slack shows the date token in the reader's own time zone; the fallback is UTC.
    epoch = int(at.replace(tzinfo=dt.UTC).timestamp())
    return f"<!date^{epoch}^{{time}}|{at:%H:%M} UTC>"


def home_sent_blocks(sent: Sequence[SentEmail]) -> list[Block]:
    """App Home: the last emails sent from Slack with their opens and clicks."""
    if not sent:
        return []
    blocks: list[Block] = [{"type": "header", "text": plain("Sent from Slack")}]
    for row in sent:
        recipients = ", ".join(r["email"] for r in json.loads(row.recipients or "[]"))
        track = f"{row.opens} opens · {row.clicks} clicks" if row.track_opens or row.track_links else "not tracked"
        status = {"partial": " · :warning: not delivered to everyone", "failed": " · :x: not sent"}.get(row.status, "")
        blocks.append(
            section(clip(f"*{escape(row.subject or '(no subject)')}* to {escape(recipients)}\n{track}{status}", 3000))
        )
    return blocks
