"""Read queries on synced messages: export pages with addresses, folders and matched contacts."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import and_, select
from sqlmodel import Session, col

from models.tables import Contact, Folder, Message, MessageAddress, MessageLocation


def export_page(session: Session, *, account_id: int, after_id: int, limit: int) -> list[dict[str, Any]]:
    """Messages with id > after_id, each with its addresses, folders and contacts."""
    messages = (
        session.execute(
            select(Message)
            .where(col(Message.account_id) == account_id, col(Message.id) > after_id)
            .order_by(col(Message.id))
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
        select(col(MessageAddress.message_id), col(MessageAddress.role), col(MessageAddress.email))
        .where(col(MessageAddress.message_id).in_(ids))
        .order_by(col(MessageAddress.message_id), col(MessageAddress.role), col(MessageAddress.position))
    ):
        addresses[mid][role].append(email)
    folders: dict[int, list[str]] = defaultdict(list)
    for mid, name in session.execute(
        select(col(MessageLocation.message_id), col(Folder.name))
        .join(Folder, col(Folder.id) == col(MessageLocation.folder_id))
        .where(col(MessageLocation.message_id).in_(ids))
        .order_by(col(MessageLocation.message_id), col(Folder.name))
    ):
        if name not in folders[mid]:
            folders[mid].append(name)
    contacts: dict[int, set[str]] = defaultdict(set)
    team_ids = {m.team_id for m in messages}
    for mid, email in session.execute(
        select(col(MessageAddress.message_id), col(Contact.email))
        .join(Message, col(Message.id) == col(MessageAddress.message_id))
        .join(
            Contact,
            and_(col(Contact.email) == col(MessageAddress.email), col(Contact.team_id) == col(Message.team_id)),
        )
        .where(col(MessageAddress.message_id).in_(ids), col(Contact.team_id).in_(team_ids))
    ):
        contacts[mid].add(email)
    out = []
    for m in messages:
        addr = addresses[m.id]
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
                "folders": folders[m.id],
                "contacts": sorted(contacts[m.id]),
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
