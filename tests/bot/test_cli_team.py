"""`emailsync team erase`, run as a real process against a SQLite file holding two teams."""

from __future__ import annotations

import json

import pytest

from models.db import make_engine, upgrade
from models.secrets import SecretBox
from tests.support.cli import cli_env, run_cli
from tests.support.slack_app import TEST_KEY
from tests.support.teams import seed_team, team_rows


@pytest.fixture
def two_teams(tmp_path):
    env = cli_env(tmp_path)
    engine = make_engine(env["DATABASE_URL"])
    upgrade(engine)
    secrets = SecretBox([TEST_KEY])
    seed_team(engine, secrets, "T1")
    seed_team(engine, secrets, "T2")
    yield env, engine
    engine.dispose()


def test_erase_asks_first_and_keeps_everything_without_a_yes(two_teams):
    env, engine = two_teams
    before = team_rows(engine, "T1")
    for answer in ("", "n\n"):
        result = run_cli(env, "team", "erase", "T1", stdin=answer)
        assert result.returncode == 2  # a refused or unanswered confirmation is a usage error
        assert "Delete every mailbox" in result.stderr and "nothing deleted" in result.stderr
        assert team_rows(engine, "T1") == before


def test_erase_after_confirming(two_teams):
    env, engine = two_teams
    other = team_rows(engine, "T2")
    result = run_cli(env, "team", "erase", "T1", stdin="y\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "team T1 erased: 2 accounts, 4 folders, 6 messages, 2 sync runs, 2 setup sessions, 1 contacts, "
        "2 blocked addresses, 2 user settings, 1 installations, 2 people digests, 2 ignored addresses"
    )
    assert set(team_rows(engine, "T1").values()) == {0}
    assert team_rows(engine, "T2") == other


def test_erase_yes_json(two_teams):
    env, engine = two_teams
    result = run_cli(env, "team", "erase", "T2", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["team"] == "T2"
    assert report["deleted"]["accounts"] == 2 and report["deleted"]["messages"] == 6
    assert report["deleted"]["installations"] == 1
    assert set(team_rows(engine, "T2").values()) == {0}
    assert team_rows(engine, "T1")["accounts"] == 2
    again = json.loads(run_cli(env, "team", "erase", "T2", "--yes", "--json").stdout)
    assert set(again["deleted"].values()) == {0}
