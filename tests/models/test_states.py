"""The account state table: every change the code makes is allowed, the others are refused."""

from __future__ import annotations

import pytest

from models.states import (
    SYNCABLE,
    TRANSITIONS,
    AccountState,
    IllegalTransition,
    RunKind,
    RunStatus,
    can_move,
    may_become,
    move,
)

S = AccountState


class Row:
    """A stand-in with a plain-string state column, as rows are read back."""

    def __init__(self, state: str) -> None:
        self.state = state


def test_every_state_has_a_row_and_members_equal_their_stored_strings() -> None:
    assert set(TRANSITIONS) == set(AccountState)
    assert S.NEEDS_REAUTH == "needs_reauth" and f"{S.PAUSED}" == "paused"
    assert RunKind.PAST == "past" and RunStatus.RUNNING == "running"


@pytest.mark.parametrize(
    ("current", "new"),
    [
        # the engine: a run starts, goes on, ends, or fails
        *[(s, S.SYNCING) for s in SYNCABLE],
        (S.SYNCING, S.ACTIVE),
        (S.SYNCING, S.ERROR),
        (S.SYNCING, S.NEEDS_REAUTH),
        # setup finishes; a reconnect, from whatever made it needed
        (S.CONNECTING, S.ACTIVE),
        (S.NEEDS_REAUTH, S.ACTIVE),
        (S.ERROR, S.ACTIVE),
        (S.PAUSED, S.ACTIVE),
        (S.DISCONNECTED, S.ACTIVE),  # a kept mailbox, reconnected from its Home card
        # the owner, an uninstall, a deactivation
        (S.ACTIVE, S.PAUSED),
        (S.NEEDS_REAUTH, S.PAUSED),
        (S.PAUSED, S.PAUSED),
        *[(s, S.DISCONNECTED) for s in AccountState],
    ],
)
def test_the_changes_the_code_makes_are_allowed(current: AccountState, new: AccountState) -> None:
    row = Row(str(current))
    move(row, new)
    assert row.state == new


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.DISCONNECTED, S.SYNCING),  # no secret: only a reconnect brings it back
        (S.DISCONNECTED, S.PAUSED),
        (S.CONNECTING, S.PAUSED),  # nothing to pause before the first sync
        (S.CONNECTING, S.SYNCING),  # no run before the setup is finished
        (S.NEEDS_REAUTH, S.SYNCING),  # the login is refused: only a reconnect helps
        (S.PAUSED, S.SYNCING),
        (S.ACTIVE, S.CONNECTING),
    ],
)
def test_an_illegal_change_is_refused_and_leaves_the_state(current: AccountState, new: AccountState) -> None:
    row = Row(str(current))
    with pytest.raises(IllegalTransition, match=f"from {current} to {new}"):
        move(row, new)
    assert row.state == current and not can_move(current, new)


def test_an_unknown_stored_state_is_an_error_not_a_silent_yes() -> None:
    with pytest.raises(ValueError):
        can_move("frozen", S.ACTIVE)


def test_may_become_lists_the_sources_for_bulk_updates() -> None:
    assert may_become(S.PAUSED) == {S.ACTIVE, S.SYNCING, S.ERROR, S.NEEDS_REAUTH, S.PAUSED}
    assert may_become(S.CONNECTING) == {S.CONNECTING}


def test_members_are_stored_and_read_back_as_plain_strings(db) -> None:
    """On SQLite and PostgreSQL alike (psycopg binds a StrEnum as its string value)."""
    from models.db import session_scope
    from models.tables import EmailAccount

    engine = db
    with session_scope(engine) as session:
        row = EmailAccount(team_id="T", user_id="U", email="a@b.test", imap_host="h", username="u", secret_encrypted="")
        move(row, S.PAUSED)
        session.add(row)
        session.flush()
        account_id = row.id
    with session_scope(engine) as session:
        stored = session.get(EmailAccount, account_id)
        assert stored is not None and type(stored.state) is str and stored.state == S.PAUSED
