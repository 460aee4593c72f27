"""OAuth tokens at rest: encrypted, never in repr, rotated with the key; a sign-in's state is one-time."""

from __future__ import annotations

import datetime as dt

from cryptography.fernet import Fernet
from sqlalchemy import text

from flows.secrets import rotate_secrets
from models import accounts as account_queries
from models import setup_sessions as setup_queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.tables import EmailAccount, SetupSession
from tests.conftest import TEST_KEY

ACCESS = "ya29.a0-ACCESS-TOKEN-IN-CLEAR"
REFRESH = "1//0-REFRESH-TOKEN-IN-CLEAR"


def _oauth_account(db, box: SecretBox) -> int:
    with session_scope(db) as session:
        account = account_queries.create_account(
            session,
            team_id="T1",
            user_id="U1",
            email="ann@example.com",
            imap_host="imap.gmail.com",
            username="ann@example.com",
            secret_encrypted="",
            auth_kind="oauth",
            oauth_provider="google",
            oauth_access_encrypted=box.encrypt(ACCESS),
            oauth_refresh_encrypted=box.encrypt(REFRESH),
            oauth_expires_at=utcnow() + dt.timedelta(hours=1),
            oauth_scope="https://mail.google.com/ openid email",
        )
        assert account.id is not None
        return account.id


def test_tokens_are_encrypted_rotated_and_never_shown(db) -> None:
    box = SecretBox([TEST_KEY])
    account_id = _oauth_account(db, box)
    with session_scope(db) as session:
        setup_queries.create_session(
            session,
            SetupSession(
                team_id="T1",
                user_id="U1",
                token_hash="h" * 64,
                expires_at=utcnow() + dt.timedelta(minutes=15),
                oauth_state_hash="s" * 64,
                oauth_flow_encrypted=box.encrypt('{"verifier": "PKCE-VERIFIER-IN-CLEAR"}'),
            ),
        )
        account = account_queries.get_account(session, account_id)
        setup = setup_queries.sign_ins_in_progress(session)[0]
        shown = repr(account) + repr(setup)
    for secret in (ACCESS, REFRESH, "PKCE-VERIFIER", box.decrypt(account.oauth_access_encrypted or "")):
        assert secret not in shown
    with db.connect() as conn:
        raw = " ".join(
            str(v)
            for table in ("email_account", "setup_session")
            for row in conn.execute(text(f"SELECT * FROM {table}")).mappings()
            for v in row.values()
        )
    assert ACCESS not in raw and REFRESH not in raw and "PKCE-VERIFIER" not in raw

    new_key = Fernet.generate_key().decode()
    assert rotate_secrets(db, SecretBox([new_key, TEST_KEY])) == 3  # access, refresh, the sign-in in progress
    only_new = SecretBox([new_key])
    with session_scope(db) as session:
        account = account_queries.get_account(session, account_id)
        assert only_new.decrypt(account.oauth_access_encrypted or "") == ACCESS
        assert only_new.decrypt(account.oauth_refresh_encrypted or "") == REFRESH
        flow = setup_queries.sign_ins_in_progress(session)[0]
        assert "PKCE-VERIFIER-IN-CLEAR" in only_new.decrypt(flow.oauth_flow_encrypted or "")

    # Disconnecting forgets the tokens with the password.
    with session_scope(db) as session:
        account_queries.disconnect_account(session, account_id=account_id)
    with session_scope(db) as session:
        account = account_queries.get_account(session, account_id)
        assert (account.oauth_access_encrypted, account.oauth_refresh_encrypted) == (None, None)


def test_a_sign_in_state_works_once(db) -> None:
    with session_scope(db) as session:
        row = setup_queries.create_session(
            session,
            SetupSession(
                team_id="T1", user_id="U1", token_hash="h" * 64, expires_at=utcnow() + dt.timedelta(minutes=1)
            ),
        )
        assert row.id is not None
        setup_queries.arm_sign_in(session, row.id, state_hash="a" * 64, flow_encrypted="sealed")
    with session_scope(db) as session:
        assert setup_queries.consume_sign_in(session, "b" * 64) is None
        found = setup_queries.consume_sign_in(session, "a" * 64)
        assert found is not None and found.id == row.id and found.oauth_state_hash is None
        assert found.oauth_flow_encrypted == "sealed"  # kept until the sign-in ends
    with session_scope(db) as session:
        assert setup_queries.consume_sign_in(session, "a" * 64) is None  # replayed
        setup_queries.end_sign_in(session, row.id)
    with session_scope(db) as session:
        assert setup_queries.sign_ins_in_progress(session) == []


def test_password_accounts_are_password_accounts(db) -> None:
    with session_scope(db) as session:
        account = account_queries.create_account(
            session, team_id="T", user_id="U", email="a@x", imap_host="h", username="a@x", secret_encrypted="s"
        )
    with db.connect() as conn:
        kind = conn.execute(text("SELECT auth_kind FROM email_account WHERE id = :id"), {"id": account.id}).scalar()
    assert kind == "password" and isinstance(account, EmailAccount)


def test_abandoned_sign_ins_are_forgotten_when_their_link_expires(db) -> None:
    from models.retention import forget_abandoned_sign_ins

    with session_scope(db) as session:
        for minutes in (-1, 10):  # one link expired a minute ago, one still good
            row = setup_queries.create_session(
                session,
                SetupSession(
                    team_id="T1",
                    user_id=f"U{minutes}",
                    token_hash=f"{minutes}".ljust(64, "h"),
                    expires_at=utcnow() + dt.timedelta(minutes=minutes),
                ),
            )
            assert row.id is not None
            setup_queries.arm_sign_in(session, row.id, state_hash=f"{minutes}".ljust(64, "s"), flow_encrypted="x")
    with session_scope(db) as session:
        assert forget_abandoned_sign_ins(session) == 1
    with session_scope(db) as session:
        assert [s.user_id for s in setup_queries.sign_ins_in_progress(session)] == ["U10"]
