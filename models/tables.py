"""The SQLModel tables: accounts, folders, messages and where they live, contacts, runs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.clock import utcnow
from models.states import AccountState, RunKind, RunStatus


class UserSettings(SQLModel, table=True):
    """A person's general settings (personal: one Slack user in one team)."""

    __tablename__ = "user_settings"
    team_id: str = Field(primary_key=True, max_length=32)
    user_id: str = Field(primary_key=True, max_length=32)
    default_visibility: str = Field(default="private", max_length=16)  # private | shared
    track_opens: bool = True
    track_links: bool = True
    notify_tracking: bool = True
    notification_level: str = Field(default="everything", max_length=16)  # everything | errors | nothing
    # The weekly "people who are not contacts yet" DM: weekday (0 = Monday; None = off) and hour, local time.
    digest_day: int | None = Field(default=0)
    digest_hour: int = Field(default=9)
    timezone: str | None = Field(default=None, max_length=64)  # IANA name from Slack's users.info, for the digest


class EmailAccount(SQLModel, table=True):
    """A connected mailbox, its sync choices and its scheduling state."""

    __tablename__ = "email_account"
    __table_args__ = (UniqueConstraint("team_id", "user_id", "email", name="uq_account_owner_email"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(index=True, max_length=32)
    user_id: str = Field(index=True, max_length=32)
    email: str = Field(max_length=320)
    imap_host: str = Field(max_length=255)
    imap_port: int = 993
    imap_security: str = Field(default="tls", max_length=16)  # tls | starttls
    username: str = Field(max_length=320)
    secret_encrypted: str = Field(sa_column=Column(Text, nullable=False), repr=False)  # "" for an OAuth account
    auth_kind: str = Field(default="password", max_length=16)  # password | oauth
    oauth_provider: str | None = Field(default=None, max_length=16)  # google | microsoft
    oauth_access_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    oauth_refresh_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    oauth_expires_at: dt.datetime | None = None  # absolute expiry of the access token
    oauth_scope: str | None = Field(default=None, sa_column=Column(Text))  # granted, space-separated
    smtp_host: str | None = Field(default=None, max_length=255)
    smtp_port: int | None = None
    smtp_security: str | None = Field(default=None, max_length=16)
    state: str = Field(default=AccountState.ACTIVE, max_length=16, index=True)  # an AccountState
    sync_mode: str = Field(default="all", max_length=16)  # all | labels
    start_option: str = Field(default="now", max_length=16)  # now | 1m | 3m | 6m | 1y | date
    start_date: dt.date | None = None  # absolute start of the past sync; None for "now"
    contact_scope: str = Field(default="all", max_length=16)  # all | contacts (past mail only)
    visibility: str = Field(default="private", max_length=16)
    next_sync_at: dt.datetime | None = Field(default=None, index=True)
    failures: int = 0
    sync_requested: bool = False  # "Sync now" pressed during a run: run again right after it
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_until: dt.datetime | None = None
    lease_token: int = 0  # fencing token, bumped by every acquisition
    current_run_id: int | None = None
    last_error_code: str | None = Field(default=None, max_length=32)
    last_error_message: str | None = Field(default=None, sa_column=Column(Text))
    last_error_at: dt.datetime | None = None
    last_synced_at: dt.datetime | None = None
    paused_reason: str | None = Field(default=None, max_length=32)  # user | uninstalled | user_deactivated
    error_notified_code: str | None = Field(default=None, max_length=32)  # the error last told to the owner
    error_notified_at: dt.datetime | None = None
    sweep_pending: bool = False  # locations were removed: delete messages no folder holds once backfills finish
    created_at: dt.datetime = Field(default_factory=utcnow)


class BlockedAddress(SQLModel, table=True):
    """An address (a@b.c) or a whole domain (b.c) whose mail a person never syncs."""

    __tablename__ = "blocked_address"
    __table_args__ = (UniqueConstraint("team_id", "user_id", "pattern", name="uq_blocked_pattern"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    user_id: str = Field(max_length=32)
    pattern: str = Field(max_length=320)


class Folder(SQLModel, table=True):
    """An IMAP folder of an account with its sync cursors.

    Every number the server gives (UIDVALIDITY, UIDs, UIDNEXT, MESSAGES, MODSEQ) is BIGINT: UIDs and
    UIDVALIDITY reach 2^32-1 and MODSEQ 2^63-1, beyond a 32-bit INTEGER on PostgreSQL.
    """

    __tablename__ = "folder"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_folder_account_name"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    name: str = Field(max_length=1000)
    role: str | None = Field(default=None, max_length=16)  # inbox sent trash junk drafts archive all
    selected: bool = True
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    # UIDNEXT when the folder was first seen: below is past mail
    setup_uidnext: int | None = Field(default=None, sa_type=BigInteger)
    fwd_uid: int = Field(default=0, sa_type=BigInteger)  # highest UID of new mail committed
    backfill_hi: int = Field(default=0, sa_type=BigInteger)  # past sync: UIDs below this remain to do (newest first)
    backfill_done: bool = False
    backfill_since: dt.date | None = None
    backfill_before: dt.date | None = None  # a widened window only needs mail older than the previous start
    backfill_scope: str = Field(default="all", max_length=16)
    rematch: bool = False  # after a UIDVALIDITY change: match by Message-ID + size before fetching
    highestmodseq: int | None = Field(default=None, sa_type=BigInteger)
    last_uidnext: int | None = Field(default=None, sa_type=BigInteger)
    last_messages: int | None = Field(default=None, sa_type=BigInteger)
    last_flag_pass_at: dt.datetime | None = None


class Message(SQLModel, table=True):
    """One email, stored once however many folders hold it."""

    __tablename__ = "message"
    __table_args__ = (
        Index("ix_message_account_msgid_size", "account_id", "message_id", "size"),
        Index("ix_message_account_hash", "account_id", "content_hash"),
        Index("ix_message_account_gmid", "account_id", "gm_msgid"),
        Index("ix_message_account_created", "account_id", "created_at"),  # "stored in this run" stays cheap
        Index("ix_message_team_thread", "team_id", "thread_key"),  # a thread's messages, for the thread view
        Index("ix_message_account_internal", "account_id", "internal_date"),  # one person's week, for the digest
    )
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False)
    )
    team_id: str = Field(index=True, max_length=32)
    message_id: str | None = Field(default=None, max_length=998)
    gm_msgid: int | None = Field(default=None, sa_type=BigInteger)  # Gmail's X-GM-MSGID, 64-bit
    size: int = Field(default=0, sa_type=BigInteger)  # RFC822.SIZE: unsigned 32-bit
    content_hash: str | None = Field(default=None, max_length=64)
    thread_key: str | None = Field(default=None, max_length=998)
    subject: str | None = Field(default=None, sa_column=Column(Text))
    date: dt.datetime | None = None
    internal_date: dt.datetime | None = None
    direction: str = Field(default="received", max_length=8)
    visibility: str = Field(default="private", max_length=16)
    snippet: str | None = Field(default=None, sa_column=Column(Text))
    text_body: str | None = Field(default=None, sa_column=Column(Text))
    html_body: str | None = Field(default=None, sa_column=Column(Text))
    attachments: str | None = Field(default=None, sa_column=Column(Text))  # JSON: [{name,type,size}]
    truncated: bool = False
    bulk: bool = False  # List-Id or Precedence: bulk/list/junk: a mailing, never a person to suggest
    created_at: dt.datetime = Field(default_factory=utcnow)


class MessageLocation(SQLModel, table=True):
    """Where a message sits: folder, UIDVALIDITY, UID, flags."""

    __tablename__ = "message_location"
    __table_args__ = (UniqueConstraint("folder_id", "uidvalidity", "uid", name="uq_location_uid"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(
        sa_column=Column(Integer, ForeignKey("message.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    folder_id: int = Field(sa_column=Column(Integer, ForeignKey("folder.id", ondelete="CASCADE"), nullable=False))
    uidvalidity: int = Field(sa_type=BigInteger)
    uid: int = Field(sa_type=BigInteger)
    flags: str = Field(default="", max_length=1000)  # space-separated, sorted


class MessageAddress(SQLModel, table=True):
    """One address of a message header (from, sender, reply_to, to, cc, bcc), lower-cased."""

    __tablename__ = "message_address"
    # (email, message_id): finding a person's mail reads the index alone, no table row per address.
    __table_args__ = (Index("ix_message_address_email_message", "email", "message_id"),)
    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(
        sa_column=Column(Integer, ForeignKey("message.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    role: str = Field(max_length=8)
    position: int = 0
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=1000)


class Contact(SQLModel, table=True):
    """A team's CRM contact; messages link to it through their addresses."""

    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("team_id", "email", name="uq_contact_team_email"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=1000)
    source: str = Field(default="import", max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)


class IgnoredAddress(SQLModel, table=True):
    """An address a person never wants suggested as a contact again ("Ignore" in the weekly DM)."""

    __tablename__ = "ignored_address"
    __table_args__ = (UniqueConstraint("team_id", "user_id", "email", name="uq_ignored_address"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    user_id: str = Field(max_length=32)
    email: str = Field(max_length=320)
    created_at: dt.datetime = Field(default_factory=utcnow)


class PeopleDigest(SQLModel, table=True):
    """One weekly "people who are not contacts yet" DM: what it suggested, and where it was posted."""

    __tablename__ = "people_digest"
    __table_args__ = (UniqueConstraint("team_id", "user_id", "period", name="uq_people_digest_period"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    user_id: str = Field(max_length=32)
    period: dt.date  # the local day it is due: one digest per person and week, however many workers tick
    window_start: dt.datetime
    window_end: dt.datetime
    suggestions: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON, see flows/people.py
    slack_channel: str | None = Field(default=None, max_length=32)
    slack_ts: str | None = Field(default=None, max_length=32)
    created_at: dt.datetime = Field(default_factory=utcnow)


class SyncRun(SQLModel, table=True):
    """One logical sync of an account (possibly executed in several slices)."""

    __tablename__ = "sync_run"
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    kind: str = Field(default=RunKind.INCREMENTAL, max_length=16)  # a RunKind
    status: str = Field(default=RunStatus.RUNNING, max_length=16)  # a RunStatus
    started_at: dt.datetime = Field(default_factory=utcnow)
    finished_at: dt.datetime | None = None
    slices: int = 0
    total: int = 0
    processed: int = 0
    stored: int = 0
    skipped: int = 0
    failed_messages: int = 0
    contacts_matched: int = 0
    error_code: str | None = Field(default=None, max_length=32)
    error_message: str | None = Field(default=None, sa_column=Column(Text))
    slack_channel: str | None = Field(default=None, max_length=32)
    slack_ts: str | None = Field(default=None, max_length=32)
    slack_updated_at: dt.datetime | None = None  # last progress edit: at most one per 5 s per run


class IdleWatch(SQLModel, table=True):
    """Which worker process watches an account's INBOX with IDLE: a lease like the sync lease, one owner at a time."""

    __tablename__ = "idle_watch"
    account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("email_account.id", ondelete="CASCADE"), primary_key=True)
    )
    owner: str | None = Field(default=None, max_length=128)
    lease_until: dt.datetime | None = None
    token: int = 0  # bumped by every claim: a takeover is visible


class SchedulerHeartbeat(SQLModel, table=True):
    """When the scheduler tick last ran, for /healthz."""

    __tablename__ = "scheduler_heartbeat"
    name: str = Field(primary_key=True, max_length=32)
    owner: str = Field(max_length=128)
    ticked_at: dt.datetime = Field(default_factory=utcnow)


class SetupSession(SQLModel, table=True):
    """One person's setup in progress: the draft choices, the one-time connect link, the modal it drives."""

    __tablename__ = "setup_session"
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32, index=True)
    user_id: str = Field(max_length=32)
    token_hash: str = Field(max_length=64, index=True, repr=False)  # sha256 of the one-time connect token
    expires_at: dt.datetime
    used_at: dt.datetime | None = None
    purpose: str = Field(default="setup", max_length=16)  # setup | reconnect
    account_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("email_account.id", ondelete="CASCADE"), nullable=True)
    )
    view_id: str | None = Field(default=None, max_length=32)
    step: str = Field(default="connect", max_length=16)
    draft: str = Field(default="{}", sa_column=Column(Text, nullable=False))  # JSON of the choices made so far
    finished_at: dt.datetime | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    failed_attempts: int = 0  # failed connection tests through this link
    locked_reason: str | None = Field(default=None, max_length=16)  # "failures": used up by too many
    # A sign-in with Google/Microsoft in progress: sha256 of its one-time `state` (or of the token of the
    # "which address?" choice), and the flow itself (PKCE verifier, nonce, tokens awaiting the choice) encrypted.
    oauth_state_hash: str | None = Field(default=None, max_length=64, index=True, repr=False)
    oauth_flow_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)


class ConnectFailure(SQLModel, table=True):
    """A failed connection test from the connect page (no secret), for the per-person and per-server limits."""

    __tablename__ = "connect_failure"
    __table_args__ = (Index("ix_connect_failure_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    user_id: str = Field(max_length=32)
    host: str = Field(max_length=255)
    code: str = Field(max_length=32)
    at: dt.datetime = Field(default_factory=utcnow)


class ProcessedSlackEvent(SQLModel, table=True):
    """Slack event ids already handled, so a retried delivery never runs twice."""

    __tablename__ = "processed_slack_event"
    event_id: str = Field(primary_key=True, max_length=64)
    seen_at: dt.datetime = Field(default_factory=utcnow)


class SlackInstallation(SQLModel, table=True):
    """The app installed in a workspace (or org) by one person, with every token encrypted at rest.

    slack_sdk's stock installation tables keep tokens in plain text in String(200) columns, too short
    for ciphertext; bot/installation_store.py maps this row to slack_sdk's Installation and Bot.
    """

    __tablename__ = "slack_installation"
    id: int | None = Field(default=None, primary_key=True)
    app_id: str | None = Field(default=None, max_length=32)
    enterprise_id: str | None = Field(default=None, max_length=32, index=True)
    enterprise_name: str | None = Field(default=None, max_length=255)
    enterprise_url: str | None = Field(default=None, max_length=255)
    team_id: str | None = Field(default=None, max_length=32, index=True)  # None for an org-wide install
    team_name: str | None = Field(default=None, max_length=255)
    is_enterprise_install: bool = False
    token_type: str | None = Field(default=None, max_length=16)
    bot_id: str | None = Field(default=None, max_length=32)
    bot_user_id: str | None = Field(default=None, max_length=32)
    bot_scopes: str | None = Field(default=None, sa_column=Column(Text))  # comma-separated
    bot_token_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    bot_refresh_token_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    bot_token_expires_at: dt.datetime | None = None  # only with token rotation
    user_id: str = Field(max_length=32)  # the installer
    user_scopes: str | None = Field(default=None, sa_column=Column(Text))
    user_token_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    user_refresh_token_encrypted: str | None = Field(default=None, sa_column=Column(Text), repr=False)
    user_token_expires_at: dt.datetime | None = None
    installed_at: dt.datetime = Field(default_factory=utcnow)


class SlackOAuthState(SQLModel, table=True):
    """An OAuth `state` issued by /slack/install, used up by /slack/oauth_redirect (not a secret)."""

    __tablename__ = "slack_oauth_state"
    id: int | None = Field(default=None, primary_key=True)
    state: str = Field(max_length=200, index=True)
    expire_at: dt.datetime


class TeamSettings(SQLModel, table=True):
    """Workspace-wide settings an admin chooses (open and click tracking on or off)."""

    __tablename__ = "team_settings"
    team_id: str = Field(primary_key=True, max_length=32)
    tracking_enabled: bool = True


class SentEmail(SQLModel, table=True):
    """One email sent from Slack: what was sent, to whom, what it tracks, and its Slack DM."""

    __tablename__ = "sent_email"
    __table_args__ = (
        UniqueConstraint("compose_key", name="uq_sent_email_compose_key"),
        Index("ix_sent_email_account_msgid", "account_id", "message_id"),
        Index("ix_sent_email_owner", "team_id", "user_id", "sent_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    team_id: str = Field(max_length=32)
    user_id: str = Field(max_length=32)
    account_id: int = Field(
        sa_column=Column(Integer, ForeignKey("email_account.id", ondelete="CASCADE"), nullable=False)
    )
    compose_key: str = Field(max_length=64)  # the modal's view id: one submission sends once, never twice
    message_id: str = Field(max_length=998)  # our own Message-ID, as sent (with the angle brackets)
    thread_key: str = Field(max_length=998)  # as sync/parse.py computes it: a reply in the mailbox shares it
    subject: str = Field(default="", sa_column=Column(Text, nullable=False))
    recipients: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON: [{email, role}]
    delivered: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON: addresses accepted
    failed: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON: [{email, reason}]
    links: str = Field(default="[]", sa_column=Column(Text, nullable=False))  # JSON: the http(s) targets, by n
    track_opens: bool = False
    track_links: bool = False
    notify: bool = False
    per_recipient: bool = True  # False: over 10 recipients, one token for everyone ("someone opened")
    status: str = Field(default="sending", max_length=16)  # sending | sent | partial | failed
    sent_at: dt.datetime = Field(default_factory=utcnow)
    opens: int = 0  # human opens, for the DM and App Home
    clicks: int = 0
    last_open_at: dt.datetime | None = None
    slack_channel: str | None = Field(default=None, max_length=32)
    slack_ts: str | None = Field(default=None, max_length=32)  # "pending" while one process posts it


class TrackToken(SQLModel, table=True):
    """The tracking token of one recipient of a sent email (or of the whole email when tracked per message)."""

    __tablename__ = "track_token"
    id: int | None = Field(default=None, primary_key=True)
    sent_email_id: int = Field(
        sa_column=Column(Integer, ForeignKey("sent_email.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    token: str = Field(max_length=64, unique=True, repr=False)
    recipient: str | None = Field(default=None, max_length=320)  # None: tracked per message


class TrackEvent(SQLModel, table=True):
    """One open or click, a person's or a machine's (with the reason); kept 90 days."""

    __tablename__ = "track_event"
    __table_args__ = (Index("ix_track_event_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    sent_email_id: int = Field(
        sa_column=Column(Integer, ForeignKey("sent_email.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    token_id: int = Field(sa_column=Column(Integer, ForeignKey("track_token.id", ondelete="CASCADE"), nullable=False))
    kind: str = Field(max_length=8)  # open | click
    link: int | None = None  # the n of /t/c/{token}/{n}
    human: bool = False
    reason: str | None = Field(default=None, max_length=16)  # head | apple_mpp | scanner | too_soon | sender
    user_agent: str | None = Field(default=None, max_length=512)
    at: dt.datetime = Field(default_factory=utcnow)
