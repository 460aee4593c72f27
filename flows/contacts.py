"""Importing and adding a team's contacts; a contact is linked to stored mail through its address."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from email.utils import parseaddr

from sqlalchemy import Engine

from models import contacts as contact_queries
from models.db import session_scope


@dataclass
class ImportReport:
    """What a CSV import did, and each bad row by line number."""

    added: int = 0
    updated: int = 0
    linked_messages: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)


def normalise_email(value: str) -> str | None:
    """A bare, lower-cased address, or None when it is not one."""
    _, addr = parseaddr(value.strip())
    addr = addr.strip().lower()
    local, _, domain = addr.partition("@")
    if not local or "." not in domain or " " in addr:
        return None
    return addr


def import_contacts_csv(db: Engine, *, team_id: str, text: str) -> ImportReport:
    """Upsert the good rows of a CSV with a header row (columns email, name); report the bad ones."""
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower(): c for c in (reader.fieldnames or [])}
    if "email" not in columns:
        report.errors.append((1, "the header row has no 'email' column (expected: email,name)"))
        return report
    with session_scope(db) as session:
        for row in reader:
            line = reader.line_num
            raw = (row.get(columns["email"]) or "").strip()
            email = normalise_email(raw)
            if email is None:
                report.errors.append((line, f"{raw!r} is not an email address" if raw else "the email is empty"))
                continue
            name = (row.get(columns["name"]) or "").strip() if "name" in columns else ""
            if contact_queries.upsert_contact(
                session, team_id=team_id, email=email, name=name or None, source="import"
            ):
                report.added += 1
            else:
                report.updated += 1
            report.linked_messages += contact_queries.messages_linked(session, team_id=team_id, email=email)
    return report


MAX_CSV_BYTES = 2 * 1024 * 1024


class ImportRefused(Exception):
    """A contacts file that cannot be imported at all (too large, not UTF-8)."""


def decode_csv(data: bytes) -> str:
    """The text of an uploaded contacts CSV: UTF-8 (a byte-order mark is fine), as the CLI import reads files."""
    if len(data) > MAX_CSV_BYTES:
        raise ImportRefused(
            f"The file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB; split it and send the parts."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused('The file is not UTF-8 text; save it as "CSV UTF-8" and send it again.') from None


def contact_count(db: Engine, *, team_id: str) -> int:
    """How many contacts the team has."""
    with session_scope(db, readonly=True) as session:
        return contact_queries.count_contacts(session, team_id=team_id)


def add_contact(db: Engine, *, team_id: str, email: str, name: str | None, source: str = "slack") -> tuple[str, int]:
    """Add or rename one contact; return its address and how many stored messages it is linked to."""
    normal = normalise_email(email)
    if normal is None:
        raise ValueError(f"{email!r} is not an email address")
    with session_scope(db) as session:
        contact_queries.upsert_contact(session, team_id=team_id, email=normal, name=name, source=source)
        return normal, contact_queries.messages_linked(session, team_id=team_id, email=normal)
