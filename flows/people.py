"""People who are not contacts yet, without Slack: the weekly suggestions, when they are due, add and ignore."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass, replace
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from flows.accounts import FieldError
from flows.contacts import add_contact
from models import accounts as account_queries
from models import people as queries
from models import setup_sessions as setup_queries
from models.db import session_scope
from models.tables import PeopleDigest, UserSettings

MIN_MESSAGES = 2
MAX_SUGGESTIONS = 10
WEEK = dt.timedelta(days=7)
# A digest is sent when its hour has come; a worker that was down longer than this waits for the next week.
GRACE = dt.timedelta(hours=12)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Addresses that never answer: no-reply senders, bounces and mail systems.
_NO_REPLY = re.compile(
    r"(^|[._+-])(no[._-]?reply|do[._-]?not[._-]?reply|donotreply|noreply)([._+-]|$)"
    r"|^(mailer-daemon|postmaster|bounces?|bounce[._+-].*|mailerdaemon)$",
    re.IGNORECASE,
)
# Own-domain addresses are colleagues, except at the big free mail providers where everyone is someone else.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "yahoo.com",
        "ymail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "fastmail.com",
        "gmx.com",
        "gmx.net",
        "gmx.de",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "zoho.com",
        "hey.com",
    }
)


class DigestGone(Exception):
    """The digest a button points at no longer exists (deleted with the person's data)."""


class NotYourDigest(Exception):
    """The digest belongs to someone else (a forged or misdirected payload)."""


class NotSuggested(Exception):
    """The address is not one the digest suggested."""


@dataclass(frozen=True)
class Suggestion:
    """One address of a digest, with its counts and what the person did with it."""

    email: str
    name: str | None
    messages: int
    sent: int
    received: int
    state: str = "new"  # new | added | ignored
    linked: int | None = None  # emails linked when added


@dataclass(frozen=True)
class Digest:
    """A digest as its DM shows it."""

    id: int
    team_id: str
    user_id: str
    window_start: dt.datetime
    window_end: dt.datetime
    suggestions: list[Suggestion]
    channel: str | None
    ts: str | None


@dataclass(frozen=True)
class DueDigest:
    """A person whose weekly digest is due now, and the week it covers."""

    team_id: str
    user_id: str
    period: dt.date
    window_start: dt.datetime
    window_end: dt.datetime


def is_blocked(email: str, patterns: set[str]) -> bool:
    """Blocked as the engine blocks: the address itself, or its domain or a parent domain."""
    if email in patterns:
        return True
    parts = email.rpartition("@")[2].split(".")
    return any(".".join(parts[i:]) in patterns for i in range(len(parts) - 1))


def is_no_reply(email: str) -> bool:
    """A no-reply, bounce or mail-system address."""
    return bool(_NO_REPLY.search(email.partition("@")[0]))


def suggestions_for(
    db: Engine, *, team_id: str, user_id: str, start: dt.datetime, end: dt.datetime, limit: int = MAX_SUGGESTIONS
) -> list[Suggestion]:
    """The addresses this person corresponded with most in [start, end) who are not team contacts yet.

    Both directions count (received from them, sent to them); at least MIN_MESSAGES emails; never a team
    contact, an address or domain the person blocked, one they ignored, a no-reply address, a sender of
    mailing-list or bulk mail, a colleague (a team mailbox, or the person's own domain), or the person.
    """
    with session_scope(db, readonly=True) as session:
        rows = queries.correspondence(session, team_id=team_id, user_id=user_id, start=start, end=end)
        blocked = account_queries.blocked_patterns(session, team_id=team_id, user_id=user_id)
        ignored = queries.ignored_emails(session, team_id=team_id, user_id=user_id)
        colleagues = queries.team_mailbox_emails(session, team_id=team_id)
        own = {a.email.lower() for a in account_queries.accounts_of(session, team_id=team_id, user_id=user_id)}
        contacts = queries.contact_emails_among(session, team_id=team_id, emails=sorted({r.email for r in rows}))
    own_domains = {e.rpartition("@")[2] for e in own} - FREE_MAIL_DOMAINS
    bulk_senders = {r.email for r in rows if r.bulk and r.direction == "received"}
    counted: dict[str, dict[str, set[str]]] = {}
    names: dict[str, str] = {}
    last: dict[str, dt.datetime] = {}
    for r in rows:
        email = r.email
        if (
            email in contacts
            or email in ignored
            or email in colleagues
            or email in bulk_senders
            or r.bulk
            or is_no_reply(email)
            or is_blocked(email, blocked)
            or email.rpartition("@")[2] in own_domains
        ):
            continue
        per = counted.setdefault(email, {"sent": set(), "received": set()})
        per["sent" if r.direction == "sent" else "received"].add(r.message)
        if r.name:
            names[email] = r.name  # rows come oldest first: the latest name wins
        if r.at is not None:
            last[email] = max(last.get(email, r.at), r.at)
    out = []
    for email, per in counted.items():
        total = len(per["sent"] | per["received"])
        if total >= MIN_MESSAGES:
            out.append(Suggestion(email, names.get(email), total, len(per["sent"]), len(per["received"])))
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    out.sort(key=lambda s: (-s.messages, -(last.get(s.email, epoch) - epoch).total_seconds(), s.email))
    return out[:limit]


def zone_of(name: str | None) -> ZoneInfo:
    """The person's time zone, UTC when unknown or not a zone this system knows."""
    try:
        return ZoneInfo(name) if name else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def due_week(prefs: UserSettings, now: dt.datetime) -> DueDigest | None:
    """The digest week that is due at `now` for this person, if any: their day and hour, in their time zone."""
    if prefs.digest_day is None or prefs.notification_level == "nothing":
        return None
    zone = zone_of(prefs.timezone)
    local = now.astimezone(zone)
    days_back = (local.weekday() - prefs.digest_day) % 7
    day = (local - dt.timedelta(days=days_back)).date()
    scheduled = dt.datetime.combine(day, dt.time(prefs.digest_hour), tzinfo=zone)
    if scheduled > local:
        day -= WEEK
        scheduled = dt.datetime.combine(day, dt.time(prefs.digest_hour), tzinfo=zone)
    if local - scheduled >= GRACE:
        return None
    end = scheduled.astimezone(dt.UTC)
    return DueDigest(prefs.team_id, prefs.user_id, day, end - WEEK, end)


def due_digest(db: Engine, prefs: UserSettings, now: dt.datetime) -> DueDigest | None:
    """The person's digest due at `now`, unless it was already made."""
    due = due_week(prefs, now)
    if due is None:
        return None
    with session_scope(db, readonly=True) as session:
        if queries.digest_exists(session, team_id=due.team_id, user_id=due.user_id, period=due.period):
            return None
    return due


def due_digests(db: Engine, *, now: dt.datetime) -> list[tuple[DueDigest | None, UserSettings]]:
    """Everyone with a mailbox, each with the digest due now (None when not due or already made)."""
    with session_scope(db, readonly=True) as session:
        people = queries.people_with_mailboxes(session)
        saved = queries.settings_of(session, people)
        out: list[tuple[DueDigest | None, UserSettings]] = []
        for team_id, user_id in people:
            prefs = saved.get((team_id, user_id)) or UserSettings(team_id=team_id, user_id=user_id)
            due = due_week(prefs, now)
            if due is not None and queries.digest_exists(session, team_id=team_id, user_id=user_id, period=due.period):
                due = None
            out.append((due, prefs))
        return out


def save_timezone(db: Engine, *, team_id: str, user_id: str, timezone: str | None) -> None:
    """Remember the person's time zone (from Slack) for their digest hour."""
    with session_scope(db) as session:
        prefs = setup_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        if prefs.timezone != timezone:
            prefs.timezone = timezone
            setup_queries.save(session, prefs)


def claim_digest(db: Engine, due: DueDigest, suggestions: list[Suggestion]) -> int | None:
    """Record the week's digest; None when another worker (or an earlier tick) already made it."""
    row = PeopleDigest(
        team_id=due.team_id,
        user_id=due.user_id,
        period=due.period,
        window_start=due.window_start,
        window_end=due.window_end,
        suggestions=_dump(suggestions),
    )
    try:
        with session_scope(db) as session:
            session.add(row)
            session.flush()
            return row.id
    except IntegrityError:
        return None


def digest_posted(db: Engine, digest_id: int, *, channel: str, ts: str) -> None:
    """Remember where the digest's DM is, so buttons can edit it."""
    with session_scope(db) as session:
        row = queries.get_digest(session, digest_id)
        if row is not None:
            row.slack_channel, row.slack_ts = channel, ts
            session.add(row)


def digest_not_posted(db: Engine, digest_id: int) -> None:
    """Slack refused the DM: forget the digest so the next tick tries again."""
    with session_scope(db) as session:
        queries.delete_digest(session, digest_id)


def load_digest(db: Engine, digest_id: int, *, team_id: str, user_id: str) -> Digest:
    """A digest, only for its own person."""
    with session_scope(db, readonly=True) as session:
        return _as_digest(_owned(session, digest_id, team_id, user_id))


def suggestion(db: Engine, digest_id: int, *, team_id: str, user_id: str, email: str) -> Suggestion:
    """One suggestion of the person's digest (NotSuggested for any other address)."""
    digest = load_digest(db, digest_id, team_id=team_id, user_id=user_id)
    found = next((s for s in digest.suggestions if s.email == email), None)
    if found is None:
        raise NotSuggested(email)
    return found


def add_suggested(
    db: Engine, digest_id: int, *, team_id: str, user_id: str, email: str, name: str | None
) -> tuple[Digest, int]:
    """Add a suggested address as a team contact (its stored mail is linked at once); return the digest and
    how many emails were linked."""
    cleaned = " ".join((name or "").split())[:1000] or None
    target = suggestion(db, digest_id, team_id=team_id, user_id=user_id, email=email)
    try:
        _address, linked = add_contact(db, team_id=team_id, email=target.email, name=cleaned, source="digest")
    except ValueError:
        raise FieldError("email", f"{email} is not an email address.") from None
    digest = _mark(db, digest_id, team_id, user_id, email, state="added", linked=linked)
    return digest, linked


def ignore_suggested(db: Engine, digest_id: int, *, team_id: str, user_id: str, email: str) -> Digest:
    """Never suggest this address to this person again."""
    suggestion(db, digest_id, team_id=team_id, user_id=user_id, email=email)
    with session_scope(db) as session:
        queries.ignore(session, team_id=team_id, user_id=user_id, email=email)
    return _mark(db, digest_id, team_id, user_id, email, state="ignored", linked=None)


def save_digest_schedule(
    db: Engine, *, team_id: str, user_id: str, day: int | None, hour: int, timezone: str | None = None
) -> None:
    """Set the weekday (None: off) and local hour of the person's weekly digest."""
    if day is not None and not 0 <= day <= 6:
        raise FieldError("digest_day", "Choose a day of the week, or off.")
    if not 0 <= hour <= 23:
        raise FieldError("digest_hour", "Choose an hour between 00:00 and 23:00.")
    with session_scope(db) as session:
        prefs = setup_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        prefs.digest_day, prefs.digest_hour = day, hour
        if timezone:
            prefs.timezone = timezone
        setup_queries.save(session, prefs)


def schedule_text(prefs: UserSettings) -> str:
    """When the person's digest comes, in words."""
    if prefs.digest_day is None:
        return "off"
    when = f"{DAYS[prefs.digest_day]}s at {prefs.digest_hour:02d}:00"
    return when + (f" ({prefs.timezone})" if prefs.timezone else " your time")


def _mark(
    db: Engine, digest_id: int, team_id: str, user_id: str, email: str, *, state: str, linked: int | None
) -> Digest:
    with session_scope(db) as session:
        row = _owned(session, digest_id, team_id, user_id)
        items = [replace(s, state=state, linked=linked) if s.email == email else s for s in _load(row.suggestions)]
        row.suggestions = _dump(items)
        session.add(row)
        return _as_digest(row)


def _owned(session: Session, digest_id: int, team_id: str, user_id: str) -> PeopleDigest:
    row = queries.get_digest(session, digest_id)
    if row is None:
        raise DigestGone(str(digest_id))
    if (row.team_id, row.user_id) != (team_id, user_id):
        raise NotYourDigest(str(digest_id))
    return row


def _as_digest(row: PeopleDigest) -> Digest:
    assert row.id is not None
    return Digest(
        id=row.id,
        team_id=row.team_id,
        user_id=row.user_id,
        window_start=row.window_start,
        window_end=row.window_end,
        suggestions=_load(row.suggestions),
        channel=row.slack_channel,
        ts=row.slack_ts,
    )


def _dump(items: list[Suggestion]) -> str:
    return json.dumps([asdict(s) for s in items], ensure_ascii=False)


def _load(text: str) -> list[Suggestion]:
    return [Suggestion(**item) for item in json.loads(text or "[]")]
