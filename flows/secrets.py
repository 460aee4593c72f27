"""Re-encrypting every stored secret with the newest key (`emailsync secrets rotate`)."""

from __future__ import annotations

from sqlalchemy import Engine

from models import accounts as account_queries
from models import installations as installation_queries
from models.db import session_scope
from models.secrets import SecretBox


def rotate_secrets(db: Engine, secrets: SecretBox) -> int:
    """Re-encrypt each stored secret with the newest key; return how many were rewritten."""
    count = 0
    with session_scope(db) as session:
        for account in account_queries.list_accounts(session):
            if account.secret_encrypted:
                account.secret_encrypted = secrets.rotate(account.secret_encrypted)
                session.add(account)
                count += 1
        for installation in installation_queries.all_installations(session):  # Slack tokens of OAuth installs
            for column in installation_queries.TOKEN_COLUMNS:
                sealed = getattr(installation, column)
                if sealed:
                    setattr(installation, column, secrets.rotate(sealed))
                    count += 1
            session.add(installation)
    return count
