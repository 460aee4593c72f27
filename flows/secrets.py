"""Re-encrypting every stored secret with the newest key (`emailsync secrets rotate`)."""

from __future__ import annotations

from sqlalchemy import Engine

from models import accounts as account_queries
from models import installations as installation_queries
from models import setup_sessions as setup_queries
from models.db import session_scope
from models.secrets import SecretBox


def rotate_secrets(db: Engine, secrets: SecretBox) -> int:
    """Re-encrypt each stored secret with the newest key; return how many were rewritten."""
    count = 0
    with session_scope(db) as session:
        for account in account_queries.list_accounts(session):
            for column in ("secret_encrypted", "oauth_access_encrypted", "oauth_refresh_encrypted"):
                sealed = getattr(account, column)
                if sealed:
                    setattr(account, column, secrets.rotate(sealed))
                    count += 1
            session.add(account)
        for setup in setup_queries.sign_ins_in_progress(session):  # a sign-in's verifier or pending tokens
            setup.oauth_flow_encrypted = secrets.rotate(setup.oauth_flow_encrypted or "")
            session.add(setup)
            count += 1
        for installation in installation_queries.all_installations(session):  # Slack tokens of OAuth installs
            for column in installation_queries.TOKEN_COLUMNS:
                sealed = getattr(installation, column)
                if sealed:
                    setattr(installation, column, secrets.rotate(sealed))
                    count += 1
            session.add(installation)
    return count
