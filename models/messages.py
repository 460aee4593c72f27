"""Read queries on synced messages: export pages with addresses, folders and matched contacts."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, select
from sqlmodel import Session

from models.tables import Contact, Folder, Message, MessageAddress, MessageLocation


def export_page(session: Session, *, account_id: int, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Messages with id > after_id, each with its addresses, folders and contacts."""
    messages = (
        session.execute(
            select(Message)
            .where(Message.account_id == account_id, Message.id > after_id)  # type: ignore[arg-type,operator]
            .order_by(Message.id)  # type: ignore[arg-type]
            .limit(limit)
        )
        .scalars()
        .all()
    )
    if not messages:
        return []
    ids = [m.id for m in messages]
    addresses: dict[int, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for mid, role, email in session.execute(
        select(MessageAddress.message_id, MessageAddress.role, MessageAddress.email)
        .where(MessageAddress.message_id.in_(ids))  # type: ignore[attr-defined]
        .order_by(MessageAddress.message_id, MessageAddress.role, MessageAddress.position)  # type: ignore[arg-type]
    ):
        addresses[mid][role].append(email)
    folders: dict[int, list[str]] = defaultdict(list)
    for mid, name in session.execute(
        select(MessageLocation.message_id, Folder.name)
        .join(Folder, Folder.id == MessageLocation.folder_id)  # type: ignore[arg-type]
        .where(MessageLocation.message_id.in_(ids))  # type: ignore[attr-defined]
        .order_by(MessageLocation.message_id, Folder.name)  # type: ignore[arg-type]
    ):
        if name not in folders[mid]:
            folders[mid].append(name)
    contacts: dict[int, set[str]] = defaultdict(set)
    team_ids = {m.team_id for m in messages}
    for mid, email in session.execute(
        select(MessageAddress.message_id, Contact.email)
        .join(Message, Message.id == MessageAddress.message_id)  # type: ignore[arg-type]
        .join(Contact, and_(Contact.email == MessageAddress.email, Contact.team_id == Message.team_id))  # type: ignore[arg-type]
        .where(MessageAddress.message_id.in_(ids), Contact.team_id.in_(team_ids))  # type: ignore[attr-defined]
    ):
        contacts[mid].add(email)
    out = []
    for m in messages:
        addr = addresses[m.id]  # type: ignore[index]
        out.append(
            {
                "id": m.id,
                "message_id": m.message_id,
                "subject": m.subject,
                "from": addr.get("from", []),
                "sender": addr.get("sender", []),
                "reply_to": addr.get("reply_to", []),
                "to": addr.get("to", []),
                "cc": addr.get("cc", []),
                "bcc": addr.get("bcc", []),
                "date": m.date.isoformat() if m.date else None,
                "internal_date": m.internal_date.isoformat() if m.internal_date else None,
                "folders": folders[m.id],  # type: ignore[index]
                "contacts": sorted(contacts[m.id]),  # type: ignore[index]
                "direction": m.direction,
                "visibility": m.visibility,
                "size": m.size,
                "truncated": m.truncated,
                "thread_key": m.thread_key,
                "snippet": m.snippet,
                "attachments": json.loads(m.attachments) if m.attachments else [],
            }
        )
    return out
