"""The App Home tab (a card per account, the general settings) and the modals its buttons open."""

from __future__ import annotations

from typing import Any

from bot import ids
from bot.views.blocks import Block, button, context, escape, modal, option, plain, section
from bot.views.contacts import contacts_section, digest_day_options, digest_hour_options
from bot.views.messages import STATE_LABELS
from bot.views.notifications import bar
from bot.views.setup import MAX_STATIC_FOLDERS, START_LABELS
from flows.lifecycle import AccountSummary
from flows.people import schedule_text
from models.states import AccountState
from models.tables import UserSettings
from sync.oauth import DISPLAY_NAMES

STATE_ICONS = {
    AccountState.ACTIVE: "🟢",
    AccountState.SYNCING: "🔄",
    AccountState.PAUSED: "⏸️",
    AccountState.NEEDS_REAUTH: "🔑",
    AccountState.ERROR: "⚠️",
    AccountState.CONNECTING: "🛠️",
    AccountState.DISCONNECTED: "⚪",
}
PAUSE_REASONS = {
    "uninstalled": " (the app was removed from the workspace)",
    "user_deactivated": " (account deactivated)",
}
LEVEL_LABELS = {"everything": "Everything", "errors": "Errors only", "nothing": "Nothing"}
VISIBILITY_RULE = (
    "A change applies to mail synced from then on; mail already synced keeps its visibility "
    "(open a thread from `/emailsync find` to change one)."
)
MAX_CARDS = 12  # each card is a few blocks; Home allows 100


def home_view(
    accounts: list[AccountSummary],
    prefs: UserSettings,
    blocked: list[str],
    contacts: int | None = None,
    sent: list[Block] | None = None,
) -> dict[str, Any]:
    """The whole Home tab for one person (with the team's contacts when their count is given)."""
    blocks: list[Block] = [{"type": "header", "text": plain("Email sync", 150)}]
    if not accounts:
        blocks.append(
            section(
                "Connect your mailbox to sync your email with your team's CRM: you choose the folders, "
                "how far back to go, and whether past mail comes from everyone or only from contacts."
            )
        )
        blocks.append({"type": "actions", "elements": [button("Set up email sync", ids.A_HOME_SETUP, style="primary")]})
    for account in accounts[:MAX_CARDS]:
        blocks += account_card(account)
    if accounts:
        blocks.append({"type": "actions", "elements": [button("Connect another mailbox", ids.A_HOME_SETUP)]})
    if contacts is not None:
        blocks += contacts_section(contacts)
    blocks += sent or []
    blocks += general_section(prefs, blocked)
    return {"type": "home", "blocks": blocks}


def account_card(a: AccountSummary) -> list[Block]:
    """One account: address, state, last sync, counts, progress, and its buttons."""
    state = STATE_LABELS.get(a.state, a.state) + (
        PAUSE_REASONS.get(a.paused_reason or "", "") if a.state == AccountState.PAUSED else ""
    )
    lines = [f"{STATE_ICONS.get(a.state, '')} *{escape(a.email)}* · {state}"]
    if a.run_total:
        lines.append(f"`{bar(a.run_processed or 0, a.run_total)}` {a.run_processed or 0:,} of {a.run_total:,}")
    details = [f"{a.messages:,} emails"]
    if a.auth_kind == "oauth" and a.oauth_provider:
        details.insert(0, f"Signed in with {DISPLAY_NAMES.get(a.oauth_provider, a.oauth_provider)}")
    details.append(f"last synced {a.last_synced_at:%Y-%m-%d %H:%M} UTC" if a.last_synced_at else "not synced yet")
    details.append("all folders" if a.sync_mode == "all" else f"{sum(1 for f in a.folders if f[2])} folders")
    details.append(f"from {a.start_date:%d %b %Y}" if a.start_date else "new mail only")
    if a.start_date and a.contact_scope == "contacts":
        details.append("past mail from CRM contacts only")
    details.append("new mail shared with the team" if a.visibility == "shared" else "new mail private")
    blocks: list[Block] = [{"type": "divider"}, section("\n".join(lines)), context(" · ".join(details))]
    if a.last_error and a.state in (AccountState.ERROR, AccountState.NEEDS_REAUTH):
        blocks.append(context(f"⚠️ {escape(a.last_error)}"))
    value = str(a.id)
    buttons = []
    if a.state not in (AccountState.DISCONNECTED, AccountState.CONNECTING):
        if a.state == AccountState.PAUSED:
            buttons.append(button("Resume", ids.A_HOME_RESUME, value, style="primary"))
        else:
            buttons.append(button("Sync now", ids.A_HOME_SYNC, value))
            buttons.append(button("Pause", ids.A_HOME_PAUSE, value))
        buttons.append(button("Edit settings", ids.A_HOME_EDIT, value))
        buttons.append(button("Sync past emails", ids.A_HOME_WIDEN, value))
    buttons.append(
        button(
            "Reconnect", ids.A_HOME_RECONNECT, value, style="primary" if a.state == AccountState.NEEDS_REAUTH else None
        )
    )
    buttons.append(button("Disconnect", ids.A_HOME_DISCONNECT, value, style="danger"))
    blocks.append({"type": "actions", "block_id": f"account_{a.id}", "elements": buttons})
    return blocks


def general_section(prefs: UserSettings, blocked: list[str]) -> list[Block]:
    """The person's general settings, with buttons to edit them or delete everything."""
    tracking = [name for flag, name in ((prefs.track_opens, "opens"), (prefs.track_links, "link clicks")) if flag]
    digest = schedule_text(prefs)
    if prefs.digest_day is not None and prefs.notification_level == "nothing":
        digest += ", but not sent while direct messages are set to Nothing"
    lines = [
        f"Default visibility: *{'shared with the team' if prefs.default_visibility == 'shared' else 'private'}* "
        f"for mailboxes you connect. {VISIBILITY_RULE}",
        f"Tracking by default: *{', '.join(tracking) or 'off'}*",
        f"Notifications: *{LEVEL_LABELS.get(prefs.notification_level, prefs.notification_level)}*",
        f"Never synced: *{escape(', '.join(blocked)) if blocked else 'nobody'}*",
        f"People who are not contacts yet (a weekly direct message): *{escape(digest)}*",
    ]
    confirm = {
        "title": plain("Delete all your data?", 100),
        "text": plain(
            "This removes your mailboxes, their passwords and every synced email of yours. It cannot be undone."
        ),
        "confirm": plain("Delete everything"),
        "deny": plain("Keep"),
        "style": "danger",
    }
    delete = button("Delete my data", ids.A_HOME_DELETE_DATA, style="danger")
    delete["confirm"] = confirm
    return [
        {"type": "divider"},
        section("*Your general settings*\n" + "\n".join(lines)),
        {"type": "actions", "elements": [button("Edit general settings", ids.A_HOME_GENERAL), delete]},
    ]


def edit_view(a: AccountSummary) -> dict[str, Any]:
    """Edit what is synced and who sees it, prefilled."""
    modes = [
        option("Sync all emails", "all", "Every folder except Trash, Junk and Drafts"),
        option("Sync only emails in specific labels", "labels"),
    ]
    folder_options = [option(name, f"f{i}") for i, (name, _role, _sel) in enumerate(a.folders)][:MAX_STATIC_FOLDERS]
    chosen = [o for o, (_n, _r, sel) in zip(folder_options, a.folders, strict=False) if sel]
    folders: dict[str, Any] = {"type": "multi_static_select", "action_id": ids.A_FOLDERS, "options": folder_options}
    if chosen and a.sync_mode == "labels":
        folders["initial_options"] = chosen
    vis = [option("Private", "private", "Only you see these emails"), option("Shared", "shared", "Your team sees them")]
    blocks: list[Block] = [
        context(f"Settings of *{escape(a.email)}*"),
        {
            "type": "input",
            "block_id": ids.B_SYNC_MODE,
            "label": plain("What to sync"),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_SYNC_MODE,
                "options": modes,
                "initial_option": next(m for m in modes if m["value"] == a.sync_mode),
            },
        },
        {
            "type": "input",
            "block_id": ids.B_FOLDERS,
            "optional": True,
            "label": plain("Folders (for specific labels)"),
            "element": folders,
        },
        {
            "type": "input",
            "block_id": ids.B_VISIBILITY,
            "label": plain("Who can see these emails"),
            "hint": plain(VISIBILITY_RULE.replace("`", "")),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_VISIBILITY,
                "options": vis,
                "initial_option": next(v for v in vis if v["value"] == a.visibility),
            },
        },
    ]
    if len(a.folders) > MAX_STATIC_FOLDERS:
        blocks.insert(3, context(f"The first {MAX_STATIC_FOLDERS} of {len(a.folders)} folders are listed."))
    return modal(ids.EDIT_VIEW, "Edit email sync", blocks, private_metadata=str(a.id), submit="Save")


def folder_names(a: AccountSummary, values: list[str]) -> list[str]:
    """Folder names for option values of edit_view."""
    names = [name for name, _r, _s in a.folders]
    return [names[int(v[1:])] for v in values if v.startswith("f") and v[1:].isdigit() and int(v[1:]) < len(names)]


def widen_view(a: AccountSummary) -> dict[str, Any]:
    """Sync past emails: an earlier start, with its own contact-scope question."""
    starts = [option(label, value) for value, label in START_LABELS.items() if value != "now"]
    scopes = [
        option("All people", "all"),
        option("CRM contacts only", "contacts", "Only past mail with someone in your team's contacts"),
    ]
    now = f"You sync from {a.start_date:%d %b %Y}." if a.start_date else "You sync new mail only."
    blocks: list[Block] = [
        section(f"*{escape(a.email)}*: {now} Choose an earlier start: I sync the extra weeks and keep what is there."),
        {
            "type": "input",
            "block_id": ids.B_START,
            "label": plain("Sync starting from"),
            "element": {"type": "radio_buttons", "action_id": ids.A_START, "options": starts},
        },
        {
            "type": "input",
            "block_id": ids.B_SCOPE,
            "label": plain("Past emails sent and received from"),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_SCOPE,
                "options": scopes,
                "initial_option": scopes[1] if a.contact_scope == "contacts" else scopes[0],
            },
        },
    ]
    return modal(ids.WIDEN_VIEW, "Sync past emails", blocks, private_metadata=str(a.id), submit="Sync")


def disconnect_view(a: AccountSummary) -> dict[str, Any]:
    """Disconnect, keeping or deleting the synced mail."""
    choices = [
        option("Keep the synced emails", "keep", "They stay visible in the CRM"),
        option("Delete the synced emails", "delete", "Removed for good"),
    ]
    secret = "sign-in" if a.auth_kind == "oauth" else "password"
    blocks: list[Block] = [
        section(f"Stop syncing *{escape(a.email)}* and forget its {secret}?"),
        {
            "type": "input",
            "block_id": ids.B_KEEP_MAIL,
            "label": plain("The emails synced so far"),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_KEEP_MAIL,
                "options": choices,
                "initial_option": choices[0],
            },
        },
    ]
    return modal(ids.DISCONNECT_VIEW, "Disconnect", blocks, private_metadata=str(a.id), submit="Disconnect")


def general_view(prefs: UserSettings, blocked: list[str]) -> dict[str, Any]:
    """Edit the general settings, prefilled."""
    vis = [option("Private", "private"), option("Shared with the team", "shared")]
    tracking = [
        option("Track opens", "track_opens"),
        option("Track link clicks", "track_links"),
        option("Notify me of tracking activity", "notify_tracking"),
    ]
    on = [t for t in tracking if getattr(prefs, t["value"])]
    levels = [option(label, value) for value, label in LEVEL_LABELS.items()]
    checkboxes: dict[str, Any] = {"type": "checkboxes", "action_id": ids.A_TRACKING, "options": tracking}
    if on:
        checkboxes["initial_options"] = on
    blocked_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": ids.A_BLOCKED,
        "multiline": True,
        "placeholder": plain("one per line: name@example.com or example.com"),
    }
    if blocked:
        blocked_input["initial_value"] = "\n".join(blocked)[:3000]
    blocks: list[Block] = [
        {
            "type": "input",
            "block_id": ids.B_VISIBILITY,
            "label": plain("Default visibility of synced emails"),
            "hint": plain("For mailboxes you connect from now on; each mailbox has its own (Edit settings)."),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_VISIBILITY,
                "options": vis,
                "initial_option": next(v for v in vis if v["value"] == prefs.default_visibility),
            },
        },
        {
            "type": "input",
            "block_id": ids.B_TRACKING,
            "optional": True,
            "label": plain("Tracking defaults"),
            "element": checkboxes,
        },
        {
            "type": "input",
            "block_id": ids.B_NOTIFY_LEVEL,
            "label": plain("Direct messages from me"),
            "element": {
                "type": "radio_buttons",
                "action_id": ids.A_NOTIFY_LEVEL,
                "options": levels,
                "initial_option": next(lv for lv in levels if lv["value"] == prefs.notification_level),
            },
        },
        {
            "type": "input",
            "block_id": ids.B_BLOCKED,
            "optional": True,
            "label": plain("Never sync mail with"),
            "element": blocked_input,
        },
        *digest_inputs(prefs),
    ]
    return modal(ids.GENERAL_VIEW, "General settings", blocks, submit="Save")


def digest_inputs(prefs: UserSettings) -> list[Block]:
    """The weekly "people who are not contacts yet" DM: day (or off) and hour, prefilled."""
    days = digest_day_options()
    hours = digest_hour_options()
    day = "off" if prefs.digest_day is None else str(prefs.digest_day)
    return [
        {
            "type": "input",
            "block_id": ids.B_DIGEST_DAY,
            "label": plain("People who are not contacts yet: a weekly direct message on"),
            "hint": plain("The people you emailed most that week who are not your team's contacts, in your time zone."),
            "element": {
                "type": "static_select",
                "action_id": ids.A_DIGEST_DAY,
                "options": days,
                "initial_option": next(o for o in days if o["value"] == day),
            },
        },
        {
            "type": "input",
            "block_id": ids.B_DIGEST_HOUR,
            "label": plain("At"),
            "element": {
                "type": "static_select",
                "action_id": ids.A_DIGEST_HOUR,
                "options": hours,
                "initial_option": hours[prefs.digest_hour if 0 <= prefs.digest_hour <= 23 else 9],
            },
        },
    ]


def reconnect_view(email: str, link: str) -> dict[str, Any]:
    """Reconnect: a fresh connect link; every setting is kept."""
    blocks: list[Block] = [
        section(f"Sign in to *{escape(email)}* again on our secure page. Every setting stays as it is."),
        {
            "type": "actions",
            "elements": [button("Open the secure connect page", ids.A_CONNECT_LINK, url=link, style="primary")],
        },
        context("The link works for 15 minutes and only for you."),
    ]
    return modal("reconnect", "Reconnect", blocks, close="Close")
