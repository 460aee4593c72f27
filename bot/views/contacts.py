"""Contacts in Slack: the weekly "people who are not contacts yet" DM, the add-contact modals, CSV import answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bot import ids
from bot.views.blocks import Block, button, clip, context, escape, modal, option, plain, section
from flows.contacts import ImportReport
from flows.people import DAYS, Digest, Suggestion

MAX_REFUSED_LINES = 20  # the rest are counted, not listed (a message holds 50 blocks of 3,000 characters)


def digest_value(digest_id: int, email: str) -> str:
    """A digest button's value: which digest and which of its addresses (reloaded and checked on click)."""
    return f"{digest_id}|{email}"


def parse_digest_value(value: str) -> tuple[int, str]:
    """The digest id and address of a digest button (ValueError when it is not one)."""
    digest_id, _, email = value.partition("|")
    if not email:
        raise ValueError("not a digest value")
    return int(digest_id), email


def digest_message(digest: Digest) -> dict[str, Any]:
    """The weekly DM: each address with its counts and Add as contact / Ignore, or what was done with it."""
    start, end = digest.window_start, digest.window_end - dt.timedelta(seconds=1)
    head = f"*People you emailed most this week who are not contacts of your team yet* ({start:%d %b} to {end:%d %b})"
    blocks: list[Block] = [section(head)]
    for i, s in enumerate(digest.suggestions):
        blocks.append(section(_suggestion_text(s)))
        if s.state == "added":
            linked = f" · {s.linked:,} synced emails linked" if s.linked is not None else ""
            blocks.append(context(f"✅ Added as a contact{linked}"))
        elif s.state == "ignored":
            blocks.append(context("🙈 Ignored: I won't suggest this address again"))
        else:
            value = digest_value(digest.id, s.email)
            blocks.append(
                {
                    "type": "actions",
                    "block_id": f"digest_{i}",
                    "elements": [
                        button("Add as contact", ids.A_DIGEST_ADD, value, style="primary"),
                        button("Ignore", ids.A_DIGEST_IGNORE, value),
                    ],
                }
            )
    blocks.append(context("Choose the day and hour of this message, or turn it off, in my Home tab."))
    names = ", ".join(s.email for s in digest.suggestions[:3])
    return {"text": f"People you emailed this week who are not contacts yet: {names}", "blocks": blocks}


def _suggestion_text(s: Suggestion) -> str:
    who = f"*{escape(clip(s.name, 100))}* {escape(f'<{s.email}>')}" if s.name else f"*{escape(s.email)}*"
    parts = [f"{s.received} received" if s.received else "", f"{s.sent} sent" if s.sent else ""]
    return f"{who}\n{s.messages} emails · " + ", ".join(p for p in parts if p)


def digest_add_modal(digest_id: int, s: Suggestion) -> dict[str, Any]:
    """Add a suggested address as a contact: its name prefilled from the headers, editable."""
    name_input: dict[str, Any] = {"type": "plain_text_input", "action_id": ids.A_CONTACT_NAME, "max_length": 200}
    if s.name:
        name_input["initial_value"] = clip(s.name, 200)
    blocks: list[Block] = [
        section(f"Add *{escape(s.email)}* to your team's contacts. Their synced emails are linked at once."),
        {
            "type": "input",
            "block_id": ids.B_CONTACT_NAME,
            "optional": True,
            "label": plain("Name"),
            "element": name_input,
        },
    ]
    return modal(
        ids.DIGEST_ADD_VIEW, "Add contact", blocks, private_metadata=digest_value(digest_id, s.email), submit="Add"
    )


def add_contact_modal() -> dict[str, Any]:
    """Add any address as a contact (from App Home)."""
    blocks: list[Block] = [
        {
            "type": "input",
            "block_id": ids.B_CONTACT_EMAIL,
            "label": plain("Email address"),
            "element": {
                "type": "plain_text_input",
                "action_id": ids.A_CONTACT_EMAIL,
                "max_length": 320,
                "placeholder": plain("jane@example.com"),
            },
        },
        {
            "type": "input",
            "block_id": ids.B_CONTACT_NAME,
            "optional": True,
            "label": plain("Name"),
            "element": {"type": "plain_text_input", "action_id": ids.A_CONTACT_NAME, "max_length": 200},
        },
        context("The contact belongs to your team; synced emails with this address are linked at once."),
    ]
    return modal(ids.ADD_CONTACT_VIEW, "Add contact", blocks, submit="Add")


def contact_added_modal(email: str, linked: int) -> dict[str, Any]:
    """What adding a contact did."""
    text = f"*{escape(email)}* is a contact of your team now; {linked:,} synced emails are linked to it."
    return modal(ids.ADD_CONTACT_VIEW, "Contact added", [section(text)], close="Close")


def import_instructions() -> dict[str, Any]:
    """The DM that explains the CSV import."""
    text = (
        "*Import contacts from a CSV file*: send me the file here, in this conversation.\n"
        "• A header row, then one contact per row, with the columns `email` and `name` (name may be empty).\n"
        "• The file must be UTF-8, at most 2 MB. An address that is already a contact gets the new name.\n"
        "I import the good rows and tell you which lines I refused and why."
    )
    return {"text": "Send me a CSV file (columns email,name) here to import contacts.", "blocks": [section(text)]}


def import_summary(file_name: str, report: ImportReport) -> dict[str, Any]:
    """What an import did: rows added and updated, emails linked, refused rows by line number."""
    name = escape(clip(file_name, 200))
    text = (
        f"*{name}*: {report.added:,} contacts added, {report.updated:,} updated, "
        f"{report.linked_messages:,} synced emails linked."
    )
    blocks: list[Block] = [section(text)]
    if report.errors:
        lines: list[str] = []
        used = 0
        for line, error in report.errors[:MAX_REFUSED_LINES]:
            item = f"• line {line}: {escape(clip(error, 200))}"
            if used + len(item) > 2700:  # the section holds 3,000 characters; the count of the rest must fit
                break
            lines.append(item)
            used += len(item) + 1
        more = len(report.errors) - len(lines)
        if more > 0:
            lines.append(f"• … and {more:,} more")
        refused = f"*{len(report.errors):,} rows refused:*\n" + "\n".join(lines)
        blocks.append(section(clip(refused, 3000)))
    plain_text = f"{file_name}: {report.added} added, {report.updated} updated, {len(report.errors)} refused"
    return {"text": plain_text, "blocks": blocks}


def import_refused(text: str) -> dict[str, Any]:
    """A file that could not be imported at all, and why."""
    return {"text": text, "blocks": [section(escape(text))]}


def contacts_section(count: int) -> list[Block]:
    """App Home: the team's contacts, with Add contact and Import CSV."""
    return [
        {"type": "divider"},
        section(
            f"*Contacts of your team*: {count:,}\n"
            "Find anyone's emails with `/emailsync find <address, name or domain>`."
        ),
        {
            "type": "actions",
            "elements": [
                button("Add contact", ids.A_HOME_ADD_CONTACT),
                button("Import CSV", ids.A_HOME_IMPORT_CSV),
            ],
        },
    ]


def digest_day_options() -> list[dict[str, Any]]:
    """Off, then the days of the week."""
    return [option("Off", "off"), *(option(day, str(i)) for i, day in enumerate(DAYS))]


def digest_hour_options() -> list[dict[str, Any]]:
    """Every hour of the day."""
    return [option(f"{h:02d}:00", str(h)) for h in range(24)]


def contact_added_modal_refused(text: str) -> dict[str, Any]:
    """Adding a suggested contact was refused (a stale or someone else's digest)."""
    return modal(ids.ADD_CONTACT_VIEW, "Add contact", [section(escape(text))], close="Close")
