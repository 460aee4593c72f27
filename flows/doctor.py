"""`emailsync doctor`: checks of the database, the schema, the secret key and each account's login."""

from __future__ import annotations

import os
import socket
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlmodel import Session

from models import accounts as account_queries
from models import idle_watches
from models.db import alembic_config, ping, session_scope
from models.secrets import SecretBox, SecretKeyError
from sync.errors import SyncError
from sync.imap_session import STRICT_POLICY, account_login, imap_session
from sync.oauth import OAuthProviders
from sync.oauth_tokens import TokenKeeper
from sync.outbound import OutboundPolicy


def run_checks(
    db: Engine,
    secrets: SecretBox,
    *,
    timeout: float,
    outbound: OutboundPolicy = STRICT_POLICY,
    oauth: OAuthProviders | None = None,
) -> list[dict[str, Any]]:
    """Every check as {name, ok, detail}; stops early only when the database does not answer."""
    checks: list[dict[str, Any]] = []
    if not ping(db):
        return [{"name": "database", "ok": False, "detail": "does not answer; check DATABASE_URL"}]
    checks.append({"name": "database", "ok": True, "detail": f"answers ({db.dialect.name})"})
    checks += sign_in_checks(oauth or OAuthProviders())
    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    with db.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    checks.append(
        {
            "name": "schema",
            "ok": current == head,
            "detail": "up to date" if current == head else f"at {current}, needs {head}: run `emailsync db upgrade`",
        }
    )
    if current != head:
        return checks
    with session_scope(db) as session:
        accounts = [a for a in account_queries.list_accounts(session) if a.state != "disconnected"]
        checks.append(idle_watch_check(session))
    keeper = TokenKeeper(db, secrets, oauth or OAuthProviders())
    owner = f"doctor:{socket.gethostname()}:{os.getpid()}"
    for account in accounts:
        name = f"account {account.id} ({account.email})"
        try:
            if account.auth_kind == "oauth":  # the same login as a sync: XOAUTH2, refreshed under the lease
                login = keeper.login_outside_sync(account, owner=owner)
            else:
                login = account_login(account, secrets.decrypt(account.secret_encrypted))
        except SecretKeyError as exc:
            checks.append({"name": name, "ok": False, "detail": str(exc)})
            continue
        except SyncError as exc:
            checks.append({"name": name, "ok": False, "detail": str(exc)})
            continue
        how = f" (signed in with {account.oauth_provider.capitalize()})" if account.oauth_provider else ""
        try:
            with imap_session(login, timeout=timeout, outbound=outbound) as client:
                client.noop()
            checks.append({"name": name, "ok": True, "detail": f"IMAP login to {account.imap_host} works{how}"})
        except SyncError as exc:
            checks.append({"name": name, "ok": False, "detail": str(exc)})
    return checks


def idle_watch_check(session: Session) -> dict[str, Any]:
    """Which worker processes watch INBOXes with IDLE (informational: polling covers what is not watched)."""
    owners, unwatched = idle_watches.summary(session)
    held = ", ".join(f"{owner.removeprefix('idle:')} {count}" for owner, count in sorted(owners.items()))
    count = sum(owners.values())
    detail = f"{count} INBOX{'' if count == 1 else 'es'} watched" + (f" ({held})" if held else "")
    if unwatched:
        detail += f"; {unwatched} not watched by a running worker (polling covers them)"
    return {"name": "idle watches", "ok": True, "detail": detail}


def sign_in_checks(oauth: OAuthProviders) -> list[dict[str, Any]]:
    """One check per sign-in provider: on (its discovery document answers) or off, and why."""
    checks: list[dict[str, Any]] = []
    for provider in oauth.configured():
        name = f"sign in with {provider.display_name}"
        try:
            meta = oauth.metadata(provider)
        except SyncError as exc:
            checks.append({"name": name, "ok": False, "detail": f"on, but {provider.discovery_url}: {exc}"})
            continue
        detail = f"on: discovery answers (issuer {meta.issuer}); IMAP {provider.imap}, SMTP {provider.smtp}"
        checks.append({"name": name, "ok": True, "detail": detail})
    for provider_name, reason in oauth.missing.items():
        # Neither id nor secret: the operator chose not to offer it. Only one of the two: a mistake.
        partial = reason.endswith(" is not set")
        name = f"sign in with {provider_name.capitalize()}"
        checks.append({"name": name, "ok": not partial, "detail": f"off: {reason}"})
    return checks
