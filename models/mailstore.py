"""Queries the engine stores mail with: dedup look-ups, batch inserts, locations, cursors, clean-up."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, not_, select, update
from sqlalchemy.dialects import sqlite
from sqlmodel import Session, SQLModel, col

from models.tables import Contact, Folder, Message, MessageAddress, MessageLocation

# A dedup key: ("gm", gmail id) | ("mid", Message-ID, size) | ("hash", header hash, size).
DedupKey = tuple[Any, ...]
_CHUNK = 500  # parameters per IN (...) stay far below SQLite's and PostgreSQL's limits


def find_existing(session: Session, *, account_id: int, keys: Iterable[DedupKey]) -> dict[DedupKey, int]:
    """Map each key that is already stored in the account to its message's primary key."""
    by_kind: dict[str, list[DedupKey]] = {"gm": [], "mid": [], "hash": []}
    for key in keys:
        by_kind[key[0]].append(key)
    found: dict[DedupKey, int] = {}
    for kind, column in (
        ("gm", Message.gm_msgid),
        ("mid", Message.message_id),
        ("hash", Message.content_hash),
    ):
        wanted = {k[1] for k in by_kind[kind]}
        for chunk in _chunks(sorted(wanted)):
            rows = session.execute(
                select(col(Message.id), col(column), col(Message.size)).where(
                    col(Message.account_id) == account_id,
                    col(column).in_(chunk),
                )
            ).all()
            for pk, value, size in rows:
                key = (kind, value) if kind == "gm" else (kind, value, size)
                found.setdefault(key, pk)
    return {k: found[k] for k in keys if k in found}


def insert_messages(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert message rows and return their primary keys, in order.

    A Core insert on the table (column defaults still apply): the ORM's bulk path cost more than
    SQLite's own work here, as it re-groups the rows by which keys are None and keeps per-row books.
    Every row must have the same keys (one executemany). Call it in a write transaction.
    """
    if not rows:
        return []
    table = _table(Message)
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        # SQLite cannot keep RETURNING in parameter order for a batch, so SQLAlchemy would run one
        # INSERT per row. The write transaction holds SQLite's only write lock from BEGIN IMMEDIATE
        # (models.db), so numbering the rows here, after the highest id, is as safe and one executemany.
        top = conn.execute(select(func.max(table.c.id))).scalar() or 0
        pks = list(range(top + 1, top + 1 + len(rows)))
        conn.execute(insert(table), [{**row, "id": pk} for row, pk in zip(rows, pks, strict=True)])
        return pks
    result = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), list(rows))
    return [int(r[0]) for r in result.all()]


def insert_addresses(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert message_address rows."""
    if rows:
        session.connection().execute(insert(_table(MessageAddress)), list(rows))


def insert_locations(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert locations, ignoring one that is already there (a rerun after a crash)."""
    if not rows:
        return
    table = _table(MessageLocation)
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # imported here: ~40 ms at start-up otherwise

        stmt = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    session.connection().execute(stmt, list(rows))


def _table(model: type[SQLModel]) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]  # SQLModel declares it only at runtime
    return table


def update_folder(session: Session, folder: Folder, **values: Any) -> None:
    """Set cursor and state columns of one folder."""
    session.execute(update(Folder).where(col(Folder.id) == folder.id).values(**values))


def known_uids(session: Session, folder: Folder, *, lo: int, hi: int) -> list[int]:
    """UIDs we hold locations for in [lo, hi] of this folder and UIDVALIDITY."""
    rows = session.execute(
        select(col(MessageLocation.uid)).where(
            col(MessageLocation.folder_id) == folder.id,
            col(MessageLocation.uidvalidity) == folder.uidvalidity,
            col(MessageLocation.uid).between(lo, hi),
        )
    ).all()
    return sorted(int(r[0]) for r in rows)


def next_known_uid(session: Session, folder: Folder, *, at_least: int) -> int | None:
    """The lowest UID at or above at_least we hold a location for (None when there is none)."""
    value = session.execute(
        select(func.min(col(MessageLocation.uid))).where(
            col(MessageLocation.folder_id) == folder.id,
            col(MessageLocation.uidvalidity) == folder.uidvalidity,
            col(MessageLocation.uid) >= at_least,
        )
    ).scalar()
    return None if value is None else int(value)


def max_known_uid(session: Session, folder: Folder) -> int:
    """The highest UID we hold a location for in this folder (0 if none)."""
    return known_uid_range(session, folder)[1]


def known_uid_range(session: Session, folder: Folder) -> tuple[int, int]:
    """The lowest and highest UIDs we hold locations for in this folder ((0, 0) if none)."""
    low, high = session.execute(
        select(func.min(col(MessageLocation.uid)), func.max(col(MessageLocation.uid))).where(
            col(MessageLocation.folder_id) == folder.id,
            col(MessageLocation.uidvalidity) == folder.uidvalidity,
        )
    ).one()
    return int(low or 0), int(high or 0)


def location_flags(session: Session, folder: Folder, uids: Sequence[int]) -> dict[int, str]:
    """Stored flags by UID."""
    out: dict[int, str] = {}
    for chunk in _chunks(list(uids)):
        rows = session.execute(
            select(col(MessageLocation.uid), col(MessageLocation.flags)).where(
                col(MessageLocation.folder_id) == folder.id,
                col(MessageLocation.uidvalidity) == folder.uidvalidity,
                col(MessageLocation.uid).in_(chunk),
            )
        ).all()
        out.update({int(u): f for u, f in rows})
    return out


def set_flags(session: Session, folder: Folder, flags_by_uid: dict[int, str]) -> int:
    """Store new flags for known UIDs; return how many changed."""
    current = location_flags(session, folder, list(flags_by_uid))
    changed = 0
    for uid, flags in flags_by_uid.items():
        if uid in current and current[uid] != flags:
            session.execute(
                update(MessageLocation)
                .where(
                    col(MessageLocation.folder_id) == folder.id,
                    col(MessageLocation.uidvalidity) == folder.uidvalidity,
                    col(MessageLocation.uid) == uid,
                )
                .values(flags=flags)
            )
            changed += 1
    return changed


def remove_locations(session: Session, folder: Folder, uids: Sequence[int]) -> None:
    """Forget locations that the server no longer has."""
    for chunk in _chunks(list(uids)):
        session.execute(
            delete(MessageLocation).where(
                col(MessageLocation.folder_id) == folder.id,
                col(MessageLocation.uidvalidity) == folder.uidvalidity,
                col(MessageLocation.uid).in_(chunk),
            )
        )


def drop_stale_locations(session: Session, folder: Folder) -> None:
    """Forget locations recorded under an older UIDVALIDITY of this folder."""
    session.execute(
        delete(MessageLocation).where(
            col(MessageLocation.folder_id) == folder.id,
            col(MessageLocation.uidvalidity) != folder.uidvalidity,
        )
    )


def delete_folder(session: Session, folder: Folder) -> None:
    """Remove a folder and (by cascade) its locations."""
    session.execute(delete(MessageLocation).where(col(MessageLocation.folder_id) == folder.id))
    session.execute(delete(Folder).where(col(Folder.id) == folder.id))


def delete_orphan_messages(session: Session, *, account_id: int) -> int:
    """Delete messages of the account that no folder holds any more; return how many."""
    has_location = select(col(MessageLocation.id)).where(col(MessageLocation.message_id) == col(Message.id)).exists()
    orphans = select(col(Message.id)).where(col(Message.account_id) == account_id, not_(has_location))
    ids = [int(r[0]) for r in session.execute(orphans).all()]
    for chunk in _chunks(ids):
        session.execute(delete(MessageAddress).where(col(MessageAddress.message_id).in_(chunk)))
        session.execute(delete(Message).where(col(Message.id).in_(chunk)))
    return len(ids)


def contacts_matched_since(session: Session, *, account_id: int, team_id: str, since: dt.datetime) -> int:
    """Distinct team contacts involved in the account's messages stored since a moment."""
    query = (
        select(func.count(func.distinct(Contact.id)))
        .select_from(MessageAddress)
        .join(Message, Message.id == MessageAddress.message_id)  # type: ignore[arg-type]
        .join(Contact, and_(Contact.email == MessageAddress.email, Contact.team_id == team_id))  # type: ignore[arg-type]
        .where(col(Message.account_id) == account_id, col(Message.created_at) >= since)
    )
    return int(session.execute(query).scalar() or 0)


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
