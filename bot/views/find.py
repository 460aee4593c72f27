"""Find's answers: a page of threads (an ephemeral message or a modal) and one thread in a modal."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from bot import ids
from bot.views.blocks import Block, button, clip, context, escape, modal, plain, section
from flows.find import FindResult, Mailbox, Person, ThreadMessage, ThreadSummary, ThreadView

SNIPPET_CHARS = 180
BODY_SECTION_CHARS = 2900  # a section's text holds 3,000
BODY_SECTIONS = 2  # per email; longer bodies are cut (the thread modal has 100 blocks for up to 15 emails)
MAX_PEOPLE = 3
MAX_OTHER_ADDRESSES = 5
DIRECTION = {"sent": "↗ sent", "received": "↙ received"}


def page_value(query: str, offset: int) -> str:
    """A paging button's value: the query and where the page starts (rerun as the clicker sees it)."""
    return json.dumps({"q": query, "o": offset}, ensure_ascii=False, separators=(",", ":"))


def parse_page_value(value: str) -> tuple[str, int]:
    """The query and offset of a paging button (ValueError when it is not one)."""
    data = json.loads(value)
    if not isinstance(data, dict) or not isinstance(data.get("q"), str) or not isinstance(data.get("o"), int):
        raise ValueError("not a page value")
    return data["q"], max(0, data["o"])


def slack_date(at: dt.datetime | None) -> str:
    """A date Slack shows in the reader's own time zone, with a UTC fallback."""
    if at is None:
        return "no date"
    fallback = f"{at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(at.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def counts_line(result: FindResult, today: dt.date | None = None) -> str:
    """23 emails in 6 threads since March."""
    if result.emails == 0:
        return "No emails you can see"
    emails = f"{result.emails:,} email{'s' if result.emails != 1 else ''}"
    threads = f"{result.threads:,} thread{'s' if result.threads != 1 else ''}"
    since = ""
    if result.first_at is not None:
        today = today or dt.date.today()
        first = result.first_at.date()
        since = f" since {first:%B}" if first.year == today.year else f" since {first:%B %Y}"
    return f"{emails} in {threads}{since}"


def _subject_of_query(result: FindResult) -> str:
    value = escape(result.match.value)
    if result.match.kind == "name":
        return f"people named “{value}”"
    if result.match.kind == "domain":
        return f"anyone at {value}"
    return value


def results_blocks(result: FindResult, *, today: dt.date | None = None, others: list[str] | None = None) -> list[Block]:
    """The counts, one page of threads with a View button each, and paging."""
    blocks: list[Block] = [section(f"*{counts_line(result, today)}* with {_subject_of_query(result)}")]
    if not result.page:
        hint = (
            "Nothing synced that you may see involves them: your own mail, and your teammates' mail they share."
            if result.offset == 0
            else "No more threads."
        )
        blocks.append(context(hint))
    for thread in result.page:
        blocks += thread_blocks(thread)
    first, last = result.offset + 1, result.offset + len(result.page)
    nav = []
    if result.offset > 0:
        nav.append(
            button(
                "← Newer",
                f"{ids.A_FIND_PAGE}_newer",
                page_value(result.query, max(0, result.offset - result.page_size)),
            )
        )
    if result.has_more:
        older = page_value(result.query, result.offset + result.page_size)
        nav.append(button("Older →", f"{ids.A_FIND_PAGE}_older", older))
    if result.page and result.threads > len(result.page):
        blocks.append(context(f"Threads {first} to {last} of {result.threads:,}, newest first"))
    if nav:
        blocks.append({"type": "actions", "block_id": "find_pages", "elements": nav})
    if others:
        buttons = [
            button(clip(f"Emails with {o}", 75), f"{ids.A_FIND_OTHER}_{i}", o)
            for i, o in enumerate(others[:MAX_OTHER_ADDRESSES])
        ]
        blocks.append(context("The message mentions other addresses too:"))
        blocks.append({"type": "actions", "block_id": "find_others", "elements": buttons})
    return blocks


def thread_blocks(thread: ThreadSummary) -> list[Block]:
    """One thread of a result page: subject, direction, count, date, people, snippet and mailbox."""
    subject = escape(clip(thread.subject or "(no subject)", 150))
    count = f"{thread.emails} email{'s' if thread.emails != 1 else ''}"
    lines = [
        f"*{subject}*",
        f"{DIRECTION.get(thread.direction, thread.direction)} · {count} · {slack_date(thread.last_at)}",
    ]
    if thread.people:
        lines.append("with " + people_text(thread.people))
    head = section("\n".join(lines), accessory=button("View", ids.A_FIND_OPEN, str(thread.open_id)))
    details = []
    if thread.snippet:
        details.append(f"“{escape(clip(thread.snippet, SNIPPET_CHARS))}”")
    details.append(mailboxes_text(thread.mailboxes))
    return [head, context(" · ".join(details))]


def people_text(people: list[Person]) -> str:
    """Jane Doe <jane@acme.com>, bob@x.com, +2."""
    shown = [_person(p) for p in people[:MAX_PEOPLE]]
    more = len(people) - MAX_PEOPLE
    return ", ".join(shown) + (f", +{more}" if more > 0 else "")


def _person(p: Person) -> str:
    return escape(f"{clip(p.name, 60)} <{p.email}>") if p.name else escape(p.email)


def mailboxes_text(boxes: list[Mailbox]) -> str:
    """Where a thread came from: your mailbox, or a teammate's shared one."""
    parts = [
        f"your mailbox {escape(b.email)}" if b.own else f"shared by <@{b.user_id}> ({escape(b.email)})" for b in boxes
    ]
    return "from " + ", ".join(parts) if parts else "from a removed mailbox"


def results_message(result: FindResult, *, today: dt.date | None = None, replace: bool = False) -> dict[str, Any]:
    """The results as an ephemeral message (slash command), or its replacement (paging)."""
    text = f"{counts_line(result, today)} with {result.match.value}"
    message: dict[str, Any] = {
        "response_type": "ephemeral",
        "text": text,
        "blocks": results_blocks(result, today=today),
    }
    if replace:
        message["replace_original"] = True
    return message


def results_modal(
    result: FindResult, *, today: dt.date | None = None, others: list[str] | None = None
) -> dict[str, Any]:
    """The results as a modal (the message shortcut)."""
    blocks = results_blocks(result, today=today, others=others)
    return modal(ids.FIND_VIEW, "Emails with this person", blocks, close="Close")


def loading_modal() -> dict[str, Any]:
    """Opened at once (a trigger lives 3 s); updated with the results."""
    return modal(ids.FIND_VIEW, "Emails with this person", [section("Looking through the synced mail…")], close="Close")


def notice_modal(text: str, title: str = "Emails") -> dict[str, Any]:
    """A modal that only says something."""
    return modal(ids.FIND_VIEW, title, [section(text)], close="Close")


def find_error_message(text: str) -> dict[str, Any]:
    """A query that cannot be searched, as an ephemeral answer."""
    return {"response_type": "ephemeral", "text": text, "blocks": [section(text)]}


def thread_modal(thread: ThreadView, notice: str | None = None) -> dict[str, Any]:
    """One thread: its latest emails as plain text with quoted parts folded, and the owner's visibility buttons."""
    blocks: list[Block] = [{"type": "header", "text": plain(thread.subject or "(no subject)", 150)}]
    if notice:
        blocks.append(context(notice))
    if thread.total > len(thread.messages):
        blocks.append(context(f"{thread.total} emails; the latest {len(thread.messages)} are shown."))
    for message in thread.messages:
        blocks += _message_blocks(message)
    folded = any(m.quoted_lines for m in thread.messages)
    state = json.dumps({"m": thread.anchor_id, "u": not thread.unfolded}, separators=(",", ":"))
    controls = []
    if folded:
        controls.append(
            button("Hide quoted text" if thread.unfolded else "Show quoted text", ids.A_THREAD_QUOTES, state)
        )
    if thread.messages:
        # Reply to the latest email shown; the handler reloads it as the clicker sees it.
        controls.insert(0, button("Reply", ids.A_REPLY, str(thread.messages[-1].id)))
    blocks.append({"type": "divider"})
    if thread.own_visibility is not None and thread.own_id is not None:
        blocks.append(section(_visibility_text(thread.own_visibility)))
        if thread.own_visibility != "shared":
            share = button("Share with the team", f"{ids.A_THREAD_VISIBILITY}_shared", f"shared:{thread.own_id}")
            controls.append(share)
        if thread.own_visibility != "private":
            private = button("Make private", f"{ids.A_THREAD_VISIBILITY}_private", f"private:{thread.own_id}")
            controls.append(private)
    else:
        blocks.append(context("A teammate shares this thread with the team; only they can change that."))
    if controls:
        blocks.append({"type": "actions", "block_id": "thread_controls", "elements": controls})
    metadata = json.dumps({"m": thread.anchor_id, "u": thread.unfolded}, separators=(",", ":"))
    return modal(ids.THREAD_VIEW, "Email thread", blocks, private_metadata=metadata, close="Close")


def _visibility_text(visibility: str) -> str:
    if visibility == "shared":
        return "Your team sees your copies of this thread. Emails synced later follow your mailbox's setting."
    if visibility == "private":
        return "Only you see your copies of this thread. Emails synced later follow your mailbox's setting."
    return "Part of your copies of this thread is shared with the team, part is private."


def _message_blocks(m: ThreadMessage) -> list[Block]:
    sender = _person(m.sender) if m.sender else "unknown sender"
    to = f" → {people_text(m.recipients)}" if m.recipients else ""
    where = ""
    if m.mailbox is not None:
        where = " · your mailbox" if m.mailbox.own else f" · shared by <@{m.mailbox.user_id}>"
    private = " · private" if m.visibility == "private" and m.mailbox is not None and m.mailbox.own else ""
    head = f"*{sender}*{to}\n{slack_date(m.at)} · {DIRECTION.get(m.direction, m.direction)}{where}{private}"
    blocks: list[Block] = [{"type": "divider"}, section(clip(head, 3000))]
    text = m.text.strip()
    if not text:
        blocks.append(context("(no text)"))
        return blocks
    chunks = [text[i : i + BODY_SECTION_CHARS] for i in range(0, len(text), BODY_SECTION_CHARS)]
    for chunk in chunks[:BODY_SECTIONS]:
        blocks.append({"type": "section", "text": {"type": "plain_text", "text": chunk, "emoji": False}})
    if len(chunks) > BODY_SECTIONS:
        rest = len(text) - BODY_SECTION_CHARS * BODY_SECTIONS
        blocks.append(context(f"… {rest:,} more characters not shown."))
    return blocks
