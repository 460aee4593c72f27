"""Queries behind the weekly "people who are not contacts yet" DM: a person's correspondents, digests, ignores."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, delete, not_, or_, select
from sqlmodel import Session, col

from models.find import message_key
from models.states import AccountState
from models.tables import Contact, EmailAccount, IgnoredAddress, Message, MessageAddress, PeopleDigest, UserSettings

GONE_REASONS = ("uninstalled", "user_deactivated")


@dataclass(frozen=True)
class Correspondence:
    """One address on one email of a person's week: the other side of a received or sent email."""

    email: str
    name: str | None
    message: str  # the email's key: one email in two of the person's mailboxes counts once
    direction: str  # sent | received
    at: dt.datetime | None
    bulk: bool


def people_with_mailboxes(session: Session) -> list[tuple[str, str]]:
    """(team, user) of everyone with a mailbox that is not disconnected, nor paused because the workspace
    uninstalled the app or the person was deactivated (nobody to write to)."""
    gone = and_(col(EmailAccount.state) == AccountState.PAUSED, col(EmailAccount.paused_reason).in_(GONE_REASONS))
    rows = session.execute(
        select(col(EmailAccount.team_id), col(EmailAccount.user_id))
        .where(col(EmailAccount.state) != AccountState.DISCONNECTED, not_(gone))
        .distinct()
        .order_by(col(EmailAccount.team_id), col(EmailAccount.user_id))
    ).all()
    return [(str(t), str(u)) for t, u in rows]


def settings_of(session: Session, people: Sequence[tuple[str, str]]) -> dict[tuple[str, str], UserSettings]:
    """The saved general settings of these people (absent: never saved, the defaults apply)."""
    out: dict[tuple[str, str], UserSettings] = {}
    for team_id in sorted({t for t, _ in people}):
        users = [u for t, u in people if t == team_id]
        for row in session.execute(
            select(UserSettings).where(col(UserSettings.team_id) == team_id, col(UserSettings.user_id).in_(users))
        ).scalars():
            out[(row.team_id, row.user_id)] = row
    return out


def correspondence(
    session: Session, *, team_id: str, user_id: str, start: dt.datetime, end: dt.datetime
) -> list[Correspondence]:
    """The other side of every email in the person's mailboxes received or sent in [start, end).

    Received mail counts its From address; sent mail its To, Cc and Bcc. The window is on the server's
    internal date, which the (account_id, internal_date) index serves.
    """
    accounts = select(col(EmailAccount.id)).where(
        col(EmailAccount.team_id) == team_id, col(EmailAccount.user_id) == user_id
    )
    role = col(MessageAddress.role)
    rows = session.execute(
        select(
            col(MessageAddress.email),
            col(MessageAddress.name),
            message_key(),
            col(Message.direction),
            col(Message.internal_date),
            col(Message.bulk),
        )
        .join(Message, col(Message.id) == col(MessageAddress.message_id))
        .where(
            col(Message.account_id).in_(accounts),
            col(Message.internal_date) >= start,
            col(Message.internal_date) < end,
            or_(
                and_(col(Message.direction) == "received", role == "from"),
                and_(col(Message.direction) == "sent", role.in_(("to", "cc", "bcc"))),
            ),
        )
        .order_by(col(Message.internal_date), col(MessageAddress.id))
    ).all()
    return [
        Correspondence(email=str(e), name=n, message=str(k), direction=str(d), at=at, bulk=bool(b))
        for e, n, k, d, at, b in rows
    ]


def team_mailbox_emails(session: Session, *, team_id: str) -> set[str]:
    """Every mailbox address of the team (colleagues are not contacts)."""
    rows = session.execute(select(col(EmailAccount.email)).where(col(EmailAccount.team_id) == team_id)).all()
    return {str(r[0]).lower() for r in rows}


def contact_emails_among(session: Session, *, team_id: str, emails: Sequence[str]) -> set[str]:
    """Which of these addresses are team contacts."""
    if not emails:
        return set()
    rows = session.execute(
        select(col(Contact.email)).where(col(Contact.team_id) == team_id, col(Contact.email).in_(list(emails)))
    ).all()
    return {str(r[0]) for r in rows}


def ignored_emails(session: Session, *, team_id: str, user_id: str) -> set[str]:
    """The addresses this person asked never to be suggested again."""
    rows = session.execute(
        select(col(IgnoredAddress.email)).where(
            col(IgnoredAddress.team_id) == team_id, col(IgnoredAddress.user_id) == user_id
        )
    ).all()
    return {str(r[0]) for r in rows}


def ignore(session: Session, *, team_id: str, user_id: str, email: str) -> None:
    """Never suggest this address to this person again (idempotent)."""
    if email not in ignored_emails(session, team_id=team_id, user_id=user_id):
        session.add(IgnoredAddress(team_id=team_id, user_id=user_id, email=email))


def digest_exists(session: Session, *, team_id: str, user_id: str, period: dt.date) -> bool:
    """Whether this person's digest of that week was already made (by this or another worker)."""
    found = session.execute(
        select(col(PeopleDigest.id)).where(
            col(PeopleDigest.team_id) == team_id,
            col(PeopleDigest.user_id) == user_id,
            col(PeopleDigest.period) == period,
        )
    ).first()
    return found is not None


def get_digest(session: Session, digest_id: int) -> PeopleDigest | None:
    """One digest by id."""
    return session.get(PeopleDigest, digest_id)


def delete_digest(session: Session, digest_id: int) -> None:
    """Forget a digest (its DM could not be posted: the next tick tries again)."""
    session.execute(delete(PeopleDigest).where(col(PeopleDigest.id) == digest_id))


def delete_person(session: Session, *, team_id: str, user_id: str) -> None:
    """Remove a person's digests and ignored addresses."""
    for table in (PeopleDigest, IgnoredAddress):
        session.execute(delete(table).where(col(table.team_id) == team_id, col(table.user_id) == user_id))
