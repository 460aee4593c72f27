"""Sync accounts now, each to completion (waiting out a sync running elsewhere): `emailsync sync`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine

from models import accounts as account_queries
from models.db import session_scope
from sync.engine import EngineDeps, Outcome, sync_account

BUSY_POLL_SECONDS = 0.5  # how often to look again at an account another process is syncing


class NoSuchAccount(Exception):
    """The account id asked for is not in the database."""


@dataclass(frozen=True)
class AccountSynced:
    """How one account's sync ended, with its state afterwards and, when it failed, why."""

    account_id: int
    outcome: Outcome
    state: str
    error: str | None

    @property
    def failed(self) -> bool:
        """True when the sync failed or another process held the account longer than we waited."""
        return self.outcome in (Outcome.FAILED, Outcome.BUSY)


def accounts_to_sync(db: Engine, account_id: int | None = None) -> list[int]:
    """The one account asked for (NoSuchAccount when unknown), else every account in a syncable state."""
    with session_scope(db, readonly=True) as session:
        if account_id is not None:
            if account_queries.get_account(session, account_id) is None:
                raise NoSuchAccount(f"no account {account_id}")
            return [account_id]
        return [
            a.id
            for a in account_queries.list_accounts(session)
            if a.id is not None and a.state in account_queries.SYNCABLE_STATES
        ]


def sync_to_completion(
    deps: EngineDeps,
    account_id: int,
    *,
    wait_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> AccountSynced:
    """Run slices until the run ends; an account another process syncs is waited for up to ``wait_seconds``."""
    deadline = clock() + wait_seconds
    while True:
        outcome = sync_account(deps, account_id)
        if outcome is Outcome.BUSY and clock() < deadline:
            sleep(BUSY_POLL_SECONDS)  # another process is syncing it; sync again once it is done
            continue
        if outcome is not Outcome.MORE:
            break
    with session_scope(deps.db, readonly=True) as session:
        row = account_queries.get_account(session, account_id)
        state = row.state if row else "gone"
        error = row.last_error_message if row and outcome is Outcome.FAILED else None
    return AccountSynced(account_id, outcome, state, error)


def sync_now(deps: EngineDeps, account_ids: list[int], *, wait_seconds: float) -> Iterator[AccountSynced]:
    """Sync each account to completion, one after another, yielding each result as it ends."""
    for account_id in account_ids:
        yield sync_to_completion(deps, account_id, wait_seconds=wait_seconds)
