"""A whole workspace's lifecycle: erase a team, pause a team or one deactivated person (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

from sqlmodel import col, select

from flows import setup as setup_flow
from flows.team import erase_team, pause_team, pause_user, resume_team
from models.db import session_scope
from models.tables import EmailAccount, SetupSession
from tests.support.teams import seed_team, team_rows


def states(db, team_id: str) -> dict[str, tuple[str, str | None, bool]]:
    """user -> (state, paused_reason, due) of the team's mailboxes."""
    with session_scope(db) as session:
        rows = session.exec(select(EmailAccount).where(col(EmailAccount.team_id) == team_id)).all()
        return {a.user_id: (a.state, a.paused_reason, a.next_sync_at is not None) for a in rows}


def test_erase_team_deletes_exactly_that_teams_data(db, secrets):
    seed_team(db, secrets, "T1")
    seed_team(db, secrets, "T2", users=("U1", "U3"))  # the same user id in another workspace
    before = team_rows(db, "T2")
    seeded = team_rows(db, "T1")
    assert all(seeded.values()), seeded

    counts = erase_team(db, team_id="T1")

    assert counts == {
        "accounts": 2,
        "folders": 4,
        "messages": 6,
        "sync_runs": 2,
        "setup_sessions": 2,
        "contacts": 1,
        "blocked_addresses": 2,
        "user_settings": 2,
        "installations": 1,
        "people_digests": 2,
        "ignored_addresses": 2,
    }
    assert set(team_rows(db, "T1").values()) == {0}  # locations and addresses went with the messages
    assert team_rows(db, "T2") == before
    assert erase_team(db, team_id="T1") == dict.fromkeys(counts, 0)


def test_pause_team_pauses_every_mailbox_of_that_team_only(db, secrets):
    seed_team(db, secrets, "T1", users=("U1", "U2", "U3"))
    seed_team(db, secrets, "T2")
    with session_scope(db) as session:
        by_user = {a.user_id: a for a in session.exec(select(EmailAccount).where(EmailAccount.team_id == "T1")).all()}
        by_user["U2"].state, by_user["U2"].paused_reason = "paused", "user"  # paused by its owner: stays so
        by_user["U3"].state = "disconnected"
        session.add_all(by_user.values())

    assert pause_team(db, team_id="T1") == 1

    assert states(db, "T1") == {
        "U1": ("paused", "uninstalled", False),
        "U2": ("paused", "user", True),
        "U3": ("disconnected", None, True),
    }
    assert team_rows(db, "T1")["installations"] == 0  # the Slack tokens are gone
    assert team_rows(db, "T1")["messages"] == 9  # what was synced stays
    assert states(db, "T2") == {"U1": ("active", None, True), "U2": ("active", None, True)}
    assert team_rows(db, "T2")["installations"] == 1


def test_pause_team_expires_unused_connect_links(db, secrets):
    setup_flow.start_setup(db, team_id="T1", user_id="U1")
    setup_flow.start_setup(db, team_id="T2", user_id="U1")
    pause_team(db, team_id="T1")
    with session_scope(db) as session:
        expiry = {s.team_id: s.expires_at for s in session.exec(select(SetupSession)).all()}
    now = dt.datetime.now(dt.UTC)
    assert expiry["T1"] <= now < expiry["T2"]


def test_a_deactivated_person_pauses_only_their_mailboxes(db, secrets):
    seed_team(db, secrets, "T1")
    seed_team(db, secrets, "T2")  # U1 of another workspace is someone else

    assert pause_user(db, team_id="T1", user_id="U1") == 1

    assert states(db, "T1") == {"U1": ("paused", "user_deactivated", False), "U2": ("active", None, True)}
    assert states(db, "T2") == {"U1": ("active", None, True), "U2": ("active", None, True)}
    assert team_rows(db, "T1")["installations"] == 1  # the workspace still has the app


def test_resume_team_resumes_only_what_the_uninstall_paused(db, secrets):
    seed_team(db, secrets, "T1", users=("U1", "U2"))
    seed_team(db, secrets, "T2")
    pause_user(db, team_id="T1", user_id="U2")
    pause_team(db, team_id="T1")
    pause_team(db, team_id="T2")

    assert resume_team(db, team_id="T1") == 1

    assert states(db, "T1") == {"U1": ("active", None, True), "U2": ("paused", "user_deactivated", False)}
    assert states(db, "T2") == {"U1": ("paused", "uninstalled", False), "U2": ("paused", "uninstalled", False)}
