"""Queries on IDLE watch leases: which worker process watches which account's INBOX.

Like the sync lease (models/accounts.py), a watch is held by one owner until its lease expires; claims skip rows
another transaction has locked (PostgreSQL `FOR UPDATE SKIP LOCKED`; SQLite serialises writers anyway), so a
frozen process never holds the others up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import and_, func, literal, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from models.accounts import SYNCABLE_STATES
from models.clock import utcnow
from models.tables import EmailAccount, IdleWatch


@dataclass(frozen=True)
class WatchTarget:
    """An account whose INBOX should be watched, and what its login depends on (a change restarts the watch)."""

    account_id: int
    token: int  # the lease's fencing token when claimed
    fingerprint: str


def _fingerprint(account: EmailAccount) -> str:
    # The sealed secret changes when the person reconnects with a new password; OAuth access tokens change
    # every hour and are fetched at each login, so they are left out.
    secret = account.secret_encrypted if account.auth_kind != "oauth" else account.oauth_provider or ""
    text = "\0".join(
        str(v)
        for v in (
            account.imap_host,
            account.imap_port,
            account.imap_security,
            account.username,
            account.auth_kind,
            secret,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _free(now: dt.datetime) -> object:
    return or_(col(IdleWatch.owner).is_(None), col(IdleWatch.lease_until) < now)


def add_missing_rows(session: Session) -> None:
    """Give every syncable account a watch row (unowned), so claims only ever update."""
    missing = (
        sa_select(col(EmailAccount.id), literal(0))
        .where(col(EmailAccount.state).in_(SYNCABLE_STATES))
        .where(~col(EmailAccount.id).in_(sa_select(col(IdleWatch.account_id))))
    )
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.exec(insert(IdleWatch).from_select(["account_id", "token"], missing).on_conflict_do_nothing())


def claim(session: Session, *, owner: str, ttl: float, limit: int) -> list[WatchTarget]:
    """Take up to ``limit`` free (or expired) watches of syncable accounts; return them with their tokens."""
    if limit <= 0:
        return []
    now = utcnow()
    free = (
        sa_select(col(IdleWatch.account_id))
        .join(EmailAccount, col(EmailAccount.id) == col(IdleWatch.account_id))
        .where(col(EmailAccount.state).in_(SYNCABLE_STATES), _free(now))  # type: ignore[arg-type]
        .order_by(col(IdleWatch.lease_until).nulls_first(), col(IdleWatch.account_id))
        .limit(limit)
        .with_for_update(of=IdleWatch, skip_locked=True)  # PostgreSQL only; SQLite has one writer at a time
    )
    rows = session.exec(
        update(IdleWatch)
        .where(col(IdleWatch.account_id).in_(free.scalar_subquery()), _free(now))  # type: ignore[arg-type]
        .values(owner=owner, lease_until=now + dt.timedelta(seconds=ttl), token=col(IdleWatch.token) + 1)
        .returning(col(IdleWatch.account_id), col(IdleWatch.token))
    ).all()
    tokens = {int(a): int(t) for a, t in rows}
    return [
        WatchTarget(account_id, tokens[account_id], fingerprint)
        for account_id, fingerprint in fingerprints(session, tokens).items()
    ]


def renew(session: Session, *, owner: str, account_ids: Collection[int], ttl: float) -> set[int]:
    """Extend the leases this owner still holds among ``account_ids``; return those (the others were lost)."""
    if not account_ids:
        return set()
    rows = session.exec(
        update(IdleWatch)
        .where(col(IdleWatch.owner) == owner, col(IdleWatch.account_id).in_(list(account_ids)))
        .values(lease_until=utcnow() + dt.timedelta(seconds=ttl))
        .returning(col(IdleWatch.account_id))
    ).all()
    return {int(r[0]) for r in rows}


def release(session: Session, *, owner: str, account_ids: Collection[int]) -> None:
    """Give watches back (only those still ours), so another process may take them at once."""
    if account_ids:
        session.exec(
            update(IdleWatch)
            .where(col(IdleWatch.owner) == owner, col(IdleWatch.account_id).in_(list(account_ids)))
            .values(owner=None, lease_until=None)
        )


def fingerprints(session: Session, account_ids: Collection[int]) -> dict[int, str]:
    """The login fingerprint of each of these accounts that is still syncable (the others should not be watched)."""
    if not account_ids:
        return {}
    accounts = session.exec(
        select(EmailAccount).where(
            and_(col(EmailAccount.id).in_(list(account_ids)), col(EmailAccount.state).in_(SYNCABLE_STATES))
        )
    ).all()
    return {int(a.id): _fingerprint(a) for a in accounts}  # type: ignore[arg-type]


def holders(session: Session) -> dict[int, tuple[str | None, dt.datetime | None]]:
    """Every watch row: account id → (owner, lease_until), for doctor and tests."""
    rows = session.exec(select(IdleWatch.account_id, IdleWatch.owner, IdleWatch.lease_until)).all()
    return {int(a): (o, u) for a, o, u in rows}


def summary(session: Session) -> tuple[dict[str, int], int]:
    """Live watches per owner, and how many syncable accounts no live lease covers (for doctor)."""
    now = utcnow()
    rows = session.exec(
        select(IdleWatch.owner, IdleWatch.lease_until, EmailAccount.state).join(
            EmailAccount, col(EmailAccount.id) == col(IdleWatch.account_id)
        )
    ).all()
    owners: dict[str, int] = {}
    for owner, until, _state in rows:
        if owner is not None and until is not None and until >= now:
            owners[owner] = owners.get(owner, 0) + 1
    unwatched = sum(
        1
        for owner, until, state in rows
        if state in SYNCABLE_STATES and (owner is None or until is None or until < now)
    )
    never_claimed = (
        sa_select(func.count())
        .select_from(EmailAccount)
        .where(col(EmailAccount.state).in_(SYNCABLE_STATES))
        .where(~col(EmailAccount.id).in_(sa_select(col(IdleWatch.account_id))))
    )
    unwatched += int(session.scalar(never_claimed) or 0)
    return owners, unwatched
