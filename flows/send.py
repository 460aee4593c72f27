"""Sending an email composed in Slack: checks, tracked copies per recipient, SMTP, the Sent copy; no Slack here."""

from __future__ import annotations

import datetime as dt
import email.policy
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from flows import richtext, tracking
from flows.contacts import normalise_email
from flows.find import body_text
from models import accounts as account_queries
from models import contacts as contact_queries
from models import find as find_queries
from models import sending
from models import setup_sessions as prefs_queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.states import AccountState
from models.tables import EmailAccount, SentEmail, UserSettings
from sync.errors import SyncError
from sync.imap_session import STRICT_POLICY, SslContextFactory, account_login, default_ssl_context, security_of
from sync.oauth import OAuthProviders
from sync.oauth_tokens import TokenKeeper
from sync.outbound import OutboundPolicy
from sync.smtp_check import SmtpLogin
from sync.smtp_send import Envelope, Outcome, append_to_sent, send_envelopes, sent_folder_name

log = logging.getLogger(__name__)

PER_RECIPIENT_LIMIT = 10  # tracked one SMTP transaction per recipient up to this many; above, per message
MAX_RECIPIENTS = 50
# Servers that keep the sent copy themselves (an APPEND would make a second one).
SAVES_OWN_SENT = ("imap.gmail.com", "imap.googlemail.com", "outlook.office365.com", "imap-mail.outlook.com")


class ComposeError(Exception):
    """A problem with the form: `block` names the field (a Slack input block id), `message` says why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True)
class Draft:
    """What the person wrote in the compose modal."""

    team_id: str
    user_id: str
    account_id: int
    to: Sequence[str]
    cc: Sequence[str]
    subject: str
    body: richtext.RichText | None
    track_opens: bool
    track_links: bool
    notify: bool
    compose_key: str  # the modal's view id: a submission sends once
    reply_to: int | None = None  # a synced message's id


@dataclass(frozen=True)
class SendConfig:
    """Where the tracking URLs point, how to reach mail servers, and the limits."""

    public_base_url: str
    timeout: float
    max_bytes: int
    sends_per_hour: int
    tracking_allowed: bool = True  # the operator's EMAILSYNC_TRACKING
    ssl_context: SslContextFactory = default_ssl_context
    outbound: OutboundPolicy = STRICT_POLICY
    oauth: OAuthProviders = field(default_factory=OAuthProviders)


@dataclass
class SendResult:
    """How a send went: who got it, who did not and why, or why nothing was sent."""

    sent_email_id: int | None = None
    delivered: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None  # nothing was sent: why
    fix: str | None = None
    sent_copy_problem: str | None = None  # delivered, but the copy in Sent could not be saved
    tracked: bool = False


def parse_addresses(values: Sequence[str], field_name: str) -> list[str]:
    """Normalised addresses; ComposeError naming the first invalid one."""
    out: list[str] = []
    for value in values:
        address = normalise_email(value)
        if address is None:
            raise ComposeError(field_name, f"{value[:100]} is not a valid email address.")
        if address not in out:
            out.append(address)
    return out


def reply_defaults(
    db: Engine, *, team_id: str, user_id: str, message_id: int
) -> tuple[str, str, str, richtext.RichText]:
    """(to, subject, account email, quoted body) for a reply to a synced message the person may see."""
    with session_scope(db, readonly=True) as session:
        who = find_queries.viewer(session, team_id=team_id, user_id=user_id)
        message = find_queries.visible_message(session, who, message_id)
        if message is None:
            raise ComposeError("to", "That email is not visible to you any more.")
        addresses = find_queries.addresses_of(session, [message.id]).get(message.id, [])
        account = account_queries.get_account(session, message.account_id)
    mine = account.email if account is not None and account.user_id == user_id else ""
    role = "to" if message.direction == "sent" else "from"
    reply_role = [a for a in addresses if a[0] == "reply_to"] if role == "from" else []
    to = next((a[1] for a in reply_role or addresses if a[0] in (role, "reply_to")), "")
    subject = message.subject or ""
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}".strip()
    sender = next((a for a in addresses if a[0] == "from"), None)
    who_wrote = (sender[2] or sender[1]) if sender else "someone"
    when = f"On {message.at:%a, %d %b %Y at %H:%M}, " if message.at else ""
    quoted = richtext.quoted(body_text(message)[:2500], f"{when}{who_wrote} wrote:")
    return to, subject, mine, quoted


def save_tracking_defaults(db: Engine, *, team_id: str, user_id: str, opens: bool, links: bool, notify: bool) -> None:
    """A change to the switches in the compose modal becomes the person's default."""
    with session_scope(db) as session:
        prefs = prefs_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        if (prefs.track_opens, prefs.track_links, prefs.notify_tracking) != (opens, links, notify):
            prefs.track_opens, prefs.track_links, prefs.notify_tracking = opens, links, notify
            prefs_queries.save(session, prefs)


def tracking_allowed(db: Engine, config: SendConfig, *, team_id: str) -> bool:
    """Whether tracking may be used at all: the operator's setting and the workspace's."""
    if not config.tracking_allowed:
        return False
    with session_scope(db, readonly=True) as session:
        return sending.team_tracking_enabled(session, team_id=team_id)


def send(db: Engine, box: SecretBox, config: SendConfig, draft: Draft) -> SendResult:
    """Send the draft; the result names every recipient that did not get it. Never sends a draft twice."""
    to = parse_addresses(draft.to, "to")
    cc = parse_addresses(draft.cc, "cc")
    if not to:
        raise ComposeError("to", "Add at least one recipient.")
    if len(to) + len(cc) > MAX_RECIPIENTS:
        raise ComposeError("to", f"At most {MAX_RECIPIENTS} recipients per email.")
    with session_scope(db, readonly=True) as session:
        account = account_queries.get_account(session, draft.account_id)
        if account is None or account.team_id != draft.team_id or account.user_id != draft.user_id:
            raise ComposeError("from", "Choose one of your own mailboxes.")
        if account.state == AccountState.DISCONNECTED:
            raise ComposeError("from", f"{account.email} is disconnected; connect it again to send.")
        if not account.smtp_host:
            raise ComposeError("from", f"{account.email} has no outgoing (SMTP) server set up.")
        if sending.sent_since(session, account_id=draft.account_id, since=utcnow() - dt.timedelta(hours=1)) >= (
            config.sends_per_hour
        ):
            raise ComposeError(
                "from", f"{account.email} sent {config.sends_per_hour} emails in the last hour; wait a while."
            )
        session.expunge(account)
    references: list[str] = []
    if draft.reply_to is not None:
        references = _references(db, draft)
    allowed = tracking_allowed(db, config, team_id=draft.team_id)
    opens, links = allowed and draft.track_opens, allowed and draft.track_links
    tracked = opens or links
    message_id = make_msgid(domain=urlsplit(config.public_base_url).hostname or "emailsync.invalid")
    body_html = richtext.to_html(draft.body)
    plain = richtext.to_plain(draft.body)
    targets = tracking.trackable_links(body_html) if links else []
    recipients = to + cc
    per_recipient = tracked and len(recipients) <= PER_RECIPIENT_LIMIT

    def build(html_part: str) -> bytes:
        msg = EmailMessage()
        msg["From"] = account.email
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
        msg["Subject"] = draft.subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = message_id
        if references:
            msg["In-Reply-To"] = references[-1]
            msg["References"] = " ".join(references)
        msg.set_content(plain)
        msg.add_alternative(f"<!DOCTYPE html><html><body>{html_part}</body></html>", subtype="html")
        return msg.as_bytes(policy=email.policy.SMTP)  # CRLF line ends: smtplib sends bytes as they are

    untracked = build(body_html)
    envelopes: list[Envelope] = []
    tokens: list[tuple[str, str | None]] = []  # (token, recipient or None for per message)
    if not tracked:
        envelopes.append(Envelope(account.email, tuple(recipients), untracked))
    elif per_recipient:
        for rcpt in recipients:
            token = tracking.new_token(box)
            tokens.append((token, rcpt))
            html_part = tracking.tracked_html(
                body_html, base_url=config.public_base_url, token=token, links=targets, pixel=opens
            )
            envelopes.append(Envelope(account.email, (rcpt,), build(html_part)))
    else:
        token = tracking.new_token(box)
        tokens.append((token, None))
        html_part = tracking.tracked_html(
            body_html, base_url=config.public_base_url, token=token, links=targets, pixel=opens
        )
        envelopes.append(Envelope(account.email, tuple(recipients), build(html_part)))
    thread_key = references[0] if references else message_id
    try:
        with session_scope(db) as session:
            sent = sending.create_sent(
                session,
                team_id=draft.team_id,
                user_id=draft.user_id,
                account_id=draft.account_id,
                compose_key=draft.compose_key,
                message_id=message_id,
                thread_key=thread_key,
                subject=draft.subject,
                recipients=json.dumps(
                    [{"email": a, "role": "to"} for a in to] + [{"email": a, "role": "cc"} for a in cc]
                ),
                links=json.dumps(targets),
                track_opens=opens,
                track_links=links,
                notify=tracked and draft.notify,
                per_recipient=per_recipient,
            )
            sent_id = sent.id
            assert sent_id is not None
            for token_value, owner in tokens:
                sending.add_token(session, sent_email_id=sent_id, token=token_value, recipient=owner)
    except IntegrityError:
        # The same modal submitted again (a double click, a retried request): it already sent.
        return SendResult(error="This email was already sent.", fix="Open a new compose window to send another.")
    result = SendResult(sent_email_id=sent_id, tracked=tracked)
    try:
        login = _smtp_login(db, box, config, account)
        outcomes = send_envelopes(
            login,
            envelopes,
            timeout=config.timeout,
            max_bytes=config.max_bytes,
            ssl_context=config.ssl_context,
            outbound=config.outbound,
        )
    except SyncError as exc:
        outcomes = [Outcome(r, False, exc.message) for r in recipients]
        result.error, result.fix = exc.message, exc.fix
    result.delivered = [o.recipient for o in outcomes if o.ok]
    result.failed = [(o.recipient, o.reason) for o in outcomes if not o.ok]
    status = "sent" if not result.failed else "partial" if result.delivered else "failed"
    with session_scope(db) as session:
        sending.finish_sent(
            session,
            sent_email_id=sent_id,
            delivered=json.dumps(result.delivered),
            failed=json.dumps([{"email": e, "reason": r} for e, r in result.failed]),
            status=status,
        )
    if result.delivered and account.imap_host.lower() not in SAVES_OWN_SENT and account.oauth_provider is None:
        result.sent_copy_problem = _save_sent_copy(db, box, config, account, untracked)
    return result


def _references(db: Engine, draft: Draft) -> list[str]:
    assert draft.reply_to is not None
    with session_scope(db, readonly=True) as session:
        who = find_queries.viewer(session, team_id=draft.team_id, user_id=draft.user_id)
        message = find_queries.visible_message(session, who, draft.reply_to)
        if message is None:
            raise ComposeError("to", "The email you reply to is not visible to you any more.")
        msgid = message.key if message.key.startswith("<") else None
        root = message.thread if message.thread.startswith("<") else None
    refs = [r for r in (root, msgid) if r]
    return list(dict.fromkeys(refs))


def _smtp_login(db: Engine, box: SecretBox, config: SendConfig, account: EmailAccount) -> SmtpLogin:
    assert account.smtp_host is not None
    port = account.smtp_port or (465 if account.smtp_security == "tls" else 587)
    if account.auth_kind == "oauth":
        # The access token, refreshed if needed under the account's lease (never racing a sync's refresh).
        keeper = TokenKeeper(db, box, config.oauth)
        imap = keeper.login_outside_sync(account, owner=f"send:{account.id}")
        return SmtpLogin(
            account.smtp_host,
            port,
            security_of(account.smtp_security),
            account.username,
            imap.password,
            mechanism="xoauth2",
        )
    return SmtpLogin(
        account.smtp_host,
        port,
        security_of(account.smtp_security),
        account.username,
        box.decrypt(account.secret_encrypted),
    )


def _save_sent_copy(db: Engine, box: SecretBox, config: SendConfig, account: EmailAccount, data: bytes) -> str | None:
    """APPEND the untracked copy to Sent; a problem is returned as a sentence, never raised (the mail went)."""
    try:
        login = account_login(account, box.decrypt(account.secret_encrypted))
        folder = sent_folder_name(
            login, timeout=config.timeout, ssl_context=config.ssl_context, outbound=config.outbound
        )
        if folder is None:
            return "No Sent folder was found, so no copy was saved there."
        append_to_sent(
            login, folder, data, timeout=config.timeout, ssl_context=config.ssl_context, outbound=config.outbound
        )
    except SyncError as exc:
        log.warning("account %s: saving the sent copy failed (%s)", account.id, exc.code)
        return f"The copy in Sent could not be saved: {exc.message}"
    return None


def recent_sent(db: Engine, *, team_id: str, user_id: str, limit: int = 5) -> list[SentEmail]:
    """A person's last emails sent from Slack, newest first (for App Home)."""
    with session_scope(db, readonly=True) as session:
        rows = list(sending.recent_sent(session, team_id=team_id, user_id=user_id, limit=limit))
        for row in rows:
            session.expunge(row)
    return rows


def address_suggestions(db: Engine, *, team_id: str, text: str) -> list[tuple[str, str | None]]:
    """(address, name) for a To/Cc select: what was typed (when it looks like an address), then contacts."""
    typed = text.strip()
    out: list[tuple[str, str | None]] = []
    if "@" in typed:
        # Offered even when invalid, so the submission can say what is wrong with it as an inline error.
        out.append((normalise_email(typed) or typed[:150], None))
    with session_scope(db, readonly=True) as session:
        for contact in contact_queries.search_contacts(session, team_id=team_id, text=typed, limit=20):
            if contact.email not in [a for a, _ in out]:
                out.append((contact.email, contact.name))
    return out


def compose_defaults(
    db: Engine, config: SendConfig, *, team_id: str, user_id: str
) -> tuple[list[EmailAccount], UserSettings, bool]:
    """The person's mailboxes that can send, their tracking defaults, and whether tracking is allowed."""
    with session_scope(db, readonly=True) as session:
        accounts = [
            a
            for a in account_queries.accounts_of(session, team_id=team_id, user_id=user_id)
            if a.state != AccountState.DISCONNECTED and a.smtp_host
        ]
        prefs = prefs_queries.get_user_settings(session, team_id=team_id, user_id=user_id)
        for row in [*accounts, prefs]:
            if row in session:
                session.expunge(row)
    return accounts, prefs, tracking_allowed(db, config, team_id=team_id)


def set_workspace_tracking(db: Engine, *, team_id: str, enabled: bool) -> None:
    """An admin turns tracking on or off for the whole workspace."""
    with session_scope(db) as session:
        sending.set_team_tracking(session, team_id=team_id, enabled=enabled)
