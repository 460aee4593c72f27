"""Finding a contact's emails for one person, without Slack: the query, result pages, a thread, its visibility."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import Engine

from flows.contacts import normalise_email
from models import find as queries
from models.db import session_scope
from models.find import Match, StoredMessage, Viewer
from sync.parse import strip_html

PAGE_SIZE = 5
MAX_QUERY_CHARS = 200  # a query travels in button values (2,000 chars) with the page offset
MAX_THREAD_MESSAGES = 15  # a thread modal shows the latest ones (Slack: 100 blocks per view)
_DOMAIN = re.compile(r"^(?=.{3,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$")
# Lines that start the quoted part of a reply: "On <date>, <name> wrote:", Outlook's separator, forwards.
_ATTRIBUTION = re.compile(
    r"^(on\b.{0,300}\bwrote:|le\b.{0,300}\ba écrit ?:|am\b.{0,300}\bschrieb\b.{0,200}:"
    r"|-{2,} ?original message ?-{2,}|-{2,} ?forwarded message ?-{2,}|_{10,})$",
    re.IGNORECASE,
)


_SCRIPTS = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BLOCK_ENDS = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h[1-6]|/blockquote)\b[^>]*>", re.IGNORECASE)


class FindError(Exception):
    """The query cannot be searched (the message says why and what to type)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotVisible(Exception):
    """The message an id points at is gone, or not this person's to see."""


class NotOwner(Exception):
    """Only the owner of the mailbox may change who sees its mail."""


@dataclass(frozen=True)
class Person:
    """An address in a thread, with the name its headers give."""

    email: str
    name: str | None


@dataclass(frozen=True)
class Mailbox:
    """A mailbox a thread came from."""

    email: str
    user_id: str
    own: bool


@dataclass(frozen=True)
class ThreadSummary:
    """One thread of a result page."""

    open_id: int  # the message a "View" button opens the thread by (the latest; the asker's own copy first)
    subject: str | None
    last_at: dt.datetime | None
    emails: int
    direction: str  # of the latest email: sent | received
    snippet: str | None
    people: list[Person]
    mailboxes: list[Mailbox]


@dataclass(frozen=True)
class FindResult:
    """A page of threads involving the query, with the counts over all of them."""

    query: str
    match: Match
    emails: int
    threads: int
    first_at: dt.datetime | None
    offset: int
    page: list[ThreadSummary]
    page_size: int = PAGE_SIZE

    @property
    def has_more(self) -> bool:
        """Whether threads remain after this page."""
        return self.offset + len(self.page) < self.threads


@dataclass(frozen=True)
class ThreadMessage:
    """One email of an open thread."""

    id: int
    sender: Person | None
    recipients: list[Person]
    at: dt.datetime | None
    direction: str
    mailbox: Mailbox | None
    visibility: str
    text: str  # plain text, quoted parts folded unless unfolded
    quoted_lines: int  # how many lines were folded away


@dataclass(frozen=True)
class ThreadView:
    """An open thread: its latest emails, and what its owner may change."""

    anchor_id: int
    subject: str | None
    messages: list[ThreadMessage]
    total: int
    own_visibility: str | None  # the viewer's own copies: private | shared | mixed; None when they have none
    own_id: int | None  # one of the viewer's own copies: what the owner's visibility buttons act on
    unfolded: bool


def parse_query(text: str) -> Match:
    """An address, a domain or a name from what the person typed."""
    query = " ".join(text.split())
    if not query:
        raise FindError("Tell me whom to look for: `/emailsync find jane@example.com`, a domain, or a name.")
    if len(query) > MAX_QUERY_CHARS:
        raise FindError(f"That is too long to search for (at most {MAX_QUERY_CHARS} characters).")
    lowered = query.lower()
    mailto = re.fullmatch(r"<mailto:([^|>]+)(?:\|[^>]*)?>", lowered)  # an address as Slack formats it
    if mailto:
        lowered = mailto.group(1)
    if lowered.startswith("@") and _DOMAIN.match(lowered[1:].rstrip(".")):
        return Match("domain", lowered[1:].rstrip("."))
    if "@" in lowered:
        address = normalise_email(lowered)
        if address is None:
            raise FindError(f"`{query}` is not an email address.")
        return Match("address", address)
    domain = lowered.rstrip(".")
    if _DOMAIN.match(domain):
        return Match("domain", domain)
    if len(lowered) < 2:
        raise FindError("Type at least two letters of a name.")
    return Match("name", lowered)


def find(db: Engine, *, team_id: str, user_id: str, query: str, offset: int = 0) -> FindResult:
    """One page of the threads involving the query that this person may see, with the totals."""
    match = parse_query(query)
    offset = max(0, offset)
    with session_scope(db, readonly=True) as session:
        who = queries.viewer(session, team_id=team_id, user_id=user_id)
        found = queries.search(session, who, match, offset=offset, limit=PAGE_SIZE)
        by_thread = queries.messages_of_threads(session, who, [t.key for t in found.page])
        rows = [m for t in found.page for m in by_thread.get(t.key, [])]
        addresses = queries.addresses_of(session, [m.id for m in rows])
        boxes = queries.mailboxes(session, sorted({m.account_id for m in rows}))
    summaries = [_summary(who, t, by_thread.get(t.key, []), addresses, boxes, match) for t in found.page]
    return FindResult(
        query=" ".join(query.split()),
        match=match,
        emails=found.emails,
        threads=found.threads,
        first_at=found.first_at,
        offset=offset,
        page=summaries,
        page_size=PAGE_SIZE,
    )


def open_thread(db: Engine, *, team_id: str, user_id: str, message_id: int, unfold: bool = False) -> ThreadView:
    """The thread of a message this person may see; NotVisible otherwise (whatever the id claims)."""
    with session_scope(db, readonly=True) as session:
        who = queries.viewer(session, team_id=team_id, user_id=user_id)
        anchor = queries.visible_message(session, who, message_id)
        if anchor is None:
            raise NotVisible(str(message_id))
        rows = queries.thread_messages(session, who, anchor)
        addresses = queries.addresses_of(session, [m.id for m in rows])
        boxes = queries.mailboxes(session, sorted({m.account_id for m in rows}))
    emails = _one_per_email(rows, who)
    own = {m.visibility for m in rows if m.account_id in who.account_ids}
    shown = emails[-MAX_THREAD_MESSAGES:]
    return ThreadView(
        anchor_id=anchor.id,
        subject=next((m.subject for m in reversed(emails) if m.subject), anchor.subject),
        messages=[_thread_message(m, who, addresses.get(m.id, []), boxes, unfold) for m in shown],
        total=len(emails),
        own_visibility=None if not own else own.pop() if len(own) == 1 else "mixed",
        own_id=next((m.id for m in reversed(rows) if m.account_id in who.account_ids), None),
        unfolded=unfold,
    )


def change_thread_visibility(db: Engine, *, team_id: str, user_id: str, message_id: int, visibility: str) -> int:
    """The owner makes their copies of a thread private or shared; return how many emails changed.

    Only the person whose mailbox holds the message may change it: a teammate who sees it shared, or anyone
    else sending its id, gets NotOwner and nothing changes.
    """
    if visibility not in ("private", "shared"):
        raise ValueError(f"unknown visibility {visibility!r}")
    with session_scope(db) as session:
        owner = queries.message_owner(session, message_id)
        if owner is None:
            raise NotVisible(str(message_id))
        if owner != (team_id, user_id):
            raise NotOwner(str(message_id))
        who = queries.viewer(session, team_id=team_id, user_id=user_id)
        anchor = queries.visible_message(session, who, message_id)
        if anchor is None:  # the owner's own mail, hidden by their own blocked list
            raise NotVisible(str(message_id))
        return queries.set_thread_visibility(session, who, anchor, visibility=visibility)


def fold_quoted(text: str) -> tuple[str, int]:
    """The text with its quoted parts folded: runs of "> " lines become one marker, and everything from an
    attribution line ("On … wrote:", "-----Original Message-----") on is cut; returns (text, lines folded)."""
    lines = text.splitlines()
    out: list[str] = []
    folded = 0
    run = 0
    for i, line in enumerate(lines):
        stripped = line.strip()
        two_lines = f"{stripped} {lines[i + 1].strip()}" if i + 1 < len(lines) else stripped
        if _ATTRIBUTION.match(stripped) or (stripped.lower().startswith("on ") and _ATTRIBUTION.match(two_lines)):
            cut = run + len([x for x in lines[i:] if x.strip()])
            folded += cut
            run = 0
            out.append(_folded_marker(cut))
            break
        if stripped.startswith(">"):
            run += 1
            continue
        if run:
            out.append(_folded_marker(run))
            folded += run
            run = 0
        out.append(line)
    if run:
        out.append(_folded_marker(run))
        folded += run
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out).strip("\n"), folded


def _folded_marker(lines: int) -> str:
    return f"[… {lines} quoted line{'s' if lines != 1 else ''} folded]"


def body_text(message: StoredMessage) -> str:
    """A message's body as plain text (the text part, else the HTML part's text, else its snippet)."""
    if message.text_body:
        return message.text_body.replace("\r\n", "\n")
    if message.html_body:
        return _html_to_text(message.html_body)
    return message.snippet or ""


def _html_to_text(html_body: str) -> str:
    # Line breaks of block elements survive as newlines, so quoted parts can still be told apart.
    body = _SCRIPTS.sub(" ", html_body.replace("\r\n", " ").replace("\n", " "))
    marked = _BLOCK_ENDS.sub("\n", body)
    lines = (" ".join(strip_html(line).split()) for line in marked.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _summary(
    who: Viewer,
    thread: queries.ThreadCount,
    rows: list[StoredMessage],
    addresses: dict[int, list[tuple[str, str, str | None]]],
    boxes: dict[int, tuple[str, str]],
    match: Match,
) -> ThreadSummary:
    emails = _one_per_email(rows, who)
    latest = emails[-1] if emails else None
    owners = {boxes[m.account_id][0] for m in rows if m.account_id in boxes}
    people: dict[str, Person] = {}
    for m in reversed(emails):
        for _role, email, name in addresses.get(m.id, []):
            if email in owners:
                continue
            known = people.get(email)
            if known is None or (known.name is None and name):
                people[email] = Person(email, name)
    ordered = sorted(people.values(), key=lambda p: (not _matches(p, match), p.email))
    seen_boxes: dict[int, Mailbox] = {}
    for m in rows:
        if m.account_id in boxes and m.account_id not in seen_boxes:
            email, owner = boxes[m.account_id]
            seen_boxes[m.account_id] = Mailbox(email, owner, m.account_id in who.account_ids)
    return ThreadSummary(
        open_id=latest.id if latest else 0,
        subject=next((m.subject for m in reversed(emails) if m.subject), None),
        last_at=thread.last_at,
        emails=thread.emails,
        direction=latest.direction if latest else "received",
        snippet=latest.snippet if latest else None,
        people=ordered,
        mailboxes=sorted(seen_boxes.values(), key=lambda b: (not b.own, b.email)),
    )


def _matches(person: Person, match: Match) -> bool:
    if match.kind == "address":
        return person.email == match.value
    if match.kind == "domain":
        return person.email.endswith("@" + match.value) or person.email.endswith("." + match.value)
    return match.value in (person.name or "").lower() or person.email.startswith(match.value)


def _one_per_email(rows: list[StoredMessage], who: Viewer) -> list[StoredMessage]:
    """One row per email (the asker's own copy when they have one), oldest first."""
    chosen: dict[str, StoredMessage] = {}
    for m in rows:
        current = chosen.get(m.key)
        if current is None or (m.account_id in who.account_ids and current.account_id not in who.account_ids):
            chosen[m.key] = m
    order = {m.key: i for i, m in enumerate(rows)}
    return sorted(chosen.values(), key=lambda m: order[m.key])


def _thread_message(
    m: StoredMessage,
    who: Viewer,
    addresses: list[tuple[str, str, str | None]],
    boxes: dict[int, tuple[str, str]],
    unfold: bool,
) -> ThreadMessage:
    sender = next((Person(e, n) for role, e, n in addresses if role == "from"), None)
    recipients = [Person(e, n) for role, e, n in addresses if role in ("to", "cc")]
    text = body_text(m)
    folded_text, folded = fold_quoted(text)
    if not unfold:
        text = folded_text
    box = boxes.get(m.account_id)
    return ThreadMessage(
        id=m.id,
        sender=sender,
        recipients=recipients,
        at=m.at,
        direction=m.direction,
        mailbox=Mailbox(box[0], box[1], m.account_id in who.account_ids) if box else None,
        visibility=m.visibility,
        text=text,
        quoted_lines=folded,
    )
