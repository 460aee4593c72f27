"""Exporting an account's synced messages as plain dictionaries (secrets never included)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine

from models import messages as message_queries
from models.db import session_scope


def export_messages(db: Engine, *, account_id: int, page: int = 500) -> Iterator[dict[str, Any]]:
    """One dict per message, page by page so memory stays bounded."""
    after = 0
    while True:
        with session_scope(db, readonly=True) as session:
            rows = message_queries.export_page(session, account_id=account_id, after_id=after, limit=page)
        if not rows:
            return
        after = rows[-1]["id"]  # read before yielding: the caller may change the rows
        yield from rows
