"""`emailsync doctor`: one function per check (database, schema, settings, each account's login)."""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from models import accounts as account_queries
from models import idle_watches
from models.db import HEAD_REVISION, schema_revision, session_scope
from models.db_errors import database_location, describe_database_error
from models.secrets import SecretBox, SecretKeyError
from models.states import AccountState
from sync.errors import SyncError
from sync.imap_session import STRICT_POLICY, account_login, imap_session
from sync.oauth import OAuthProviders
from sync.oauth_tokens import TokenKeeper
from sync.outbound import OutboundPolicy

PUBLIC_URL_TIMEOUT = 5.0  # seconds for PUBLIC_BASE_URL/healthz to answer

CheckResult = dict[str, Any]  # {name, ok, detail}: the shape `doctor --json` prints


@dataclass
class DoctorContext:
    """What the checks look at: the open database and the settings they report on."""

    db: Engine
    database_url: str
    secrets: SecretBox
    key_location: str
    backend: str
    public_base_url: str | None
    timeout: float
    outbound: OutboundPolicy = STRICT_POLICY
    oauth: OAuthProviders | None = None
    stall_seconds: float = 60.0  # procrastinate: a job whose worker is silent this long is stalled


Check = Callable[[DoctorContext], list[CheckResult]]


def run_checks(ctx: DoctorContext, *, extra: Sequence[Check] = ()) -> list[CheckResult]:
    """Every check in order; those that need the database are skipped (and say so) when it cannot be used.

    One function per check: a new one is a function here and a line in one of the lists below. ``extra``
    are checks from other layers (the Slack checks live in bot/, the only layer that talks to Slack).
    """
    checks = database_check(ctx)
    usable = checks[0]["ok"]
    if usable:
        checks += schema_check(ctx)
    for check in (secret_key_check, backend_check, *extra, public_url_check, sign_in_check):
        checks += check(ctx)
    if usable and schema_revision(ctx.db) == HEAD_REVISION:
        checks += clock_checks(ctx) + idle_watch_check(ctx) + account_checks(ctx)
    return checks


def database_check(ctx: DoctorContext) -> list[CheckResult]:
    """Does the database answer? If not, the cause (refused, unknown role or database...) and the fix."""
    try:
        schema_revision(ctx.db)
    except Exception as exc:
        cause = describe_database_error(exc, ctx.database_url)
        detail = (
            cause or f"{database_location(ctx.database_url)} cannot be used ({type(exc).__name__}); check DATABASE_URL"
        )
        return [{"name": "database", "ok": False, "detail": detail}]
    where = database_location(ctx.database_url)
    return [{"name": "database", "ok": True, "detail": f"answers ({ctx.db.dialect.name}, {where})"}]


def schema_check(ctx: DoctorContext) -> list[CheckResult]:
    """Is the schema at the newest migration?"""
    current = schema_revision(ctx.db)
    if current is None and ctx.db.dialect.name == "sqlite":  # doctor changes nothing; any other command creates it
        return [{"name": "schema", "ok": True, "detail": "not created yet: the first other command creates it"}]
    ok = current == HEAD_REVISION
    at = current or "nothing (never migrated)"
    detail = "up to date" if ok else f"at {at}, needs {HEAD_REVISION}: run `emailsync db upgrade`"
    return [{"name": "schema", "ok": ok, "detail": detail}]


def secret_key_check(ctx: DoctorContext) -> list[CheckResult]:
    """Where the key of stored secrets comes from (back that up)."""
    return [{"name": "secret key", "ok": True, "detail": f"{ctx.key_location}; back it up with the database"}]


def backend_check(ctx: DoctorContext) -> list[CheckResult]:
    """Which backend runs syncs."""
    what = {
        "local": "local (the worker's scheduler and thread pool)",
        "procrastinate": "procrastinate (PostgreSQL job queue; workers on many machines)",
    }
    return [{"name": "backend", "ok": True, "detail": what.get(ctx.backend, ctx.backend)}]


def public_url_check(ctx: DoctorContext) -> list[CheckResult]:
    """Does PUBLIC_BASE_URL answer from this host (connect links and Slack's OAuth redirect point there)?"""
    url = ctx.public_base_url
    if not url:
        return [{"name": "public URL", "ok": True, "detail": "PUBLIC_BASE_URL is not set; links point at localhost"}]
    target = url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(target, timeout=PUBLIC_URL_TIMEOUT) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code  # it answered: reachable (503 means the worker's clock is stale, which /healthz tells)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return [
            {
                "name": "public URL",
                "ok": False,
                "detail": f"{target} does not answer from this host ({reason}): is `emailsync serve` running, "
                "and does the proxy or tunnel forward to it?",
            }
        ]
    return [{"name": "public URL", "ok": True, "detail": f"{target} answers (HTTP {status})"}]


def sign_in_check(ctx: DoctorContext) -> list[CheckResult]:
    """Sign in with Google / Microsoft: on or off, and why."""
    return sign_in_checks(ctx.oauth or OAuthProviders())


def account_checks(ctx: DoctorContext) -> list[CheckResult]:
    """Each connected account's IMAP login, as a sync would do it."""
    with session_scope(ctx.db) as session:
        accounts = [a for a in account_queries.list_accounts(session) if a.state != AccountState.DISCONNECTED]
    if not accounts:
        return [{"name": "accounts", "ok": True, "detail": "none connected yet"}]
    secrets = ctx.secrets
    keeper = TokenKeeper(ctx.db, secrets, ctx.oauth or OAuthProviders())
    owner = f"doctor:{socket.gethostname()}:{os.getpid()}"
    checks: list[CheckResult] = []
    for account in accounts:
        name = f"account {account.id} ({account.email})"
        try:
            if account.auth_kind == "oauth":  # the same login as a sync: XOAUTH2, refreshed under the lease
                login = keeper.login_outside_sync(account, owner=owner)
            else:
                login = account_login(account, secrets.decrypt(account.secret_encrypted))
        except (SecretKeyError, SyncError) as exc:
            checks.append({"name": name, "ok": False, "detail": str(exc)})
            continue
        how = f" (signed in with {account.oauth_provider.capitalize()})" if account.oauth_provider else ""
        try:
            with imap_session(login, timeout=ctx.timeout, outbound=ctx.outbound) as client:
                client.noop()
            checks.append({"name": name, "ok": True, "detail": f"IMAP login to {account.imap_host} works{how}"})
        except SyncError as exc:
            checks.append({"name": name, "ok": False, "detail": str(exc)})
    return checks


def idle_watch_check(ctx: DoctorContext) -> list[CheckResult]:
    """Which worker processes watch INBOXes with IDLE (informational: polling covers what is not watched)."""
    with session_scope(ctx.db) as session:
        owners, unwatched = idle_watches.summary(session)
    held = ", ".join(f"{owner.removeprefix('idle:')} {count}" for owner, count in sorted(owners.items()))
    count = sum(owners.values())
    detail = f"{count} INBOX{'' if count == 1 else 'es'} watched" + (f" ({held})" if held else "")
    if unwatched:
        detail += f"; {unwatched} not watched by a running worker (polling covers them)"
    return [{"name": "idle watches", "ok": True, "detail": detail}]


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


def clock_checks(ctx: DoctorContext) -> list[CheckResult]:
    """On procrastinate: who holds the clock, and which jobs are stalled (the local backend has neither)."""
    if ctx.backend != "procrastinate":
        return []
    return procrastinate_checks(ctx.db, stall_seconds=ctx.stall_seconds)


def procrastinate_checks(db: Engine, *, stall_seconds: float) -> list[CheckResult]:
    """Who holds the elected clock, and which sync jobs are stalled."""
    from procrastinate import sql

    from sync.clock_election import clock_holder
    from sync.procrastinate_backend import TASK_NAME

    checks: list[CheckResult] = []
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
