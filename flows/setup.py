"""The setup flow without Slack: start, the one-time connect link, each step's choices, and "Sync"."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets as pysecrets
import socket
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

from flows import connect_limits
from flows.accounts import CONNECT_DEADLINE_SECONDS, START_OPTIONS, FieldError, check_connection, start_date_for
from flows.connect_limits import AttemptLimits
from models import accounts as account_queries
from models import connect_failures as failure_queries
from models import contacts as contact_queries
from models import setup_sessions as setup_queries
from models import states as account_states
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.states import AccountState
from models.tables import EmailAccount, Folder, SetupSession
from sync.errors import SyncError
from sync.folders import RemoteFolder, selected_by_default
from sync.imap_session import (
    STRICT_POLICY,
    ImapLogin,
    SslContextFactory,
    account_login,
    default_ssl_context,
    security_of,
)
from sync.oauth import OAuthProviders
from sync.oauth_tokens import TokenKeeper
from sync.outbound import OutboundPolicy
from sync.preview import WindowPreview, preview_window
from sync.smtp_check import SmtpLogin

LINK_LIFETIME = dt.timedelta(minutes=15)
STEPS = ("connect", "tracking", "folders", "start")


class NotYours(Exception):
    """The caller is not the owner of the setup or account an id points at."""


class LinkProblem(Exception):
    """A connect link that cannot be used: `reason` is unknown, expired, used or locked (too many failures)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SetupDraft:
    """The choices made so far (JSON in the setup session; never holds a secret)."""

    email: str | None = None
    track_opens: bool = True
    track_links: bool = True
    notify_tracking: bool = True
    visibility: str = "private"
    sync_mode: str = "all"
    folders: list[str] = field(default_factory=list)
    start: str = "3m"
    contact_scope: str = "all"

    @classmethod
    def from_json(cls, text: str) -> SetupDraft:
        """Parse a stored draft, ignoring unknown keys from older versions."""
        data = json.loads(text or "{}")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_json(self) -> str:
        """Serialise for the setup session row."""
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class SetupState:
    """What a view needs to show a setup step (ids and choices; no secrets)."""

    session_id: int
    team_id: str
    user_id: str
    step: str
    draft: SetupDraft
    account_id: int | None
    view_id: str | None
    folders: list[tuple[str, str | None]]  # cached from the server at connect time: (name, role)
    purpose: str = "setup"  # setup | reconnect


@dataclass
class ConnectForm:
    """What the connect page submits; the password never shows in repr."""

    email: str
    password: str = field(repr=False)
    imap_host: str
    imap_port: int
    imap_security: str
    username: str = ""
    smtp_host: str = ""
    smtp_port: int | None = None
    smtp_security: str = "starttls"


def hash_token(token: str) -> str:
    """The stored form of a connect token (the token itself is never stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_setup(
    db: Engine, *, team_id: str, user_id: str, account_id: int | None = None, purpose: str = "setup"
) -> tuple[SetupState, str]:
    """Begin a setup (or a reconnect of account_id); return its state and the one-time connect token."""
    token = pysecrets.token_urlsafe(32)
    with session_scope(db) as session:
        draft = SetupDraft()
        prefs = setup_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        draft.visibility = prefs.default_visibility
        draft.track_opens, draft.track_links = prefs.track_opens, prefs.track_links
        draft.notify_tracking = prefs.notify_tracking
        row = setup_queries.create_session(
            session,
            SetupSession(
                team_id=team_id,
                user_id=user_id,
                token_hash=hash_token(token),
                expires_at=utcnow() + LINK_LIFETIME,
                purpose=purpose,
                account_id=account_id,
                draft=draft.to_json(),
            ),
        )
        return _state(session, row), token


def load(db: Engine, session_id: int, *, team_id: str, user_id: str) -> SetupState:
    """A setup session, only for its owner (ids from Slack payloads prove nothing)."""
    with session_scope(db, readonly=True) as session:
        row = _owned(session, session_id, team_id, user_id)
        return _state(session, row)


def bind_view(db: Engine, session_id: int, *, team_id: str, user_id: str, view_id: str) -> None:
    """Remember the modal that shows this setup, so the connect page can move it on."""
    with session_scope(db) as session:
        row = _owned(session, session_id, team_id, user_id)
        row.view_id = view_id
        setup_queries.save(session, row)


def check_link(db: Engine, token: str) -> SetupState:
    """The setup a connect link belongs to, or LinkProblem (unknown, expired, used)."""
    with session_scope(db, readonly=True) as session:
        row = _by_token(session, token)
        return _state(session, row)


def connect(
    db: Engine,
    secret_box: SecretBox,
    token: str,
    form: ConnectForm,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    deadline_seconds: float = CONNECT_DEADLINE_SECONDS,
    limits: AttemptLimits = AttemptLimits(),
) -> SetupState:
    """Test IMAP (login + LIST) and SMTP (EHLO + AUTH); on success store the secret and folders, use up the link.

    Raises LinkProblem, FieldError (bad form input), TooManyAttempts or a SyncError explaining the
    failure. A failure leaves the link usable (a typo costs nothing) until `limits.per_link` failures
    use it up; a success uses it up atomically, so two submits at once give one account.
    """
    link = link_of(db, token)
    email = form.email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@"):
        raise FieldError("email", "Enter the full email address, like name@example.com.")
    if not form.password:
        raise FieldError("password", "Enter the password (an app password for Gmail, iCloud, Yahoo, Outlook).")
    if form.imap_security not in ("tls", "starttls") or (
        form.smtp_host and form.smtp_security not in ("tls", "starttls")
    ):
        raise FieldError("imap_security", "Security must be TLS or STARTTLS.")
    username = form.username.strip() or email
    login = ImapLogin(form.imap_host.strip(), form.imap_port, security_of(form.imap_security), username, form.password)
    smtp_port = form.smtp_port or (465 if form.smtp_security == "tls" else 587)
    smtp = (
        SmtpLogin(form.smtp_host.strip(), smtp_port, security_of(form.smtp_security), username, form.password)
        if form.smtp_host.strip()
        else None
    )
    remote = check_with_limits(
        db,
        link,
        login,
        smtp,
        timeout=timeout,
        ssl_context=ssl_context,
        outbound=outbound,
        deadline_seconds=deadline_seconds,
        limits=limits,
    )
    fields: dict[str, Any] = {
        "imap_host": login.host,
        "imap_port": login.port,
        "imap_security": login.security,
        "username": username,
        "secret_encrypted": secret_box.encrypt(form.password),
        "smtp_host": smtp.host if smtp else None,
        "smtp_port": smtp.port if smtp else None,
        "smtp_security": smtp.security if smtp else None,
        **PASSWORD_AUTH,
    }
    return store_connection(db, link, email, fields, remote)


@dataclass(frozen=True)
class LinkRef:
    """A connect link found valid: its setup session, owner, and the hash that claiming it checks."""

    session_id: int
    team_id: str
    user_id: str
    token_hash: str


# A password connection replaces whatever sign-in an account had before.
PASSWORD_AUTH: dict[str, Any] = {
    "auth_kind": "password",
    "oauth_provider": None,
    "oauth_access_encrypted": None,
    "oauth_refresh_encrypted": None,
    "oauth_expires_at": None,
    "oauth_scope": None,
}


def link_of(db: Engine, token: str) -> LinkRef:
    """The usable link for a connect token, or LinkProblem."""
    with session_scope(db, readonly=True) as session:
        row = _by_token(session, token)
        assert row.id is not None
        return LinkRef(row.id, row.team_id, row.user_id, row.token_hash)


def check_with_limits(
    db: Engine,
    link: LinkRef,
    login: ImapLogin,
    smtp: SmtpLogin | None,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    deadline_seconds: float = CONNECT_DEADLINE_SECONDS,
    limits: AttemptLimits = AttemptLimits(),
) -> list[RemoteFolder]:
    """Test IMAP (login + LIST) and SMTP under the connect page's deadline and failure limits; return the folders.

    A failure counts against the link, the person and the server (TooManyAttempts before trying when over a
    limit); the failure that reaches the link's limit uses the link up (LinkProblem "locked").
    """
    host = login.host.lower()
    connect_limits.check_allowed(db, limits, team_id=link.team_id, user_id=link.user_id, host=host)
    try:
        return check_connection(
            login,
            smtp,
            timeout=timeout,
            ssl_context=ssl_context,
            outbound=outbound,
            deadline_seconds=deadline_seconds,
        )
    except SyncError as exc:
        locked = connect_limits.record_failure(
            db,
            limits,
            session_id=link.session_id,
            team_id=link.team_id,
            user_id=link.user_id,
            host=host,
            code=exc.code,
        )
        if locked:
            raise LinkProblem("locked") from None
        raise


def store_connection(
    db: Engine, link: LinkRef, email: str, fields: dict[str, Any], remote: list[RemoteFolder]
) -> SetupState:
    """Store a tested connection (password or sign-in alike) and use the link up, atomically.

    A new setup creates the account (state "connecting") with its folder list and moves to the tracking
    step; a reconnect replaces the server settings and secret and keeps every other setting.
    """
    with session_scope(db) as session:
        # Use the link up first, in this transaction: of two submits at once only one gets past here.
        if not failure_queries.claim_link(session, link.session_id, link.token_hash):
            raise LinkProblem("used")
        row = _owned(session, link.session_id, link.team_id, link.user_id)
        row.oauth_state_hash = row.oauth_flow_encrypted = None  # a sign-in in progress ends with the link
        if row.purpose == "reconnect" and row.account_id is not None:
            account = account_queries.get_account(session, row.account_id)
            if account is None:
                raise LinkProblem("unknown")
            if account.email != email:
                raise FieldError("email", f"This link reconnects {account.email}; sign in with that address.")
            for name, value in fields.items():
                setattr(account, name, value)
            # The last error stays until a sync succeeds (the engine logs the recovery then), but the person
            # hears of it once, from the reconnect's own message: the error is marked as no longer told, so
            # that sync stays silent and a new failure after it is told again.
            account_states.move(account, AccountState.ACTIVE)
            account.failures = 0
            account.next_sync_at = utcnow()
            account.error_notified_code = account.error_notified_at = None
            session.add(account)
            draft = SetupDraft.from_json(row.draft)
            draft.email = account.email  # the page and the message name the mailbox
            row.draft = draft.to_json()
        else:
            existing = account_queries.find_account_by_email(
                session, team_id=row.team_id, user_id=row.user_id, email=email
            )
            if existing is not None and existing.state != AccountState.CONNECTING:
                raise FieldError("email", f"{email} is already connected; use Reconnect in the App Home tab instead.")
            if existing is None:
                account = account_queries.create_account(
                    session,
                    team_id=row.team_id,
                    user_id=row.user_id,
                    email=email,
                    state=AccountState.CONNECTING,
                    **fields,
                )
            else:
                account = existing
                for name, value in fields.items():
                    setattr(account, name, value)
                session.add(account)
            _cache_folders(session, account, remote)
            row.account_id = account.id
            row.step = "tracking"
            draft = SetupDraft.from_json(row.draft)
            draft.email = email
            names = [f.name for f in remote]
            draft.folders = [f.name for f in remote if f.role in ("inbox", "sent")] or names[:1]
            row.draft = draft.to_json()
        setup_queries.save(session, row)
        session.flush()
        return _state(session, row)


def save_step(db: Engine, session_id: int, *, team_id: str, user_id: str, step: str, **choices: Any) -> SetupState:
    """Validate and store one step's choices, and move to `step` (Back and Next both use this)."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}")
    with session_scope(db) as session:
        row = _owned(session, session_id, team_id, user_id)
        draft = SetupDraft.from_json(row.draft)
        for name, value in choices.items():
            if name not in SetupDraft.__dataclass_fields__ or name == "email":
                raise ValueError(f"unknown choice {name!r}")
            setattr(draft, name, value)
        _validate(draft, choices, session, row)
        row.draft = draft.to_json()
        row.step = step
        setup_queries.save(session, row)
        session.flush()
        return _state(session, row)


def finish(db: Engine, session_id: int, *, team_id: str, user_id: str) -> int:
    """Apply the draft to the account and make its first sync due now; return the account id."""
    with session_scope(db) as session:
        row = _owned(session, session_id, team_id, user_id)
        if row.account_id is None:
            raise FieldError("connect", "Connect a mailbox first.")
        draft = SetupDraft.from_json(row.draft)
        _validate(draft, asdict(draft), session, row)
        account = account_queries.get_account(session, row.account_id)
        if account is None:
            raise FieldError("connect", "The mailbox was removed; start again with /emailsync setup.")
        account.sync_mode = draft.sync_mode
        account.start_option = draft.start
        account.start_date = start_date_for(draft.start, dt.date.today())
        account.contact_scope = draft.contact_scope if draft.start != "now" else "all"
        account.visibility = draft.visibility
        account_states.move(account, AccountState.ACTIVE)
        account.next_sync_at = utcnow()
        session.add(account)
        chosen = set(draft.folders)
        for folder in account_queries.folders_of(session, row.account_id):
            folder.selected = folder.name in chosen if draft.sync_mode == "labels" else selected_by_default(folder.role)
            session.add(folder)
        prefs = setup_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        prefs.track_opens, prefs.track_links = draft.track_opens, draft.track_links
        prefs.notify_tracking = draft.notify_tracking
        prefs.default_visibility = draft.visibility
        setup_queries.save(session, prefs)
        row.finished_at = utcnow()
        setup_queries.save(session, row)
        return row.account_id


def _validate(draft: SetupDraft, changed: dict[str, Any], session: Session, row: SetupSession) -> None:
    if "visibility" in changed and draft.visibility not in ("private", "shared"):
        raise FieldError("visibility", "Choose private or shared.")
    if "sync_mode" in changed and draft.sync_mode not in ("all", "labels"):
        raise FieldError("sync_mode", "Choose all emails or specific labels.")
    if draft.sync_mode == "labels" and ("folders" in changed or "sync_mode" in changed):
        if not draft.folders:
            raise FieldError("folders", "Choose at least one folder, or sync all emails.")
        known = {f.name for f in account_queries.folders_of(session, row.account_id)} if row.account_id else set()
        unknown = [name for name in draft.folders if name not in known]
        if unknown:
            raise FieldError("folders", f"{', '.join(unknown)} no longer exists on the server.")
    if "start" in changed and draft.start not in START_OPTIONS:
        raise FieldError("start", "Choose now, 1 month, 3 months, 6 months or 1 year.")
    if "contact_scope" in changed and draft.contact_scope not in ("all", "contacts"):
        raise FieldError("contact_scope", "Choose all people or CRM contacts only.")


def _cache_folders(session: Session, account: EmailAccount, remote: list[RemoteFolder]) -> None:
    assert account.id is not None
    known = {f.name for f in account_queries.folders_of(session, account.id)}
    for rf in remote:
        if rf.name not in known:
            session.add(
                Folder(account_id=account.id, name=rf.name, role=rf.role, selected=selected_by_default(rf.role))
            )


def _owned(session: Session, session_id: int, team_id: str, user_id: str) -> SetupSession:
    row = setup_queries.get_session(session, session_id)
    if row is None or row.team_id != team_id or row.user_id != user_id:
        raise NotYours(f"setup {session_id}")
    return row


def _by_token(session: Session, token: str) -> SetupSession:
    digest = hash_token(token)
    row = setup_queries.find_by_token_hash(session, digest)
    # The hash lookup finds the row; compare_digest keeps the final check constant-time.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise LinkProblem("unknown")
    if row.locked_reason is not None:
        raise LinkProblem("locked")
    if row.used_at is not None:
        raise LinkProblem("used")
    if row.expires_at <= utcnow():
        raise LinkProblem("expired")
    return row


def _state(session: Session, row: SetupSession) -> SetupState:
    folders = [(f.name, f.role) for f in account_queries.folders_of(session, row.account_id)] if row.account_id else []
    return SetupState(
        session_id=row.id,  # type: ignore[arg-type]
        team_id=row.team_id,
        user_id=row.user_id,
        step=row.step,
        draft=SetupDraft.from_json(row.draft),
        account_id=row.account_id,
        view_id=row.view_id,
        folders=folders,
        purpose=row.purpose,
    )


def preview(
    db: Engine,
    secret_box: SecretBox,
    session_id: int,
    *,
    team_id: str,
    user_id: str,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    oauth: OAuthProviders | None = None,
) -> WindowPreview | None:
    """What the chosen past window holds on the server (None for "now" or before connecting).

    A mailbox signed in with Google/Microsoft logs in with its access token, the same way a sync does.
    """
    with session_scope(db, readonly=True) as session:
        row = _owned(session, session_id, team_id, user_id)
        draft = SetupDraft.from_json(row.draft)
        account = account_queries.get_account(session, row.account_id) if row.account_id else None
        if account is None or draft.start == "now":
            return None
        folders = account_queries.folders_of(session, account.id)  # type: ignore[arg-type]
        if draft.sync_mode == "labels":
            names = [f.name for f in folders if f.name in set(draft.folders)]
        else:
            names = [f.name for f in folders if selected_by_default(f.role)]
        contacts = (
            contact_queries.team_contact_emails(session, team_id=team_id) if draft.contact_scope == "contacts" else None
        )
        password = secret_box.decrypt(account.secret_encrypted) if account.auth_kind != "oauth" else ""
    if account.auth_kind == "oauth":  # after the read transaction: a refresh borrows the lease in its own
        keeper = TokenKeeper(db, secret_box, oauth or OAuthProviders())
        login = keeper.login_outside_sync(account, owner=f"preview:{socket.gethostname()}:{os.getpid()}")
    else:
        login = account_login(account, password)
    since = start_date_for(draft.start, dt.date.today())
    assert since is not None
    return preview_window(login, names, since, contacts, timeout=timeout, ssl_context=ssl_context, outbound=outbound)


def renew_link(db: Engine, session_id: int, *, team_id: str, user_id: str) -> tuple[SetupState, str]:
    """A fresh connect token for an unconnected setup (the old link stops working)."""
    token = pysecrets.token_urlsafe(32)
    with session_scope(db) as session:
        row = _owned(session, session_id, team_id, user_id)
        row.token_hash = hash_token(token)
        row.expires_at = utcnow() + LINK_LIFETIME
        row.used_at = None
        row.oauth_state_hash = row.oauth_flow_encrypted = None  # a sign-in started from the old link ends
        setup_queries.save(session, row)
        session.flush()
        return _state(session, row), token
