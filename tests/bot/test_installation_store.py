"""The installation and OAuth state stores over the project's database (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

from cryptography.fernet import Fernet
from slack_sdk.oauth.installation_store import Installation
from sqlalchemy import text

from bot.installation_store import DbInstallationStore, DbOAuthStateStore
from flows.secrets import rotate_secrets
from models.secrets import SecretBox
from tests.support.slack_app import TEST_KEY

BOT_TOKEN = "xoxe.xoxb-1-secret-bot-token"
REFRESH_TOKEN = "xoxe-1-secret-refresh-token"
USER_TOKEN = "xoxp-secret-user-token"


def installation(team_id: str = "T1", user_id: str = "U1", **fields) -> Installation:
    values = {
        "app_id": "A1",
        "team_id": team_id,
        "team_name": "Team",
        "bot_token": BOT_TOKEN,
        "bot_id": "B1",
        "bot_user_id": "UBOT",
        "bot_scopes": "commands,chat:write",
        "bot_refresh_token": REFRESH_TOKEN,
        "bot_token_expires_in": 43200,
        "user_id": user_id,
        "user_token": USER_TOKEN,
        "token_type": "bot",
        **fields,
    }
    return Installation(**values)


def raw_rows(db) -> str:
    with db.connect() as conn:
        return repr(conn.execute(text("SELECT * FROM slack_installation")).all())


def test_tokens_are_encrypted_at_rest_and_come_back(db, secrets):
    store = DbInstallationStore(db, secrets)
    store.save(installation())
    rows = raw_rows(db)
    for token in (BOT_TOKEN, REFRESH_TOKEN, USER_TOKEN):
        assert token not in rows
    assert "T1" in rows and "UBOT" in rows  # the ids are there, in the clear
    found = store.find_installation(enterprise_id=None, team_id="T1")
    assert found is not None
    assert (found.bot_token, found.bot_refresh_token, found.user_token) == (BOT_TOKEN, REFRESH_TOKEN, USER_TOKEN)
    assert found.bot_scopes == ["commands", "chat:write"] and found.bot_id == "B1"
    assert abs(found.bot_token_expires_at - (time.time() + 43200)) < 60
    bot = store.find_bot(enterprise_id=None, team_id="T1")
    assert bot is not None and bot.bot_token == BOT_TOKEN and bot.bot_refresh_token == REFRESH_TOKEN
    assert "secret" not in repr(store) and "secret" not in repr(store.db)
    assert store.find_installation(enterprise_id=None, team_id="T2") is None


def test_a_refresh_updates_the_row_and_the_newest_installer_wins(db, secrets):
    store = DbInstallationStore(db, secrets)
    store.save(installation(user_id="U1", installed_at=time.time() - 60))
    store.save(installation(user_id="U2", bot_token="xoxb-second"))
    assert store.find_installation(enterprise_id=None, team_id="T1").bot_token == "xoxb-second"
    assert store.find_installation(enterprise_id=None, team_id="T1", user_id="U1").bot_token == BOT_TOKEN
    refreshed = store.find_installation(enterprise_id=None, team_id="T1", user_id="U2")
    refreshed.bot_token = "xoxb-refreshed"
    store.save(refreshed)
    assert store.find_installation(enterprise_id=None, team_id="T1").bot_token == "xoxb-refreshed"
    with db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM slack_installation")).scalar() == 2


def test_deleting(db, secrets):
    store = DbInstallationStore(db, secrets)
    store.save(installation("T1"))
    store.save(installation("T2"))
    store.delete_bot(enterprise_id=None, team_id="T1")
    assert store.find_bot(enterprise_id=None, team_id="T1") is None
    assert store.find_installation(enterprise_id=None, team_id="T1").user_token == USER_TOKEN
    store.delete_all(enterprise_id=None, team_id="T1")
    assert store.find_installation(enterprise_id=None, team_id="T1") is None
    assert store.find_bot(enterprise_id=None, team_id="T2").bot_token == BOT_TOKEN


def test_org_wide_install_is_found_by_its_enterprise(db, secrets):
    store = DbInstallationStore(db, secrets)
    store.save(installation("T1", enterprise_id="E1", is_enterprise_install=True))
    found = store.find_installation(enterprise_id="E1", team_id="T9", is_enterprise_install=True)
    assert found is not None and found.team_id is None and found.bot_token == BOT_TOKEN
    assert store.find_installation(enterprise_id=None, team_id="T1") is None


def test_secrets_rotate_reencrypts_installation_tokens(db, secrets):
    DbInstallationStore(db, secrets).save(installation())
    new_key = Fernet.generate_key().decode()
    both = SecretBox([new_key, TEST_KEY])
    assert rotate_secrets(db, both) == 3  # bot token, its refresh token, the user token
    only_new = DbInstallationStore(db, SecretBox([new_key]))
    found = only_new.find_installation(enterprise_id=None, team_id="T1")
    assert (found.bot_token, found.bot_refresh_token, found.user_token) == (BOT_TOKEN, REFRESH_TOKEN, USER_TOKEN)


def test_oauth_state_is_single_use_and_expires(db):
    states = DbOAuthStateStore(db)
    state = states.issue()
    assert states.consume(state) is True
    assert states.consume(state) is False
    assert states.consume("never-issued") is False
    assert states.consume("") is False
    stale = DbOAuthStateStore(db, expiration_seconds=-1).issue()
    assert states.consume(stale) is False
