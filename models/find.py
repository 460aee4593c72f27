"""Queries behind `find`: a contact's mail that one person may see, grouped in threads, and one thread.

What a person may see is decided here, in SQL, so that counts and pages can never include anything else:
mail of their own mailboxes, and mail of their teammates' mailboxes whose visibility is "shared", in their
team only, minus any message with an address its owner has blocked (mail stored before the block).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    cast,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.orm import aliased
from sqlmodel import Session, col

from models.tables import BlockedAddress, Contact, EmailAccount, Message, MessageAddress

MatchKind = Literal["address", "domain", "name"]


@dataclass(frozen=True)
class Viewer:
    """Who is asking: their team, and the ids of their own mailboxes in it."""

    team_id: str
    user_id: str
    account_ids: tuple[int, ...]


@dataclass(frozen=True)
class Match:
    """What to look for: one address, a domain (and its subdomains), or a name."""

    kind: MatchKind
    value: str  # lower-cased; a name is matched as a substring


@dataclass(frozen=True)
class ThreadCount:
    """One thread of a result page: its key, its latest date and how many matching emails it has."""

    key: str
    last_at: dt.datetime | None
    emails: int


@dataclass(frozen=True)
class StoredMessage:
    """A message as the find views show it."""

    id: int
    account_id: int
    key: str  # the same email in two mailboxes has one key (its Message-ID)
    thread: str
    subject: str | None
    at: dt.datetime | None
    direction: str
    visibility: str
    snippet: str | None
    text_body: str | None
    html_body: str | None


def viewer(session: Session, *, team_id: str, user_id: str) -> Viewer:
    """The person asking, with their own mailboxes in this team (the mail they see whatever its visibility)."""
    ids = session.execute(
        select(col(EmailAccount.id)).where(col(EmailAccount.team_id) == team_id, col(EmailAccount.user_id) == user_id)
    ).all()
    return Viewer(team_id=team_id, user_id=user_id, account_ids=tuple(sorted(int(i[0]) for i in ids)))


def thread_key() -> ColumnElement[Any]:
    """A message's thread: its thread key, else its Message-ID, else the message itself."""
    return func.coalesce(col(Message.thread_key), col(Message.message_id), literal("#") + cast(col(Message.id), String))


def message_key() -> ColumnElement[Any]:
    """One email however many mailboxes hold it: its Message-ID, else the row itself."""
    return func.coalesce(col(Message.message_id), literal("#") + cast(col(Message.id), String))


def when() -> ColumnElement[Any]:
    """When a message happened: the server's internal date (reliable), else the Date header."""
    return func.coalesce(col(Message.internal_date), col(Message.date))


def visible_to(who: Viewer, *, with_blocks: bool = True) -> ColumnElement[bool]:
    """The messages this person may see (own mailboxes, teammates' shared mail, their team only)."""
    seen = and_(
        col(Message.team_id) == who.team_id,
        or_(col(Message.account_id).in_(who.account_ids), col(Message.visibility) == "shared"),
    )
    return and_(seen, not_blocked_by_owner(col(Message.id), col(Message.account_id))) if with_blocks else seen


def not_blocked_by_owner(message_id: Any, account_id: Any) -> ColumnElement[bool]:
    """No address of the message is blocked by the owner of its mailbox (as the engine blocks: an address, or a
    domain with its subdomains): mail stored before its owner blocked an address stays out of sight."""
    other = aliased(MessageAddress)
    owner = aliased(EmailAccount)
    pattern = col(BlockedAddress.pattern)
    hit = or_(
        col(other.email) == pattern,
        and_(
            not_(pattern.contains("@")),
            or_(col(other.email).like(literal("%@") + pattern), col(other.email).like(literal("%.") + pattern)),
        ),
    )
    blocked = (
        select(literal(1))
        .select_from(other)
        .join(owner, col(owner.id) == account_id)
        .join(
            BlockedAddress,
            and_(
                col(BlockedAddress.team_id) == col(owner.team_id),
                col(BlockedAddress.user_id) == col(owner.user_id),
                hit,
            ),
        )
        .where(col(other.message_id) == message_id)
    )
    return not_(exists(blocked))


def team_has_blocks(session: Session, *, team_id: str) -> bool:
    """Whether anyone in the team blocked an address (else the blocked-address check can be left out)."""
    query = select(exists(select(literal(1)).where(col(BlockedAddress.team_id) == team_id)))
    return bool(session.execute(query).scalar())


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _address_condition(match: Match, team_id: str) -> ColumnElement[bool]:
    email = col(MessageAddress.email)
    if match.kind == "address":
        return email == match.value
    if match.kind == "domain":
        # The domain's own addresses and its subdomains' (sales.example.com for example.com).
        return or_(email.like(f"%@{match.value}"), email.like(f"%.{match.value}"))
    needle = _like_escape(match.value)
    named_contacts = select(col(Contact.email)).where(
        col(Contact.team_id) == team_id, func.lower(col(Contact.name)).like(f"%{needle}%", escape="\\")
    )
    return or_(
        func.lower(col(MessageAddress.name)).like(f"%{needle}%", escape="\\"),
        email.like(f"{needle}%@%", escape="\\"),  # jane finds jane.doe@… with no display name
        email.in_(named_contacts),
    )


def _hits(session: Session, who: Viewer, match: Match) -> Any:
    """The visible messages involving the match: (thread, key, at).

    `id IN (addresses matching)` rather than a join: no DISTINCT is needed, and both SQLite and PostgreSQL
    drive an address look-up from the (email, message_id) index. The owners' blocked addresses are checked
    on the matches only (materialized first), not on every message of the team.
    """
    involved = select(col(MessageAddress.message_id)).where(_address_condition(match, who.team_id))
    hits = (
        select(
            col(Message.id).label("id"),
            col(Message.account_id).label("account_id"),
            thread_key().label("thread"),
            message_key().label("key"),
            when().label("at"),
        )
        .where(col(Message.id).in_(involved), visible_to(who, with_blocks=False))
        .cte("hits")
        .prefix_with("MATERIALIZED")
    )
    if not team_has_blocks(session, team_id=who.team_id):
        return hits
    return (
        select(hits.c.thread, hits.c.key, hits.c.at)
        .where(not_blocked_by_owner(hits.c.id, hits.c.account_id))
        .cte("seen")
    )


@dataclass(frozen=True)
class SearchPage:
    """The totals over every match, and one page of threads."""

    emails: int
    threads: int
    first_at: dt.datetime | None
    page: list[ThreadCount]


def search(session: Session, who: Viewer, match: Match, *, offset: int, limit: int) -> SearchPage:
    """How many emails and threads involve the match, since when, and one page of threads, newest first.

    One statement: the matching messages are read once, then grouped by email (one email in two mailboxes
    counts once: copies share their Message-ID and so their thread) and by thread.
    """
    if session.get_bind().dialect.name == "postgresql":
        # PostgreSQL's JIT compiles a plan whose estimated cost is high (the blocked-address check makes it
        # so) and spent 2 s compiling a 0.3 s query in bench/find.py: these are short interactive queries.
        session.execute(text("SET LOCAL jit = off"))
    hits = _hits(session, who, match)
    emails = (
        select(hits.c.key, hits.c.thread, func.max(hits.c.at).label("at"))
        .group_by(hits.c.key, hits.c.thread)
        .cte("emails")
    )
    threads = (
        select(emails.c.thread, func.max(emails.c.at).label("last"), func.count().label("n"))
        .group_by(emails.c.thread)
        .cte("threads")
    )
    page = (
        select(threads.c.thread, threads.c.last, threads.c.n)
        .order_by(threads.c.last.desc().nulls_last(), threads.c.thread)
        .limit(limit)
        .offset(offset)
        .subquery("page")
    )
    totals = select(func.count().label("emails"), func.min(emails.c.at).label("first")).subquery("totals")
    thread_count = select(func.count()).select_from(threads).scalar_subquery()
    rows = session.execute(
        select(totals.c.emails, totals.c.first, thread_count, page.c.thread, page.c.last, page.c.n)
        .select_from(totals)
        .outerjoin(page, true())
        .order_by(page.c.last.desc().nulls_last(), page.c.thread)
    ).all()
    first = rows[0]
    return SearchPage(
        emails=int(first[0] or 0),
        threads=int(first[2] or 0),
        first_at=_aware(first[1]),
        page=[ThreadCount(key=str(r[3]), last_at=_aware(r[4]), emails=int(r[5])) for r in rows if r[3] is not None],
    )


def messages_of_threads(session: Session, who: Viewer, threads: Sequence[str]) -> dict[str, list[StoredMessage]]:
    """Every message of these threads this person may see, oldest first, by thread (the thread key index)."""
    if not threads:
        return {}
    keys = [t for t in threads if not t.startswith("#")]
    singles = [int(t[1:]) for t in threads if t.startswith("#") and t[1:].isdigit()]
    same = or_(
        col(Message.thread_key).in_(keys),
        and_(col(Message.thread_key).is_(None), col(Message.message_id).in_(keys)),
        col(Message.id).in_(singles),
    )
    with_blocks = team_has_blocks(session, team_id=who.team_id)
    out: dict[str, list[StoredMessage]] = defaultdict(list)
    for m in _stored(session, and_(same, visible_to(who, with_blocks=with_blocks))):
        out[m.thread].append(m)
    return out


def thread_messages(session: Session, who: Viewer, anchor: StoredMessage) -> list[StoredMessage]:
    """Every message of the anchor's thread this person may see, oldest first."""
    with_blocks = team_has_blocks(session, team_id=who.team_id)
    return _stored(session, and_(_same_thread(anchor), visible_to(who, with_blocks=with_blocks)))


def visible_message(session: Session, who: Viewer, message_id: int) -> StoredMessage | None:
    """One message if this person may see it, else None (gone, private to someone else, another team)."""
    with_blocks = team_has_blocks(session, team_id=who.team_id)
    found = _stored(session, and_(col(Message.id) == message_id, visible_to(who, with_blocks=with_blocks)))
    return found[0] if found else None


def message_owner(session: Session, message_id: int) -> tuple[str, str] | None:
    """(team, user) owning the mailbox a message was synced from; None when the message is gone."""
    row = session.execute(
        select(col(EmailAccount.team_id), col(EmailAccount.user_id))
        .join(Message, col(Message.account_id) == col(EmailAccount.id))
        .where(col(Message.id) == message_id)
    ).first()
    return (str(row[0]), str(row[1])) if row else None


def set_thread_visibility(session: Session, who: Viewer, anchor: StoredMessage, *, visibility: str) -> int:
    """Set the visibility of the anchor's thread in this person's own mailboxes; return how many emails changed."""
    if not who.account_ids:
        return 0
    result = session.execute(
        update(Message)
        .where(
            col(Message.team_id) == who.team_id,
            _same_thread(anchor),
            col(Message.account_id).in_(list(who.account_ids)),
        )
        .values(visibility=visibility)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def addresses_of(session: Session, message_ids: Sequence[int]) -> dict[int, list[tuple[str, str, str | None]]]:
    """(role, email, name) of each message's addresses, in header order."""
    out: dict[int, list[tuple[str, str, str | None]]] = defaultdict(list)
    if not message_ids:
        return out
    rows = session.execute(
        select(
            col(MessageAddress.message_id),
            col(MessageAddress.role),
            col(MessageAddress.email),
            col(MessageAddress.name),
        )
        .where(col(MessageAddress.message_id).in_(list(message_ids)))
        .order_by(col(MessageAddress.message_id), col(MessageAddress.id))
    ).all()
    for mid, role, email, name in rows:
        out[int(mid)].append((str(role), str(email), name))
    return out


def mailboxes(session: Session, account_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(address, owner user id) of these mailboxes."""
    if not account_ids:
        return {}
    rows = session.execute(
        select(col(EmailAccount.id), col(EmailAccount.email), col(EmailAccount.user_id)).where(
            col(EmailAccount.id).in_(list(account_ids))
        )
    ).all()
    return {int(i): (str(e), str(u)) for i, e, u in rows}


def _same_thread(anchor: StoredMessage) -> ColumnElement[bool]:
    if anchor.thread.startswith("#"):
        return col(Message.id) == anchor.id  # no Message-ID and no thread headers: a thread of one
    # thread_key is the first Reference, else In-Reply-To, else the Message-ID (sync/parse.py), so the
    # (team_id, thread_key) index finds the thread; rows without one fall back to their Message-ID.
    return or_(
        col(Message.thread_key) == anchor.thread,
        and_(col(Message.thread_key).is_(None), col(Message.message_id) == anchor.thread),
    )


def _stored(session: Session, where: ColumnElement[bool]) -> list[StoredMessage]:
    rows = session.execute(
        select(
            col(Message.id),
            col(Message.account_id),
            message_key(),
            thread_key(),
            col(Message.subject),
            when(),
            col(Message.direction),
            col(Message.visibility),
            col(Message.snippet),
            col(Message.text_body),
            col(Message.html_body),
        )
        .where(where)
        .order_by(when().asc().nulls_first(), col(Message.id))
    ).all()
    return [
        StoredMessage(
            id=int(r[0]),
            account_id=int(r[1]),
            key=str(r[2]),
            thread=str(r[3]),
            subject=r[4],
            at=_aware(r[5]),
            direction=str(r[6]),
            visibility=str(r[7]),
            snippet=r[8],
            text_body=r[9],
            html_body=r[10],
        )
        for r in rows
    ]


def _aware(value: Any) -> dt.datetime | None:
    """A UTC-aware datetime (aggregates over a subquery may come back naive, or as text on SQLite)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return None
