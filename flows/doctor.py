"""`emailsync doctor`: checks of the database, the schema, the secret key and each account's login."""

from __future__ import annotations

import os
import socket
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from models import accounts as account_queries
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
    backend: str = "local",
    stall_seconds: float = 60.0,
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
    checks += backend_checks(db, backend, stall_seconds=stall_seconds)
    with session_scope(db) as session:
        accounts = [a for a in account_queries.list_accounts(session) if a.state != "disconnected"]
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


def backend_checks(db: Engine, backend: str, *, stall_seconds: float) -> list[dict[str, Any]]:
    """The sync backend; on procrastinate also who holds the clock and which jobs are stalled."""
    if backend != "procrastinate":
        return [{"name": "backend", "ok": True, "detail": "local: `serve` or `worker` ticks and syncs on this machine"}]
    from procrastinate import sql

    from sync.clock_election import clock_holder
    from sync.procrastinate_backend import TASK_NAME

    checks: list[dict[str, Any]] = [{"name": "backend", "ok": True, "detail": "procrastinate (many machines)"}]
    holder = clock_holder(db)
    if holder is None:
        detail = "nobody holds it: nothing ticks; start `emailsync worker --clock` on at least one machine"
        checks.append({"name": "clock", "ok": False, "detail": detail})
    else:
        detail = f"held by {holder['owner']} ({holder['address']}, connected since {holder['since']})"
        checks.append({"name": "clock", "ok": True, "detail": detail})
    with db.connect() as conn:
        params = {"queue": None, "task_name": TASK_NAME, "seconds_since_heartbeat": stall_seconds}
        rows = conn.exec_driver_sql(sql.queries["select_stalled_jobs_by_heartbeat"], params).all()
    stalled = [f"job {r.id} (account {r.args.get('account_id')}, worker {r.worker_id})" for r in rows]
    detail = (
        "none"
        if not stalled
        else f"{', '.join(stalled[:10])}: the clock finishes them as failed within EMAILSYNC_CLOCK_SECONDS"
    )
    checks.append({"name": "stalled jobs", "ok": not stalled, "detail": detail})
    return checks
