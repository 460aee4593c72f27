"""An account signed in with Google or Microsoft is watched over XOAUTH2, with a stale access token refreshed first."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import Engine

from models import accounts as account_queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from sync.engine import EngineConfig, EngineDeps
from sync.idle import IdleWatcher
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY
from tests.support.signin import SignInStack, providers_of
from tests.sync.test_idle import Triggers, wait_for

ANN = "ann.idle@example.com"


@pytest.fixture
def stack(stack: SignInStack) -> SignInStack:
    """This flavour's stack with Ann's mailbox in its Dovecot."""
    stack.dovecot.add_mailbox(ANN)
    return stack


def _oauth_account(db: Engine, box: SecretBox, stack: SignInStack, *, expires_in: float) -> int:
    tokens = stack.idp.issue_tokens(ANN)
    with session_scope(db) as session:
        account = account_queries.create_account(
            session,
            team_id="T1",
            user_id="U1",
            email=ANN,
            imap_host="127.0.0.1",
            imap_port=stack.dovecot.imaps_port,
            username=ANN,
            secret_encrypted="",
            auth_kind="oauth",
            oauth_provider=stack.name,
            oauth_access_encrypted=box.encrypt(tokens["access_token"]),
            oauth_refresh_encrypted=box.encrypt(tokens["refresh_token"]),
            oauth_expires_at=utcnow() + dt.timedelta(seconds=expires_in),
            oauth_scope=tokens.get("scope", ""),
        )
        assert account.id is not None
        return account.id


def test_an_oauth_account_is_watched_with_a_refreshed_token(sqlite_db, secrets, notifier, stack):
    config = EngineConfig(
        timeout=10, ssl_context=stack.dovecot.ssl_context, outbound=LOOPBACK_POLICY, oauth=providers_of(stack)
    )
    deps = EngineDeps(db=sqlite_db, secrets=secrets, notifier=notifier, config=config, owner="test-oauth")
    # Stored token already expired: the watch refreshes it (under the borrowed sync lease) before logging in.
    account = _oauth_account(sqlite_db, secrets, stack, expires_in=-5)
    triggers = Triggers()
    watcher = IdleWatcher(deps, triggers, lease_ttl=6.0).start()
    try:
        wait_for(lambda: watcher.states().get(account) == "idling", what="the OAuth watch idles")
        with session_scope(sqlite_db) as session:
            refreshed = account_queries.get_account(session, account)
            assert refreshed is not None and refreshed.oauth_expires_at > utcnow()
            assert refreshed.lease_owner is None  # the borrowed sync lease was given back
        client = stack.dovecot.oauth2_client(ANN, stack.idp.issue_tokens(ANN)["access_token"])
        try:
            client.append("INBOX", make_message(subject="over xoauth2"))
        finally:
            client.logout()
        wait_for(lambda: triggers.count(account) == 1, timeout=10, what="a trigger after delivery")
        time.sleep(1.5)
        assert triggers.count(account) == 1
    finally:
        watcher.stop()
