"""The setup modals, one pure function per step, and the messages around them."""

from __future__ import annotations

from typing import Any

from bot import ids
from bot.views.blocks import Block, button, context, escape, modal, option, plain, section
from flows.setup import SetupState
from sync.folders import EXCLUDED_FROM_ALL
from sync.preview import WindowPreview

TITLE = "Email sync"
STEP_NAMES = {"connect": "Connect your mailbox", "tracking": "Tracking", "folders": "What to sync", "start": "Start"}
STEP_ORDER = ("connect", "tracking", "folders", "start")
START_LABELS = {"now": "Now", "1m": "1 month ago", "3m": "3 months ago", "6m": "6 months ago", "1y": "1 year ago"}
MAX_STATIC_FOLDERS = 100  # Slack's limit of options in a static select; above it the picker searches


def step_counter(step: str) -> Block:
    """'Step 2 of 4 · Tracking'."""
    n = STEP_ORDER.index(step) + 1
    return context(f"*Step {n} of {len(STEP_ORDER)}* · {STEP_NAMES[step]}")


def connect_view(state: SetupState, link: str) -> dict[str, Any]:
    """Step 1: a button to our own connect page (Slack modals have no password field)."""
    blocks = [
        step_counter("connect"),
        section(
            "*Connect your mailbox.* For your safety you never type your password into Slack: open our secure "
            "page, sign in there, and this window moves on by itself."
        ),
        {
            "type": "actions",
            "block_id": ids.B_CONNECT,
            "elements": [button("Open the secure connect page", ids.A_CONNECT_LINK, url=link, style="primary")],
        },
        context(
            "The link works for 15 minutes and only for you. Gmail, iCloud, Yahoo and Outlook need an app password."
        ),
    ]
    return modal(ids.SETUP_VIEW, TITLE, blocks, private_metadata=str(state.session_id))


def tracking_view(state: SetupState) -> dict[str, Any]:
    """Step 2: tracking of mail sent through the app, and who sees synced mail."""
    d = state.draft
    choices = [
        option("Track opens", "track_opens", "See when a recipient opens your email"),
        option("Track link clicks", "track_links", "See when a recipient clicks a link"),
        option("Notify me of tracking activity", "notify_tracking"),
    ]
    chosen = [c for c in choices if getattr(d, c["value"])]
    checkboxes: dict[str, Any] = {"type": "checkboxes", "action_id": ids.A_TRACKING, "options": choices}
    if chosen:
        checkboxes["initial_options"] = chosen
    visibility = [
        option("Private", "private", "Only you see your synced emails"),
        option("Shared", "shared", "Everyone in your team sees them"),
    ]
    blocks = [
        step_counter("tracking"),
        context(f"Connected as *{escape(d.email or '')}*."),
        {
            "type": "input",
            "block_id": ids.B_TRACKING,
            "optional": True,
            "label": plain("Email tracking (for mail you send through the app)"),
            "element": checkboxes,
        },
        {
            "type": "input",
            "block_id": ids.B_VISIBILITY,
            "label": plain("Who can see your synced emails"),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_VISIBILITY,
                "options": visibility,
                "initial_option": next(v for v in visibility if v["value"] == d.visibility),
            },
        },
    ]
    return modal(ids.SETUP_VIEW, TITLE, blocks, private_metadata=str(state.session_id), submit="Next")


def folders_view(state: SetupState) -> dict[str, Any]:
    """Step 3: all mail, or only chosen folders (the picker shows only for the second)."""
    d = state.draft
    modes = [
        option("Sync all emails", "all", "Every folder except Trash, Junk and Drafts"),
        option("Sync only emails in specific labels", "labels", "Choose the folders"),
    ]
    blocks: list[Block] = [
        step_counter("folders"),
        {
            "type": "input",
            "block_id": ids.B_SYNC_MODE,
            "dispatch_action": True,
            "label": plain("What to sync"),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_SYNC_MODE,
                "options": modes,
                "initial_option": next(m for m in modes if m["value"] == d.sync_mode),
            },
        },
    ]
    if d.sync_mode == "labels":
        blocks.append(folder_picker(state))
    else:
        left_out = [name for name, role in state.folders if role in EXCLUDED_FROM_ALL]
        if left_out:
            blocks.append(context("Left out: " + escape(", ".join(left_out))))
    blocks.append(back_button("tracking"))
    return modal(ids.SETUP_VIEW, TITLE, blocks, private_metadata=str(state.session_id), submit="Next")


def folder_picker(state: SetupState) -> Block:
    """A multi-select of the cached folders: static up to 100, a searchable external select above that."""
    values = folder_values(state)
    chosen = [option(name, values[name]) for name in state.draft.folders if name in values]
    element: dict[str, Any] = {"action_id": ids.A_FOLDERS, "placeholder": plain("Choose folders")}
    if len(state.folders) <= MAX_STATIC_FOLDERS:
        element["type"] = "multi_static_select"
        element["options"] = [option(name, values[name]) for name, _ in state.folders]
    else:
        element["type"] = "multi_external_select"
        element["action_id"] = ids.A_FOLDERS_SEARCH
        element["min_query_length"] = 0
    if chosen:
        element["initial_options"] = chosen
    return {"type": "input", "block_id": ids.B_FOLDERS, "label": plain("Folders to sync"), "element": element}


def folder_values(state: SetupState) -> dict[str, str]:
    """Option values for folder names: the position in the cached list (a name can pass Slack's 150 chars)."""
    return {name: f"f{i}" for i, (name, _) in enumerate(state.folders)}


def folder_options(state: SetupState, query: str, limit: int = 100) -> list[dict[str, Any]]:
    """Options for the external folder select, filtered by what the person typed."""
    values = folder_values(state)
    q = query.strip().lower()
    return [option(name, values[name]) for name, _ in state.folders if q in name.lower()][:limit]


def names_from_values(state: SetupState, values: list[str]) -> list[str]:
    """Folder names for submitted option values (unknown values are dropped)."""
    by_value = {v: name for name, v in folder_values(state).items()}
    return [by_value[v] for v in values if v in by_value]


def start_view(state: SetupState, preview: WindowPreview | None = None, *, counting: bool = False) -> dict[str, Any]:
    """Step 4: how far back to start, the contact scope for past mail, and a preview of the window."""
    d = state.draft
    starts = [option(label, value) for value, label in START_LABELS.items()]
    blocks: list[Block] = [
        step_counter("start"),
        {
            "type": "input",
            "block_id": ids.B_START,
            "dispatch_action": True,
            "label": plain("Sync starting from"),
            "hint": plain("Now syncs only mail that arrives from now on; earlier starts also bring in past mail."),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_START,
                "options": starts,
                "initial_option": next(s for s in starts if s["value"] == d.start),
            },
        },
    ]
    if d.start != "now":
        scopes = [
            option("All people", "all"),
            option("CRM contacts only", "contacts", "Only past mail with someone in your team's contacts"),
        ]
        blocks.append(
            {
                "type": "input",
                "block_id": ids.B_SCOPE,
                "dispatch_action": True,
                "label": plain("Past emails sent and received from"),
                "hint": plain("Applies to past mail only; new mail always follows your folder choice."),
                "element": {
                    "type": "radio_buttons",
                    "action_id": ids.A_SCOPE,
                    "options": scopes,
                    "initial_option": next(s for s in scopes if s["value"] == d.contact_scope),
                },
            }
        )
        blocks.append(
            {
                "type": "section",
                "block_id": ids.B_PREVIEW,
                "text": plain(preview_text(d.contact_scope, preview, counting)),
            }
        )
    blocks.append(back_button("folders"))
    return modal(ids.SETUP_VIEW, TITLE, blocks, private_metadata=str(state.session_id), submit="Sync")


def preview_text(scope: str, preview: WindowPreview | None, counting: bool) -> str:
    """The preview line under the start choice."""
    if counting or preview is None:
        return "Counting the messages in this window…"
    more = "at least " if preview.capped else ""
    text = f"This window holds {preview.total:,} messages in the chosen folders."
    if scope == "contacts" and preview.with_contacts is not None:
        text += f" {more}{preview.with_contacts:,} of them involve a CRM contact and will be synced."
    return text


def back_button(to_step: str) -> Block:
    """The Back button of a step (its value is the step it goes back to)."""
    return {"type": "actions", "block_id": ids.B_NAV, "elements": [button("Back", ids.A_BACK, to_step)]}


def view_for(state: SetupState, link: str | None = None, preview: WindowPreview | None = None) -> dict[str, Any]:
    """The view of the setup's current step."""
    if state.step == "connect":
        return connect_view(state, link or "")
    if state.step == "tracking":
        return tracking_view(state)
    if state.step == "folders":
        return folders_view(state)
    return start_view(state, preview, counting=preview is None)


def notice_view(title: str, text: str) -> dict[str, Any]:
    """A modal that only says something (refusals, gone setups)."""
    return modal(ids.SETUP_VIEW, title, [section(text)], close="Close")


def continue_setup_message(session_id: int, reason: str) -> dict[str, Any]:
    """A direct message with a button that reopens the setup where it stopped."""
    return {
        "text": f"{reason} Continue your email sync setup here.",
        "blocks": [
            section(escape(reason)),
            {
                "type": "actions",
                "elements": [button("Continue setup", ids.A_CONTINUE_SETUP, str(session_id), style="primary")],
            },
        ],
    }


def reconnected_message(email: str) -> dict[str, Any]:
    """Told once after a reconnect: the mailbox syncs again, nothing else changed (no "syncing again" follows)."""
    text = (
        f"{email} is reconnected with every setting kept. It syncs again now: mail that arrived meanwhile comes "
        "in with the next sync, and I'll tell you here if it stops again."
    )
    return {"text": text, "blocks": [section(escape(text))]}


def sync_started_message(email: str, start: str) -> dict[str, Any]:
    """Told after "Sync": the first sync runs, and where its progress shows."""
    past = "" if start == "now" else f" and your past mail from {START_LABELS[start].lower()}"
    text = (
        f"Email sync is set up for {email}. The first sync starts now: new mail{past} comes in, and I'll post "
        "its progress right here in this conversation. You can change any choice from my App Home tab."
    )
    return {"text": text, "blocks": [section(escape(text))]}
