"""The `emailsync` command line for operators: accounts, contacts, sync, worker, serve, export, secrets, doctor."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, cast

import typer

from bot.services import Services, build_services
from bot.settings import ConfigError, load_settings
from bot.worker import MetricsPortUnavailable, run_worker, stop_on_signals
from flows import accounts as account_flows
from flows import contacts as contact_flows
from flows.export import export_messages
from flows.secrets import rotate_secrets
from flows.team import erase_team
from models import accounts as account_queries
from models.db import session_scope, upgrade
from models.secrets import SecretKeyError
from sync.engine import Outcome, sync_account
from sync.errors import SyncError
from sync.imap_session import ImapLogin, Security
from sync.oauth_tokens import GrantRevoker
from sync.smtp_check import SmtpLogin

app = typer.Typer(add_completion=False, no_args_is_help=True, help="emailsync: CRM-style email sync for Slack.")
account_app = typer.Typer(no_args_is_help=True, help="Connect, list and remove mailboxes.")
contacts_app = typer.Typer(no_args_is_help=True, help="The team's CRM contacts.")
messages_app = typer.Typer(no_args_is_help=True, help="Synced messages.")
secrets_app = typer.Typer(no_args_is_help=True, help="Encryption keys of stored secrets.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
team_app = typer.Typer(no_args_is_help=True, help="Whole Slack workspaces (teams).")
app.add_typer(account_app, name="account")
app.add_typer(contacts_app, name="contacts")
app.add_typer(messages_app, name="messages")
app.add_typer(secrets_app, name="secrets")
app.add_typer(db_app, name="db")
app.add_typer(team_app, name="team")

EXIT_FAILURE = 1
EXIT_USAGE = 2


def main() -> None:
    """Entry point of the console script."""
    app()


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"emailsync: {message}", err=True)
    raise typer.Exit(code)


def _services(*, migrate: bool = True, log_level: int = logging.WARNING) -> Services:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per tick drowns what matters
    try:
        return build_services(load_settings(), migrate=migrate)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


# ---- account ---------------------------------------------------------------------------------------


@account_app.command("add")
def account_add(
    team: str = typer.Option(..., "--team", help="Slack team id"),
    user: str = typer.Option(..., "--user", help="Slack user id of the owner"),
    email: str = typer.Option(..., "--email"),
    imap_host: str = typer.Option(..., "--imap-host"),
    imap_port: int = typer.Option(993, "--imap-port"),
    imap_security: str = typer.Option("tls", "--imap-security", help="tls or starttls"),
    username: str | None = typer.Option(None, "--username", help="defaults to the email address"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from standard input"),
    smtp_host: str | None = typer.Option(None, "--smtp-host"),
    smtp_port: int | None = typer.Option(None, "--smtp-port"),
    smtp_security: str | None = typer.Option(None, "--smtp-security", help="tls or starttls"),
    sync_mode: str = typer.Option("all", "--sync", help="all or labels"),
    folder: list[str] = typer.Option([], "--folder", help="a folder to sync; repeat; implies --sync labels"),
    start: str = typer.Option("now", "--start", help="now, 1m, 3m, 6m, 1y or YYYY-MM-DD"),
    scope: str = typer.Option("all", "--scope", help="past mail from all people or only CRM contacts"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Test the login, then connect a mailbox; prints the new account's id."""
    if not password_stdin:
        _fail("the password is read from standard input only: pass --password-stdin", EXIT_USAGE)
    for name, value in (("--imap-security", imap_security), ("--smtp-security", smtp_security or "tls")):
        if value not in ("tls", "starttls"):
            _fail(f"{name} must be tls or starttls, not {value!r}", EXIT_USAGE)
    imap_sec = cast(Security, imap_security)  # validated just above
    smtp_sec = cast(Security, smtp_security or "tls")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        _fail("no password on standard input", EXIT_USAGE)
    services = _services()
    login_name = username or email
    smtp = None
    if smtp_host:
        default_smtp_port = 465 if smtp_sec == "tls" else 587
        smtp = SmtpLogin(smtp_host, smtp_port or default_smtp_port, smtp_sec, login_name, password)
    draft = account_flows.AccountDraft(
        team_id=team,
        user_id=user,
        email=email,
        imap=ImapLogin(imap_host, imap_port, imap_sec, login_name, password),
        smtp=smtp,
        sync_mode="labels" if folder else sync_mode,
        folders=tuple(folder),
        start=start,
        contact_scope=scope,
    )
    try:
        account_id = account_flows.add_account(
            services.db,
            services.secrets,
            draft,
            timeout=services.settings.imap_timeout,
            outbound=services.settings.outbound_policy,
        )
    except account_flows.FieldError as exc:
        _fail(exc.message, EXIT_USAGE)
    except SyncError as exc:
        _fail(f"could not connect: {exc.message} {exc.fix}".strip(), EXIT_USAGE)
    if as_json:
        _print_json({"id": account_id})
    else:
        typer.echo(account_id)


@account_app.command("list")
def account_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """List every account (never its secret)."""
    services = _services()
    with session_scope(services.db) as session:
        accounts = account_queries.list_accounts(session)
        counts = account_queries.message_counts(session, [a.id for a in accounts if a.id is not None])
        rows = [
            {
                "id": a.id,
                "team": a.team_id,
                "user": a.user_id,
                "email": a.email,
                "imap": f"{a.imap_host}:{a.imap_port}/{a.imap_security}",
                "auth": a.oauth_provider if a.auth_kind == "oauth" else "password",  # never a secret
                "state": a.state,
                "sync": a.sync_mode,
                "start": a.start_option,
                "start_date": a.start_date.isoformat() if a.start_date else None,
                "scope": a.contact_scope,
                "messages": counts.get(a.id or 0, 0),
                "last_synced_at": a.last_synced_at.isoformat() if a.last_synced_at else None,
                "last_error": a.last_error_message,
            }
            for a in accounts
        ]
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        typer.echo(
            f"{r['id']}\t{r['email']}\t{r['state']}\t{r['messages']} messages\tteam {r['team']} user {r['user']}"
            + (f"\t{r['last_error']}" if r["last_error"] else "")
        )


@account_app.command("remove")
def account_remove(
    account_id: int = typer.Argument(...),
    delete_mail: bool = typer.Option(False, "--delete-mail", help="also delete the synced mail"),
) -> None:
    """Disconnect an account; its synced mail is kept unless --delete-mail."""
    services = _services()
    revoker = GrantRevoker(services.secrets, services.oauth)
    if not account_flows.remove_account(services.db, account_id=account_id, delete_mail=delete_mail, revoker=revoker):
        _fail(f"no account {account_id}; `emailsync account list` shows them", EXIT_USAGE)
    typer.echo(f"account {account_id} {'deleted with its mail' if delete_mail else 'disconnected; mail kept'}")


# ---- contacts --------------------------------------------------------------------------------------


@contacts_app.command("import")
def contacts_import(
    file: Path = typer.Argument(..., help="CSV with a header row: email,name"),
    team: str = typer.Option(..., "--team"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import contacts; bad rows are reported by line number, good rows are kept."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {file}: {exc.__class__.__name__}", EXIT_USAGE)
    services = _services()
    report = contact_flows.import_contacts_csv(services.db, team_id=team, text=text)
    if as_json:
        _print_json(
            {
                "added": report.added,
                "updated": report.updated,
                "linked_messages": report.linked_messages,
                "errors": [{"line": n, "error": e} for n, e in report.errors],
            }
        )
    else:
        typer.echo(
            f"{report.added} added, {report.updated} updated, {report.linked_messages} messages linked, "
            f"{len(report.errors)} bad rows"
        )
    for line, error in report.errors:
        typer.echo(f"{file}:{line}: {error}", err=True)
    if report.errors:
        raise typer.Exit(EXIT_USAGE)


@contacts_app.command("list")
def contacts_list(team: str = typer.Option(..., "--team"), as_json: bool = typer.Option(False, "--json")) -> None:
    """List a team's contacts."""
    services = _services()
    from models.contacts import list_contacts

    with session_scope(services.db) as session:
        rows = [{"email": c.email, "name": c.name, "source": c.source} for c in list_contacts(session, team_id=team)]
    if as_json:
        _print_json(rows)
    else:
        for r in rows:
            typer.echo(f"{r['email']}\t{r['name'] or ''}")


# ---- sync, worker, serve ---------------------------------------------------------------------------


@app.command("sync")
def sync_command(
    account: int | None = typer.Option(None, "--account", help="only this account"),
    wait_seconds: float = typer.Option(600.0, "--wait", help="how long to wait for a sync running elsewhere"),
) -> None:
    """Sync every active account (or one) now, to completion, then exit."""
    services = _services(log_level=logging.INFO)
    deps = services.engine_deps("sync")
    with session_scope(services.db) as session:
        if account is not None:
            found = account_queries.get_account(session, account)
            if found is None:
                _fail(f"no account {account}; `emailsync account list` shows them", EXIT_USAGE)
            ids: list[int | None] = [account]
        else:
            ids = [a.id for a in account_queries.list_accounts(session) if a.state in account_queries.SYNCABLE_STATES]
    failed = []
    for account_id in ids:
        assert account_id is not None
        deadline = time.monotonic() + wait_seconds
        while True:
            outcome = sync_account(deps, account_id)
            if outcome is Outcome.BUSY and time.monotonic() < deadline:
                time.sleep(0.5)  # another process is syncing it; sync again once it is done
                continue
            if outcome is Outcome.MORE:
                continue
            break
        if outcome in (Outcome.FAILED, Outcome.BUSY):
            failed.append(account_id)
        with session_scope(services.db) as session:
            row = account_queries.get_account(session, account_id)
            state = row.state if row else "gone"
            error = row.last_error_message if row and outcome is Outcome.FAILED else None
        typer.echo(f"account {account_id}: {outcome.value} ({state})" + (f": {error}" if error else ""))
    if failed:
        _fail(f"sync failed for account(s) {', '.join(map(str, failed))}", EXIT_FAILURE)


@app.command("worker")
def worker_command(
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve /metrics and /healthz on this port (on HOST)"
    ),
    metrics_fd: int | None = typer.Option(None, "--metrics-fd", hidden=True),  # serve's child: a socket it made
) -> None:
    """Run the scheduler tick and the sync pool until SIGINT or SIGTERM."""
    services = _services(log_level=logging.INFO)
    from bot.metrics_server import MetricsListen

    metrics = None
    if metrics_fd is not None:
        metrics = MetricsListen(host="", port=0, fd=metrics_fd)
    elif metrics_port is not None:
        metrics = MetricsListen(host=services.settings.host, port=metrics_port)
    try:
        run_worker(services, stop_on_signals(), metrics=metrics)
    except MetricsPortUnavailable as exc:
        _fail(str(exc), EXIT_USAGE)


@app.command("serve")
def serve_command() -> None:
    """Run the web app (/healthz, Slack later) and, as a child process, the worker."""
    services = _services(log_level=logging.INFO)
    from bot.socket_mode import SocketModeError
    from bot.web import serve

    try:
        serve(services)
    except SocketModeError as exc:
        _fail(str(exc), EXIT_FAILURE)


# ---- team ------------------------------------------------------------------------------------------


@team_app.command("erase")
def team_erase(
    team: str = typer.Argument(..., help="Slack team id, e.g. T0123ABCD"),
    yes: bool = typer.Option(False, "--yes", help="erase without asking"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete everything of a team: mailboxes with their mail, contacts, settings, setup sessions, Slack tokens."""
    if not yes:
        question = (
            f"Delete every mailbox, all synced mail, the contacts, settings and Slack installation of team {team}? "
            "This cannot be undone"
        )
        try:
            confirmed = typer.confirm(question, default=False, err=True)
        except typer.Abort:  # no answer (standard input closed)
            confirmed = False
        if not confirmed:
            _fail(f"team {team}: nothing deleted (pass --yes to erase without asking)", EXIT_FAILURE)
    services = _services()
    counts = erase_team(services.db, team_id=team, revoker=GrantRevoker(services.secrets, services.oauth))
    if as_json:
        _print_json({"team": team, "deleted": counts})
    else:
        typer.echo(f"team {team} erased: " + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items()))


# ---- messages, secrets, db, doctor -----------------------------------------------------------------


@messages_app.command("export")
def messages_export(account: int = typer.Option(..., "--account")) -> None:
    """Print the account's messages as JSON Lines."""
    services = _services()
    with session_scope(services.db) as session:
        if account_queries.get_account(session, account) is None:
            _fail(f"no account {account}; `emailsync account list` shows them", EXIT_USAGE)
    for row in export_messages(services.db, account_id=account):
        row.pop("id", None)
        typer.echo(json.dumps(row, ensure_ascii=False))


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with the newest key (the first of EMAILSYNC_SECRET_KEY)."""
    services = _services()
    try:
        count = rotate_secrets(services.db, services.secrets)
    except SecretKeyError as exc:
        _fail(str(exc), EXIT_FAILURE)
    typer.echo(f"{count} secrets re-encrypted with the newest key")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration not yet applied."""
    services = _services(migrate=False)
    upgrade(services.db)
    typer.echo("database is up to date")


@app.command("doctor")
def doctor(as_json: bool = typer.Option(False, "--json")) -> None:
    """Check the settings, the database, and each account's IMAP login."""
    from flows.doctor import run_checks

    services = _services(migrate=False)
    checks = run_checks(
        services.db,
        services.secrets,
        timeout=services.settings.imap_timeout,
        outbound=services.settings.outbound_policy,
        oauth=services.oauth,
    )
    ok = all(c["ok"] for c in checks)
    if as_json:
        _print_json({"ok": ok, "checks": checks})
    else:
        for c in checks:
            typer.echo(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    if not ok:
        raise typer.Exit(EXIT_FAILURE)
