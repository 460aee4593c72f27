"""Queries on contacts: upsert, list, and the set of a team's contact addresses."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import Session, col, select

from models.tables import Contact, Message, MessageAddress


def team_contact_emails(session: Session, *, team_id: str) -> set[str]:
    """Every contact address of a team, lower-cased (loaded once per sync slice)."""
    return set(session.exec(select(Contact.email).where(Contact.team_id == team_id)).all())


def upsert_contact(session: Session, *, team_id: str, email: str, name: str | None, source: str) -> bool:
    """Insert or update a contact by (team, email); return True when it is new."""
    email = email.strip().lower()
    contact = session.exec(select(Contact).where(Contact.team_id == team_id, Contact.email == email)).first()
    if contact is None:
        session.add(Contact(team_id=team_id, email=email, name=name or None, source=source))
        session.flush()
        return True
    if name and contact.name != name:
        contact.name = name
        session.add(contact)
    return False


def list_contacts(session: Session, *, team_id: str) -> Sequence[Contact]:
    """A team's contacts by address."""
    return session.exec(select(Contact).where(Contact.team_id == team_id).order_by(col(Contact.email))).all()


def count_contacts(session: Session, *, team_id: str) -> int:
    """How many contacts the team has."""
    return int(session.exec(select(func.count()).select_from(Contact).where(Contact.team_id == team_id)).one())


def messages_linked(session: Session, *, team_id: str, email: str) -> int:
    """How many stored messages of the team involve this address: a contact is linked by its address."""
    query = (
        select(func.count(func.distinct(MessageAddress.message_id)))
        .join(Message, col(Message.id) == col(MessageAddress.message_id))
        .where(Message.team_id == team_id, MessageAddress.email == email.strip().lower())
    )
    return int(session.exec(query).one())


def search_contacts(session: Session, *, team_id: str, text: str, limit: int = 20) -> Sequence[Contact]:
    """The team's contacts whose address or name contains the text (case-insensitive)."""
    pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return session.exec(
        select(Contact)
        .where(
            Contact.team_id == team_id,
            col(Contact.email).like(pattern, escape="\\") | func.lower(col(Contact.name)).like(pattern, escape="\\"),
        )
        .order_by(col(Contact.email))
        .limit(limit)
    ).all()


def contact_name(session: Session, *, team_id: str, email: str) -> str | None:
    """The name of a team's contact, when the address is one and has a name."""
    return session.exec(select(Contact.name).where(Contact.team_id == team_id, Contact.email == email)).first()
