"""Direct messages about syncs: progress (edited in place), done, errors with their fix, recovered."""

from __future__ import annotations

from typing import Any

from bot import ids
from bot.views.blocks import button, context, escape, section
from models.states import RunKind
from sync.notifier import RunReport

BAR_CELLS = 20
KIND_WORDS: dict[str, str] = {RunKind.PAST: "past sync", RunKind.WIDEN: "extra past sync", RunKind.INCREMENTAL: "sync"}


def bar(done: int, total: int) -> str:
    """A text progress bar like ▓▓▓▓░░░░ 40%."""
    share = 1.0 if total <= 0 else min(1.0, done / total)
    filled = round(share * BAR_CELLS)
    return "▓" * filled + "░" * (BAR_CELLS - filled) + f" {share:.0%}"


def duration(seconds: float) -> str:
    """3 s, 2 min 5 s, 1 h 4 min."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def progress_message(report: RunReport) -> dict[str, Any]:
    """The progress message of a run (posted at start, then edited)."""
    what = KIND_WORDS.get(report.kind, "sync")
    eta = ""
    if 0 < report.processed < report.total:
        left = report.elapsed_seconds / report.processed * (report.total - report.processed)
        eta = f" · about {duration(left)} left"
    head = f"Syncing *{escape(report.email)}* ({what})"
    counts = f"{report.processed:,} of {report.total:,} emails checked · {report.stored:,} stored{eta}"
    text = f"{head}\n`{bar(report.processed, report.total)}`\n{counts}"
    return {"text": f"Syncing {report.email}: {report.processed:,} of {report.total:,}", "blocks": [section(text)]}


def done_message(report: RunReport) -> dict[str, Any]:
    """The summary when a run finished."""
    what = KIND_WORDS.get(report.kind, "sync").capitalize()
    text = (
        f"{what} of *{escape(report.email)}* is done in {duration(report.elapsed_seconds)}: "
        f"{report.stored:,} emails stored, {report.skipped:,} skipped by your choices, "
        f"{report.contacts_matched:,} contacts matched."
    )
    if report.failed_messages:
        text += f" {report.failed_messages:,} emails could not be read fully and were kept with what could be read."
    return {"text": text.replace("*", ""), "blocks": [section(text)]}


def error_message(account_id: int, email: str, code: str, message: str, fix: str) -> dict[str, Any]:
    """An error with its cause and fix; a Reconnect button when the credentials are at fault."""
    text = f":warning: Sync of *{escape(email)}* stopped: {escape(message)}"
    blocks: list[dict[str, Any]] = [section(text)]
    if fix:
        blocks.append(context(escape(fix)))
    if code == "auth_failed":
        blocks.append(
            {
                "type": "actions",
                "elements": [button("Reconnect", ids.A_HOME_RECONNECT, str(account_id), style="primary")],
            }
        )
    else:
        blocks.append(context("I keep retrying by myself and tell you when it works again."))
    return {"text": f"Sync of {email} stopped: {message} {fix}".strip(), "blocks": blocks}


def recovered_message(email: str) -> dict[str, Any]:
    """The account that was failing syncs again."""
    text = f":white_check_mark: *{escape(email)}* is syncing again."
    return {"text": f"{email} is syncing again.", "blocks": [section(text)]}
