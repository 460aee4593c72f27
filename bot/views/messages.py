"""Texts for the slash command: help and status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.views.blocks import escape, section
from flows.lifecycle import AccountSummary
from models.states import AccountState

STATE_LABELS = {
    AccountState.CONNECTING: "setting up",
    AccountState.ACTIVE: "active",
    AccountState.SYNCING: "syncing",
    AccountState.PAUSED: "paused",
    AccountState.NEEDS_REAUTH: "needs you to reconnect",
    AccountState.ERROR: "retrying after an error",
    AccountState.DISCONNECTED: "disconnected",
}

HELP = (
    "*/emailsync* connects your mailbox so your team's CRM sees your email.\n"
    "• `/emailsync setup`: connect a mailbox and choose what to sync\n"
    "• `/emailsync status`: your mailboxes and how their sync is doing\n"
    "• `/emailsync sync`, `pause`, `resume`: sync your mailboxes now, pause or resume them\n"
    "• `/emailsync find ADDRESS, NAME or DOMAIN`: the latest email threads with someone (only you see the answer)\n"
    "• `/emailsync send [ADDRESS]`: write an email and send it from your mailbox, with open and click tracking\n"
    "• `/emailsync tracking off` or `on`: tracking for the whole workspace (admins only)\n"
    "• `/emailsync contact add ADDRESS [NAME]`: add a CRM contact for your team\n"
    "• `/emailsync help`: this help"
)


def help_message() -> dict[str, Any]:
    """The help, as an ephemeral response."""
    return {"response_type": "ephemeral", "text": HELP, "blocks": [section(HELP)]}


def account_line(account: AccountSummary) -> str:
    """One account in a status list."""
    state = STATE_LABELS.get(account.state, account.state)
    last = f", last synced {account.last_synced_at:%Y-%m-%d %H:%M} UTC" if account.last_synced_at else ""
    error = f"\n   _{escape(account.last_error)}_" if account.last_error else ""
    return f"• *{escape(account.email)}*: {state}, {account.messages:,} emails{last}{error}"


def status_message(accounts: Sequence[AccountSummary]) -> dict[str, Any]:
    """The person's accounts, as an ephemeral response."""
    if not accounts:
        text = "You have no mailbox connected yet. Type `/emailsync setup` to connect one."
    else:
        text = "*Your email sync*\n" + "\n".join(account_line(a) for a in accounts)
    return {"response_type": "ephemeral", "text": text, "blocks": [section(text)]}
