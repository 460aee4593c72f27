"""The account states, sync run kinds and run statuses, and the one table of allowed account state changes.

The columns stay plain strings (no migration): a StrEnum member is equal to its value, so rows read back
as `str` compare with the members, and members are written as their values.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol


class AccountState(StrEnum):
    """Where a mailbox stands."""

    CONNECTING = "connecting"  # a setup is under way: tested, not synced yet
    ACTIVE = "active"  # syncs on its schedule
    SYNCING = "syncing"  # a run holds it now
    PAUSED = "paused"  # by its owner, an uninstall or a deactivation (paused_reason says which)
    NEEDS_REAUTH = "needs_reauth"  # the server refused the login: only a reconnect helps
    ERROR = "error"  # the last run failed; retried with backoff
    DISCONNECTED = "disconnected"  # the secret is gone; the synced mail may remain


class RunKind(StrEnum):
    """What a sync run does."""

    PAST = "past"  # the first run: new mail and the chosen past window
    INCREMENTAL = "incremental"  # a poll: what changed since the last run
    WIDEN = "widen"  # the window was widened: the extra past part


class RunStatus(StrEnum):
    """Where a sync run stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


S = AccountState
# Every change an account's state may make (staying in the same state is always allowed). A reconnect moves
# any state to ACTIVE: the connection was just tested, and every setting is kept.
TRANSITIONS: dict[AccountState, frozenset[AccountState]] = {
    S.CONNECTING: frozenset({S.ACTIVE, S.DISCONNECTED}),  # setup finished, or given up
    S.ACTIVE: frozenset({S.SYNCING, S.PAUSED, S.ERROR, S.NEEDS_REAUTH, S.DISCONNECTED}),
    S.SYNCING: frozenset({S.ACTIVE, S.PAUSED, S.ERROR, S.NEEDS_REAUTH, S.DISCONNECTED}),
    S.ERROR: frozenset({S.SYNCING, S.ACTIVE, S.PAUSED, S.NEEDS_REAUTH, S.DISCONNECTED}),  # ACTIVE: reconnected
    S.NEEDS_REAUTH: frozenset({S.ACTIVE, S.PAUSED, S.DISCONNECTED}),  # ACTIVE: reconnected
    S.PAUSED: frozenset({S.ACTIVE, S.DISCONNECTED}),  # resumed or reconnected, or disconnected
    S.DISCONNECTED: frozenset({S.ACTIVE}),  # Reconnect gives a kept (disconnected) mailbox its secret back
}
# States a scheduler may start a run in.
SYNCABLE: frozenset[AccountState] = frozenset({S.ACTIVE, S.SYNCING, S.ERROR})


class IllegalTransition(ValueError):
    """A state change the table does not allow (a bug in the caller, never a person's mistake)."""


class HasState(Protocol):
    """Anything with a state column (an EmailAccount row)."""

    state: str


def can_move(current: str, new: AccountState) -> bool:
    """True when an account in `current` may move to `new`."""
    return current == new or new in TRANSITIONS[AccountState(current)]


def may_become(new: AccountState) -> frozenset[AccountState]:
    """The states from which an account may move to `new` (itself included), for bulk SQL updates."""
    return frozenset({new} | {state for state, targets in TRANSITIONS.items() if new in targets})


def move(account: HasState, new: AccountState) -> None:
    """Set the account's state, refusing a change the table does not allow."""
    if not can_move(account.state, new):
        raise IllegalTransition(f"an account cannot go from {account.state} to {new}")
    account.state = new
