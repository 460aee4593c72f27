"""The `emailsync` command line for operators: accounts, contacts, sync, worker, serve, export, secrets, doctor."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

# Only typer at module level: `emailsync --help` must not pay for SQLAlchemy, Slack Bolt, Alembic, IMAP and
# cryptography (about a second). Each command imports what it needs (`python -X importtime -m bot --help`).
if TYPE_CHECKING:
    from bot.services import Services

# Plain click help, not Rich's: Rich and its Markdown parser cost a third of a second at every --help.
PLAIN = None

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=PLAIN,
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # a failure is one line (see main); a bug's traceback stays plain
    help=(
        "emailsync: CRM-style email sync for Slack. Settings come from the environment and .env "
        "(README, Configuration); `emailsync doctor` checks them."
    ),
)
account_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=PLAIN, help="Connect (IMAP/SMTP login), list and remove mailboxes."
)
contacts_app = typer.Typer(no_args_is_help=True, rich_markup_mode=PLAIN, help="Import and list a team's CRM contacts.")
messages_app = typer.Typer(no_args_is_help=True, rich_markup_mode=PLAIN, help="Export synced messages.")
secrets_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=PLAIN, help="Re-encrypt stored passwords and tokens with a new key."
)
db_app = typer.Typer(no_args_is_help=True, rich_markup_mode=PLAIN, help="Upgrade the database schema.")
team_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=PLAIN, help="Erase a whole Slack workspace (team) and everything of it."
)
app.add_typer(account_app, name="account")
app.add_typer(contacts_app, name="contacts")
app.add_typer(messages_app, name="messages")
app.add_typer(secrets_app, name="secrets")
app.add_typer(db_app, name="db")
app.add_typer(team_app, name="team")

EXIT_FAILURE = 1
EXIT_USAGE = 2
QUIET_LIBRARIES = ("alembic", "apscheduler", "procrastinate", "slack_bolt", "slack_sdk", "httpx", "urllib3")


class _Options:
    """The global options, set by the callback before a command runs."""

    verbose = False
    database_url: str | None = None  # once the settings are read: for the one-line database errors


@app.callback()
def _global_options(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log more: each step of a sync (leases, folders) and the libraries' info lines."
    ),
) -> None:
    _Options.verbose = verbose


def main() -> None:
    """Entry point of the console script: a database that cannot be used is one line and exit 1, not a traceback."""
    try:
        app(prog_name="emailsync")
    except Exception as exc:
        message = _known_failure(exc)
        if message is None:
            raise
        typer.echo(f"emailsync: {message}", err=True)
        sys.exit(EXIT_FAILURE)


def _known_failure(exc: BaseException) -> str | None:
    """One line for failures an operator fixes outside the code (today: the database cannot be used)."""
    if _Options.database_url is None:  # the settings were never read: no database was touched
        return None
    from models.db_errors import describe_database_error

    return describe_database_error(exc, _Options.database_url)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"emailsync: {message}", err=True)
    raise typer.Exit(code)


def _configure_logging(level: int) -> None:
    """Our loggers at ``level`` (info with --verbose); the libraries' info chatter only with --verbose.

    Never DEBUG: imapclient logs every IMAP command at that level.
    """
    verbose = _Options.verbose
    logging.basicConfig(
        level=min(level, logging.INFO) if verbose else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def _services(*, migrate: bool = True, log_level: int = logging.WARNING) -> Services:
    from bot.services import build_services
    from bot.settings import ConfigError, load_settings

    _configure_logging(log_level)
    try:
        settings = load_settings()
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    _Options.database_url = settings.database_url
    try:
        return build_services(settings, migrate=migrate)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, ensure_ascii=False, default=str))


def _no_account(account_id: int) -> NoReturn:
    _fail(f"no account {account_id}; `emailsync account list` shows them", EXIT_USAGE)


# ---- account ---------------------------------------------------------------------------------------


@account_app.command("add")
def account_add(
    team: str = typer.Option(..., "--team", help="Slack team id of the workspace, e.g. T0123ABCD"),
    user: str = typer.Option(..., "--user", help="Slack user id of the mailbox's owner, e.g. U0123ABCD"),
    email: str = typer.Option(..., "--email", help="the mailbox's address"),
    imap_host: str = typer.Option(..., "--imap-host", help="the IMAP server, e.g. imap.example.com"),
    imap_port: int = typer.Option(993, "--imap-port"),
    imap_security: str = typer.Option("tls", "--imap-security", help="tls (port 993) or starttls (port 143)"),
    username: str | None = typer.Option(None, "--username", help="the login name; defaults to the email address"),
    password_stdin: bool = typer.Option(
        False, "--password-stdin", help="read the password (or app password) from standard input; required"
    ),
    smtp_host: str | None = typer.Option(None, "--smtp-host", help="the SMTP server for sending; none: no sending"),
    smtp_port: int | None = typer.Option(None, "--smtp-port", help="defaults to 465 (tls) or 587 (starttls)"),
    smtp_security: str | None = typer.Option(None, "--smtp-security", help="tls or starttls"),
    sync_mode: str = typer.Option("all", "--sync", help="all folders, or labels: only the folders chosen"),
    folder: list[str] = typer.Option([], "--folder", help="a folder to sync; repeat; implies --sync labels"),
    start: str = typer.Option("now", "--start", help="past mail from: now, 1m, 3m, 6m, 1y or YYYY-MM-DD"),
    scope: str = typer.Option("all", "--scope", help="past mail from all people, or only from CRM contacts"),
    as_json: bool = typer.Option(False, "--json", help='print {"id": N}'),
) -> None:
    """Test the IMAP (and SMTP) login, then connect a mailbox; prints the new account's id."""
    from typing import cast

    from flows import accounts as account_flows
    from sync.errors import SyncError
    from sync.imap_session import ImapLogin, Security
    from sync.smtp_check import SmtpLogin

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
def account_list(as_json: bool = typer.Option(False, "--json", help="one JSON array of every field")) -> None:
    """List every account with its state, message count and last error (never its password)."""
    from models import accounts as account_queries
    from models.db import session_scope

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
    if not rows:
        typer.echo("no accounts yet: connect one in Slack (/emailsync) or with `emailsync account add`")
        return
    for r in rows:
        typer.echo(
            f"{r['id']}\t{r['email']}\t{r['state']}\t{r['messages']} messages\tteam {r['team']} user {r['user']}"
            + (f"\t{r['last_error']}" if r["last_error"] else "")
        )


@account_app.command("remove")
def account_remove(
    account_id: int = typer.Argument(..., help="the id `emailsync account list` shows"),
    delete_mail: bool = typer.Option(False, "--delete-mail", help="also delete the synced mail"),
) -> None:
    """Disconnect an account (its sign-in grant is revoked); its synced mail is kept unless --delete-mail."""
    from flows import accounts as account_flows
    from sync.oauth_tokens import GrantRevoker

    services = _services()
    revoker = GrantRevoker(services.secrets, services.oauth)
    if not account_flows.remove_account(services.db, account_id=account_id, delete_mail=delete_mail, revoker=revoker):
        _no_account(account_id)
    typer.echo(f"account {account_id} {'deleted with its mail' if delete_mail else 'disconnected; mail kept'}")


# ---- contacts --------------------------------------------------------------------------------------


@contacts_app.command("import")
def contacts_import(
    file: Path = typer.Argument(..., help="CSV with a header row: email,name"),
    team: str = typer.Option(..., "--team", help="Slack team id of the workspace"),
    as_json: bool = typer.Option(False, "--json", help="counts and bad rows as JSON"),
) -> None:
    """Import contacts and link the synced mail to them; bad rows are reported by line number, good rows kept."""
    from flows import contacts as contact_flows

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
def contacts_list(
    team: str = typer.Option(..., "--team", help="Slack team id of the workspace"),
    as_json: bool = typer.Option(False, "--json", help="one JSON array"),
) -> None:
    """List a team's contacts: email and name, one a line."""
    from models.contacts import list_contacts
    from models.db import session_scope

    services = _services()
    with session_scope(services.db) as session:
        rows = [{"email": c.email, "name": c.name, "source": c.source} for c in list_contacts(session, team_id=team)]
    if as_json:
        _print_json(rows)
    elif not rows:
        typer.echo(f"team {team} has no contacts yet: `emailsync contacts import FILE.csv --team {team}` adds some")
    else:
        for r in rows:
            typer.echo(f"{r['email']}\t{r['name'] or ''}")


# ---- sync, worker, serve ---------------------------------------------------------------------------


@app.command("sync")
def sync_command(
    account: int | None = typer.Option(None, "--account", help="only this account (an id from `account list`)"),
    wait_seconds: float = typer.Option(600.0, "--wait", help="seconds to wait for a sync of it running elsewhere"),
) -> None:
    """Sync every active account (or one) now, then exit.

    Each account is synced to completion; one line per account says how it ended.
    """
    from flows.sync_now import NoSuchAccount, accounts_to_sync, sync_now

    services = _services()
    try:
        ids = accounts_to_sync(services.db, account)
    except NoSuchAccount:
        assert account is not None
        _no_account(account)
    if not ids:
        typer.echo("nothing to sync: no active account (`emailsync account list` shows them)")
        return
    failed = []
    for result in sync_now(services.engine_deps("sync"), ids, wait_seconds=wait_seconds):
        if result.failed:
            failed.append(result.account_id)
        typer.echo(
            f"account {result.account_id}: {result.outcome.value} ({result.state})"
            + (f": {result.error}" if result.error else "")
        )
    if failed:
        _fail(f"sync failed for account(s) {', '.join(map(str, failed))}", EXIT_FAILURE)


def _check_slack_token(services: Services) -> None:
    """auth.test at start: say which workspace and bot, or stop (exit 1) when Slack rejects the token."""
    from bot.slack_check import check_bot_token

    log = logging.getLogger("emailsync")
    result = check_bot_token(services.settings)
    if result is None:
        return
    if result.rejected:  # every post and every Slack request would fail: stop now and say why
        _fail(result.detail, EXIT_FAILURE)
    if result.ok:
        log.info("Slack: %s", result.detail)
    else:  # Slack down or slow: start anyway, the app must not depend on Slack being up at that moment
        log.warning("Slack: %s", result.detail)


@app.command("worker")
def worker_command(
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, max=64, help="syncs at once in this process (default EMAILSYNC_WORKERS)"
    ),
    clock: bool = typer.Option(
        False, "--clock", help="procrastinate backend: compete to be the one clock that ticks (local always ticks)"
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=1, max=65535, help="Serve /metrics and /healthz on this port (on HOST)"
    ),
    metrics_fd: int | None = typer.Option(None, "--metrics-fd", hidden=True),  # serve's child: a socket it made
) -> None:
    """Run syncs, IDLE watches and (with the local backend, or --clock) the scheduler tick until SIGINT or SIGTERM.

    `serve` starts one itself on the local backend; on the procrastinate backend run any number of them.
    """
    from bot.metrics_server import MetricsListen
    from bot.worker import MetricsPortUnavailable, run_worker, stop_on_signals

    services = _services(log_level=logging.INFO)
    _check_slack_token(services)
    metrics = None
    if metrics_fd is not None:
        metrics = MetricsListen(host="", port=0, fd=metrics_fd)
    elif metrics_port is not None:
        metrics = MetricsListen(host=services.settings.host, port=metrics_port)
    try:
        run_worker(services, stop_on_signals(), concurrency=concurrency, clock=clock, metrics=metrics)
    except MetricsPortUnavailable as exc:
        _fail(str(exc), EXIT_USAGE)


@app.command("serve")
def serve_command() -> None:
    """Run the app: Slack, the connect page and /healthz, and a worker.

    Serves /slack/events (or Socket Mode), the connect page, tracking and /healthz on HOST:PORT,
    and starts `emailsync worker` as a child process.
    """
    services = _services(log_level=logging.INFO)
    from bot.socket_mode import SocketModeError

    _check_slack_token(services)
    from bot.web import serve

    try:
        serve(services)
    except SocketModeError as exc:
        _fail(str(exc), EXIT_FAILURE)


# ---- team ------------------------------------------------------------------------------------------


@team_app.command("erase")
def team_erase(
    team: str = typer.Argument(..., help="Slack team id, e.g. T0123ABCD"),
    yes: bool = typer.Option(False, "--yes", help="erase without asking (needed without a terminal)"),
    as_json: bool = typer.Option(False, "--json", help="what was deleted, as JSON"),
) -> None:
    """Delete everything of a team: mailboxes with their mail, contacts, settings, setup sessions, Slack tokens."""
    if not yes:
        question = (
            f"Delete every mailbox, all synced mail, the contacts, settings and Slack installation of team {team}? "
            "This cannot be undone"
        )
        try:
            confirmed = typer.confirm(question, default=False, err=True)
        except typer.Abort:  # no answer (standard input closed, no terminal)
            confirmed = False
        if not confirmed:  # refused or unanswered: the command was not used as meant, a usage error
            _fail(f"team {team}: nothing deleted (pass --yes to erase without asking)", EXIT_USAGE)
    from flows.team import erase_team
    from sync.oauth_tokens import GrantRevoker

    services = _services()
    counts = erase_team(services.db, team_id=team, revoker=GrantRevoker(services.secrets, services.oauth))
    if as_json:
        _print_json({"team": team, "deleted": counts})
    else:
        typer.echo(f"team {team} erased: " + ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items()))


# ---- messages, secrets, db, doctor -----------------------------------------------------------------


@messages_app.command("export")
def messages_export(account: int = typer.Option(..., "--account", help="an id from `emailsync account list`")) -> None:
    """Print the account's messages as JSON Lines (one message a line: addresses, subject, folders, contacts)."""
    from flows.export import export_messages
    from models import accounts as account_queries
    from models.db import session_scope

    services = _services()
    with session_scope(services.db) as session:
        if account_queries.get_account(session, account) is None:
            _no_account(account)
    exported = 0
    for row in export_messages(services.db, account_id=account):
        row.pop("id", None)
        typer.echo(json.dumps(row, ensure_ascii=False))
        exported += 1
    if not exported:  # stderr: standard output stays valid (empty) JSON Lines
        typer.echo(f"account {account} has no synced messages yet", err=True)


@secrets_app.command("rotate")
def secrets_rotate() -> None:
    """Re-encrypt every stored secret with the newest key (the first of EMAILSYNC_SECRET_KEY, comma-separated)."""
    from flows.secrets import rotate_secrets
    from models.secrets import SecretKeyError

    services = _services()
    try:
        count = rotate_secrets(services.db, services.secrets)
    except SecretKeyError as exc:
        _fail(str(exc), EXIT_FAILURE)
    typer.echo(f"{count} secrets re-encrypted with the newest key")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every database migration not yet applied (run it before starting a new version on PostgreSQL)."""
    from models.db import upgrade

    services = _services(migrate=False)
    upgrade(services.db)
    typer.echo("database is up to date")


@app.command("doctor")
def doctor(as_json: bool = typer.Option(False, "--json", help="every check as JSON")) -> None:
    """Check the settings, the database and each account's login.

    Database, schema, secret key, backend, Slack mode and token, PUBLIC_BASE_URL, sign-in providers,
    and each account's IMAP login; exit 1 when a check fails.
    """
    from bot.slack_check import slack_checks
    from flows.doctor import DoctorContext, run_checks

    services = _services(migrate=False)
    settings = services.settings
    if settings.secret_key:
        key_location = "EMAILSYNC_SECRET_KEY"
    else:
        key_location = f"{(settings.data_dir / 'secret.key').resolve()} (no EMAILSYNC_SECRET_KEY set)"
    context = DoctorContext(
        db=services.db,
        database_url=settings.database_url,
        secrets=services.secrets,
        key_location=key_location,
        backend=settings.backend,
        public_base_url=settings.public_base_url,
        timeout=settings.imap_timeout,
        outbound=settings.outbound_policy,
        oauth=services.oauth,
        stall_seconds=settings.stall_seconds,
    )
    checks = run_checks(context, extra=[lambda _ctx: slack_checks(settings)])
    ok = all(c["ok"] for c in checks)
    if as_json:
        _print_json({"ok": ok, "checks": checks})
    else:
        for c in checks:
            typer.echo(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    if not ok:
        raise typer.Exit(EXIT_FAILURE)
