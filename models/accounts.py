"""Queries on accounts: create, find, the sync lease with its fencing token, scheduling, runs."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, or_, update
from sqlalchemy.dialects import sqlite
from sqlmodel import Session, col, select

from models.clock import utcnow
from models.states import SYNCABLE, AccountState, RunKind, RunStatus
from models.tables import (
    BlockedAddress,
    EmailAccount,
    Folder,
    IgnoredAddress,
    Message,
    PeopleDigest,
    SchedulerHeartbeat,
    SetupSession,
    SyncRun,
    UserSettings,
)

SYNCABLE_STATES = tuple(SYNCABLE)  # the engine skips an account in any other state


def create_account(session: Session, **fields: object) -> EmailAccount:
    """Insert an account and return it with its id."""
    account = EmailAccount(**fields)  # type: ignore[arg-type]
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, account_id: int) -> EmailAccount | None:
    """One account by id, or None."""
    return session.get(EmailAccount, account_id)


def list_accounts(session: Session, *, team_id: str | None = None) -> Sequence[EmailAccount]:
    """Accounts, optionally of one team, oldest first."""
    query = select(EmailAccount).order_by(col(EmailAccount.id))
    if team_id is not None:
        query = query.where(EmailAccount.team_id == team_id)
    return session.exec(query).all()


def find_account_by_email(session: Session, *, team_id: str, user_id: str, email: str) -> EmailAccount | None:
    """The account a person already has for this address, if any."""
    return session.exec(
        select(EmailAccount).where(
            EmailAccount.team_id == team_id, EmailAccount.user_id == user_id, EmailAccount.email == email
        )
    ).first()


def delete_account(session: Session, *, account_id: int) -> None:
    """Remove an account with its folders, runs and synced mail."""
    session.exec(delete(Message).where(col(Message.account_id) == account_id))
    session.exec(delete(EmailAccount).where(col(EmailAccount.id) == account_id))


def disconnect_account(session: Session, *, account_id: int) -> None:
    """Stop syncing and forget the secret, keeping the synced mail (and its folders) readable."""
    session.exec(
        update(EmailAccount)
        .where(col(EmailAccount.id) == account_id)
        .values(
            state=AccountState.DISCONNECTED,
            secret_encrypted="",
            oauth_access_encrypted=None,
            oauth_refresh_encrypted=None,
            oauth_expires_at=None,
            next_sync_at=None,
            current_run_id=None,
        )
    )


def save_oauth_tokens(
    session: Session,
    *,
    account_id: int,
    access_encrypted: str,
    refresh_encrypted: str,
    expires_at: dt.datetime,
    scope: str,
) -> None:
    """Store refreshed tokens (already encrypted) of an OAuth account; the caller's transaction holds the lease."""
    session.exec(
        update(EmailAccount)
        .where(col(EmailAccount.id) == account_id, col(EmailAccount.auth_kind) == "oauth")
        .values(
            oauth_access_encrypted=access_encrypted,
            oauth_refresh_encrypted=refresh_encrypted,
            oauth_expires_at=expires_at,
            oauth_scope=scope,
        )
    )


def blocked_patterns(session: Session, *, team_id: str, user_id: str) -> set[str]:
    """A person's blocked addresses and domains, lower-cased."""
    rows = session.exec(
        select(BlockedAddress.pattern).where(BlockedAddress.team_id == team_id, BlockedAddress.user_id == user_id)
    ).all()
    return {r.lower() for r in rows}


def acquire_lease(session: Session, *, account_id: int, owner: str, ttl: float) -> int | None:
    """Take the account's sync lease if it is free or expired; return the new fencing token.

    A row locked by another transaction counts as taken (SKIP LOCKED, PostgreSQL; SQLite has one writer):
    a process frozen inside a transaction makes this account busy, never the caller wait.
    """
    now = utcnow()
    free = or_(col(EmailAccount.lease_owner).is_(None), col(EmailAccount.lease_until) < now)
    unlocked = (
        select(col(EmailAccount.id))
        .where(col(EmailAccount.id) == account_id, free)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.exec(
        update(EmailAccount)
        .where(col(EmailAccount.id).in_(unlocked), free)
        .values(
            lease_owner=owner,
            lease_until=now + dt.timedelta(seconds=ttl),
            lease_token=col(EmailAccount.lease_token) + 1,
        )
        .returning(col(EmailAccount.lease_token))
    )
    row = result.first()
    return int(row[0]) if row else None


def renew_lease(session: Session, *, account_id: int, owner: str, token: int, ttl: float) -> bool:
    """Extend the lease if this owner still holds it with this token (the fence every commit checks)."""
    result = session.exec(
        update(EmailAccount)
        .where(
            col(EmailAccount.id) == account_id,
            col(EmailAccount.lease_owner) == owner,
            col(EmailAccount.lease_token) == token,
        )
        .values(lease_until=utcnow() + dt.timedelta(seconds=ttl))
    )
    return bool(result.rowcount == 1)


def release_lease(session: Session, *, account_id: int, owner: str, token: int) -> None:
    """Give the lease back (only if still ours)."""
    session.exec(
        update(EmailAccount)
        .where(
            col(EmailAccount.id) == account_id,
            col(EmailAccount.lease_owner) == owner,
            col(EmailAccount.lease_token) == token,
        )
        .values(lease_owner=None, lease_until=None)
    )


def claim_due_accounts(session: Session, *, hold_seconds: float, limit: int = 100) -> list[int]:
    """Claim accounts whose next sync is due, pushing next_sync_at out so no other tick claims them (skip locked)."""
    now = utcnow()
    due = (
        select(col(EmailAccount.id))
        .where(
            col(EmailAccount.next_sync_at) <= now,
            col(EmailAccount.state).in_(SYNCABLE_STATES),
        )
        .order_by(col(EmailAccount.next_sync_at))
        .limit(limit)
        # Rows another transaction holds (a frozen process, a sync committing) wait for a later tick.
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    result = session.exec(
        update(EmailAccount)
        .where(col(EmailAccount.id).in_(due), col(EmailAccount.next_sync_at) <= now)
        .values(next_sync_at=now + dt.timedelta(seconds=hold_seconds))
        .returning(col(EmailAccount.id))
    )
    return sorted(int(r[0]) for r in result.all())


def request_sync_now(session: Session, *, account_id: int) -> None:
    """Make the account due now; if a run is going on, remember to run again right after it."""
    session.exec(
        update(EmailAccount)
        .where(col(EmailAccount.id) == account_id)
        .values(
            next_sync_at=utcnow(),
            sync_requested=col(EmailAccount.lease_owner).is_not(None),
        )
    )


def folders_of(session: Session, account_id: int) -> list[Folder]:
    """Every folder row of an account."""
    return list(session.exec(select(Folder).where(Folder.account_id == account_id).order_by(col(Folder.id))).all())


def open_run(session: Session, *, account_id: int, kind: RunKind) -> SyncRun:
    """Start a logical run."""
    run = SyncRun(account_id=account_id, kind=kind)
    session.add(run)
    session.flush()
    return run


def record_heartbeat(session: Session, *, name: str, owner: str) -> None:
    """Note that the scheduler ticked now (an upsert: several local workers may tick at the same moment)."""
    now = utcnow()
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql  # imported here, like models/mailstore.py: start-up time

        stmt = postgresql.insert(SchedulerHeartbeat)
    else:
        stmt = sqlite.insert(SchedulerHeartbeat)
    stmt = stmt.values(name=name, owner=owner, ticked_at=now).on_conflict_do_update(
        index_elements=["name"], set_={"owner": owner, "ticked_at": now}
    )
    session.exec(stmt)


def last_heartbeat(session: Session, *, name: str) -> dt.datetime | None:
    """When the scheduler last ticked, or None if never."""
    beat = session.get(SchedulerHeartbeat, name)
    return beat.ticked_at if beat else None


def message_counts(session: Session, account_ids: Sequence[int]) -> dict[int, int]:
    """Stored messages per account."""
    rows = session.exec(
        select(Message.account_id, func.count())
        .where(col(Message.account_id).in_(account_ids))
        .group_by(col(Message.account_id))
    ).all()
    return {int(a): int(n) for a, n in rows}


def accounts_of(session: Session, *, team_id: str, user_id: str) -> list[EmailAccount]:
    """One person's accounts, oldest first."""
    query = select(EmailAccount).where(col(EmailAccount.team_id) == team_id, col(EmailAccount.user_id) == user_id)
    return list(session.exec(query.order_by(col(EmailAccount.id))).all())


def current_run(session: Session, account: EmailAccount) -> SyncRun | None:
    """The account's running sync, if any."""
    run = session.get(SyncRun, account.current_run_id) if account.current_run_id else None
    return run if run is not None and run.status == RunStatus.RUNNING else None


def replace_blocked(session: Session, *, team_id: str, user_id: str, patterns: list[str]) -> None:
    """Set a person's blocked addresses and domains to exactly these."""
    session.exec(
        delete(BlockedAddress).where(col(BlockedAddress.team_id) == team_id, col(BlockedAddress.user_id) == user_id)
    )
    for pattern in patterns:
        session.add(BlockedAddress(team_id=team_id, user_id=user_id, pattern=pattern))


def delete_person_settings(session: Session, *, team_id: str, user_id: str) -> None:
    """Remove a person's general settings, blocked and ignored addresses, setup sessions and weekly digests."""
    for table in (BlockedAddress, UserSettings, SetupSession, IgnoredAddress, PeopleDigest):
        session.exec(delete(table).where(col(table.team_id) == team_id, col(table.user_id) == user_id))


def mark_sweep_pending(session: Session, *, account_id: int, pending: bool = True) -> None:
    """Remember (or forget) that messages may have lost their last location."""
    session.exec(update(EmailAccount).where(col(EmailAccount.id) == account_id).values(sweep_pending=pending))


def save_run_counts(session: Session, run: SyncRun) -> None:
    """Store a run's counters (the engine keeps them in memory between batches)."""
    session.exec(
        update(SyncRun)
        .where(col(SyncRun.id) == run.id)
        .values(
            total=max(run.total, run.processed),
            processed=run.processed,
            stored=run.stored,
            skipped=run.skipped,
            failed_messages=run.failed_messages,
        )
    )
