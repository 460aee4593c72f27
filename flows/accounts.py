"""Connecting, listing and removing accounts, without Slack: validate, test the login, save."""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine

from models import accounts as account_queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.tables import Folder
from sync.deadline import deadline
from sync.folders import RemoteFolder, discover_folders, selected_by_default
from sync.imap_limits import CONNECT_LIMITS
from sync.imap_session import STRICT_POLICY, ImapLogin, SslContextFactory, default_ssl_context, imap_session
from sync.oauth_tokens import GrantRevoker
from sync.outbound import OutboundPolicy
from sync.smtp_check import SmtpLogin, check_smtp

START_OPTIONS = ("now", "1m", "3m", "6m", "1y")
_MONTHS = {"1m": 1, "3m": 3, "6m": 6, "1y": 12}
CONNECT_DEADLINE_SECONDS = 20.0  # one connection test, IMAP and SMTP together


class FieldError(Exception):
    """A choice is invalid; `field` names it, the message says what to do."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class AccountDraft:
    """Everything needed to connect a mailbox (setup steps 1 and 3 to 5)."""

    team_id: str
    user_id: str
    email: str
    imap: ImapLogin
    smtp: SmtpLogin | None = None
    sync_mode: str = "all"
    folders: Sequence[str] = field(default_factory=tuple)
    start: str = "now"
    contact_scope: str = "all"
    visibility: str = "private"


def start_date_for(option: str, today: dt.date) -> dt.date | None:
    """The absolute first day of the past sync: calendar months back, day clamped, or an ISO date; None = now."""
    if option == "now":
        return None
    if option in _MONTHS:
        months = today.year * 12 + today.month - 1 - _MONTHS[option]
        year, month = divmod(months, 12)
        month += 1
        return dt.date(year, month, min(today.day, calendar.monthrange(year, month)[1]))
    try:
        chosen = dt.date.fromisoformat(option)
    except ValueError:
        raise FieldError("start", f"Unknown start {option!r}: use now, 1m, 3m, 6m, 1y or a date YYYY-MM-DD.") from None
    if chosen > today:
        raise FieldError("start", f"The start date {chosen} is in the future; pick today or earlier.")
    return chosen


def check_connection(
    imap: ImapLogin,
    smtp: SmtpLogin | None,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    deadline_seconds: float = CONNECT_DEADLINE_SECONDS,
) -> list[RemoteFolder]:
    """Log in over IMAP and LIST (and log in over SMTP when given) within one overall deadline; return the folders.

    The deadline covers both servers: a server that drips one byte every few seconds never trips a read
    timeout, and a test that holds a thread for minutes is a denial of service. The IMAP answers are
    held to CONNECT_LIMITS (a login and a LIST need little), so memory stays small whatever is sent.
    """
    with deadline(deadline_seconds):
        with imap_session(
            imap, timeout=timeout, ssl_context=ssl_context, outbound=outbound, limits=CONNECT_LIMITS
        ) as client:
            folders = discover_folders(client)
        if smtp is not None:
            check_smtp(smtp, timeout=timeout, ssl_context=ssl_context, outbound=outbound)
    return folders


def validate_choices(draft: AccountDraft) -> None:
    """Reject impossible choices before any slow work."""
    if "@" not in draft.email:
        raise FieldError("email", f"{draft.email!r} is not an email address.")
    if draft.sync_mode not in ("all", "labels"):
        raise FieldError("sync", "Choose all or labels.")
    if draft.sync_mode == "labels" and not draft.folders:
        raise FieldError("folder", "Choose at least one folder to sync, or sync all emails.")
    if draft.contact_scope not in ("all", "contacts"):
        raise FieldError("scope", "Choose all (all people) or contacts (CRM contacts only).")
    if draft.start != "now" and draft.start not in START_OPTIONS:
        start_date_for(draft.start, dt.date.today())


def add_account(
    db: Engine,
    secrets: SecretBox,
    draft: AccountDraft,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    today: dt.date | None = None,
) -> int:
    """Validate, test the login, then save the account with its folders; the first sync is due at once."""
    validate_choices(draft)
    start_date = start_date_for(draft.start, today or dt.date.today())
    email = draft.email.strip().lower()
    with session_scope(db) as session:
        if account_queries.find_account_by_email(session, team_id=draft.team_id, user_id=draft.user_id, email=email):
            raise FieldError("email", f"{email} is already connected for this person; reconnect it instead.")
    remote = check_connection(draft.imap, draft.smtp, timeout=timeout, ssl_context=ssl_context, outbound=outbound)
    names = {f.name for f in remote}
    unknown = [name for name in draft.folders if name not in names]
    if unknown:
        listing = ", ".join(sorted(names))
        raise FieldError("folder", f"No folder named {', '.join(unknown)}. The folders are: {listing}.")
    chosen = set(draft.folders)
    with session_scope(db) as session:
        account = account_queries.create_account(
            session,
            team_id=draft.team_id,
            user_id=draft.user_id,
            email=email,
            imap_host=draft.imap.host,
            imap_port=draft.imap.port,
            imap_security=draft.imap.security,
            username=draft.imap.username,
            secret_encrypted=secrets.encrypt(draft.imap.password),
            smtp_host=draft.smtp.host if draft.smtp else None,
            smtp_port=draft.smtp.port if draft.smtp else None,
            smtp_security=draft.smtp.security if draft.smtp else None,
            sync_mode=draft.sync_mode,
            start_option=draft.start if draft.start in START_OPTIONS else "date",
            start_date=start_date,
            contact_scope=draft.contact_scope,
            visibility=draft.visibility,
            next_sync_at=utcnow(),
        )
        assert account.id is not None
        for rf in remote:
            selected = rf.name in chosen if draft.sync_mode == "labels" else selected_by_default(rf.role)
            session.add(Folder(account_id=account.id, name=rf.name, role=rf.role, selected=selected))
        return account.id


def remove_account(db: Engine, *, account_id: int, delete_mail: bool, revoker: GrantRevoker | None = None) -> bool:
    """Disconnect an account (secret or tokens wiped, syncing stopped, a sign-in grant revoked where the provider
    offers it) and, if asked, delete its synced mail; False if absent."""
    with session_scope(db) as session:
        account = account_queries.get_account(session, account_id)
        if account is None:
            return False
        grants = revoker.collect([account]) if revoker is not None else []
        if delete_mail:
            account_queries.delete_account(session, account_id=account_id)
        else:
            account_queries.disconnect_account(session, account_id=account_id)
    if revoker is not None:
        revoker.revoke(grants)
    return True
