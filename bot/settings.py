"""The one typed settings object, read once at start from the environment and `.env`."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.connect_limits import AttemptLimits
from sync.oauth import MailServer, OAuthProvider, OAuthProviders, google_provider, microsoft_provider
from sync.outbound import OutboundPolicy

GOOGLE_DISCOVERY = "https://accounts.google.com/.well-known/openid-configuration"
MICROSOFT_DISCOVERY = "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what to do."""


class Settings(BaseSettings):
    """Every setting of the app; see README "Configuration"."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field("sqlite:///./emailsync.db", alias="DATABASE_URL")
    secret_key: str | None = Field(None, alias="EMAILSYNC_SECRET_KEY")
    slack_bot_token: str | None = Field(None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(None, alias="SLACK_APP_TOKEN")
    slack_client_id: str | None = Field(None, alias="SLACK_CLIENT_ID")
    slack_client_secret: str | None = Field(None, alias="SLACK_CLIENT_SECRET")
    slack_api_url: str = Field("https://slack.com/api/", alias="SLACK_API_URL")
    public_base_url: str | None = Field(None, alias="PUBLIC_BASE_URL")
    port: int = Field(3000, alias="PORT", ge=1, le=65535)
    host: str = Field("0.0.0.0", alias="HOST")
    # Which peers may set X-Forwarded-For/-Proto (a reverse proxy): uvicorn's default, but from .env too,
    # and a typo is an error here where uvicorn would silently trust nobody.
    forwarded_allow_ips: str = Field("127.0.0.1,::1", alias="FORWARDED_ALLOW_IPS")
    backend: Literal["local", "procrastinate"] = Field("local", alias="EMAILSYNC_BACKEND")
    data_dir: Path = Field(Path("./.emailsync"), alias="EMAILSYNC_DATA_DIR")
    env: Literal["development", "production"] = Field("development", alias="EMAILSYNC_ENV")
    # Engine tuning; defaults suit a laptop and a small team.
    poll_seconds: int = Field(120, alias="EMAILSYNC_POLL_SECONDS", ge=5)
    tick_seconds: float = Field(5.0, alias="EMAILSYNC_TICK_SECONDS", gt=0)
    workers: int = Field(4, alias="EMAILSYNC_WORKERS", ge=1, le=64)
    max_message_bytes: int = Field(25 * 1024 * 1024, alias="EMAILSYNC_MAX_MESSAGE_BYTES", ge=1024)
    imap_timeout: float = Field(30.0, alias="EMAILSYNC_IMAP_TIMEOUT", gt=0)
    lease_ttl: float = Field(120.0, alias="EMAILSYNC_LEASE_TTL", gt=0)
    # Many machines (EMAILSYNC_BACKEND=procrastinate): a worker silent this long has its jobs finished as
    # failed by the clock; a standby clock retries (and the clock checks its connection) this often.
    stall_seconds: float = Field(60.0, alias="EMAILSYNC_STALL_SECONDS", gt=0)
    clock_seconds: float = Field(5.0, alias="EMAILSYNC_CLOCK_SECONDS", gt=0)
    slice_seconds: float = Field(300.0, alias="EMAILSYNC_SLICE_SECONDS", gt=0)
    # How long one IMAP IDLE lasts before it is ended and issued again: RFC 2177 says before 29 minutes.
    idle_seconds: float = Field(1500.0, alias="EMAILSYNC_IDLE_SECONDS", gt=0, le=1740)
    # The overall deadline of one slice (a stuck or dripping server); unset: EMAILSYNC_SLICE_SECONDS + 60.
    slice_deadline: float | None = Field(None, alias="EMAILSYNC_SLICE_DEADLINE", gt=0)
    # Outbound policy: a typed mail server may only be a public address on a mail port, unless allowed here.
    allow_private_hosts: str = Field("", alias="EMAILSYNC_ALLOW_PRIVATE_HOSTS")  # CIDRs, comma-separated
    allow_ports: str = Field("", alias="EMAILSYNC_ALLOW_PORTS")  # ports or ranges beyond the mail ports
    # Connection tests from the connect page: an overall deadline, a pool of their own, failure limits.
    connect_deadline: float = Field(20.0, alias="EMAILSYNC_CONNECT_DEADLINE", gt=0, le=300)
    connect_workers: int = Field(4, alias="EMAILSYNC_CONNECT_WORKERS", ge=1, le=64)
    connect_queue: int = Field(8, alias="EMAILSYNC_CONNECT_QUEUE", ge=0, le=1000)
    connect_failures_per_link: int = Field(5, alias="EMAILSYNC_CONNECT_FAILURES_PER_LINK", ge=1)
    connect_failures_per_person: int = Field(10, alias="EMAILSYNC_CONNECT_FAILURES_PER_PERSON", ge=1)
    connect_failures_per_host: int = Field(30, alias="EMAILSYNC_CONNECT_FAILURES_PER_HOST", ge=1)
    connect_failure_window_minutes: int = Field(15, alias="EMAILSYNC_CONNECT_FAILURE_WINDOW_MINUTES", ge=1)
    # Web process limits: Slack's payloads are a few KB and the connect form smaller still.
    max_body_bytes: int = Field(1024 * 1024, alias="EMAILSYNC_MAX_BODY_BYTES", ge=1024)
    client_timeout: float = Field(10.0, alias="EMAILSYNC_CLIENT_TIMEOUT", gt=0)
    # Bookkeeping retention: Slack retries an event within minutes; runs only feed progress and summaries.
    slack_event_retention_hours: float = Field(24.0, alias="EMAILSYNC_SLACK_EVENT_RETENTION_HOURS", gt=0)
    run_retention_days: float = Field(30.0, alias="EMAILSYNC_RUN_RETENTION_DAYS", gt=0)
    # App Home is republished by syncs at most this often per person (a burst of reports makes one publish).
    home_publish_seconds: float = Field(5.0, alias="EMAILSYNC_HOME_PUBLISH_SECONDS", ge=0)
    # On stop, queued Slack messages get this long to be sent (a 429's Retry-After included).
    slack_drain_seconds: float = Field(10.0, alias="EMAILSYNC_SLACK_DRAIN_SECONDS", ge=0)
    # Sending from Slack and tracking (DESIGN section 13). EMAILSYNC_TRACKING=false turns every pixel and
    # rewritten link off for the whole installation, whatever workspaces and people chose.
    tracking_enabled: bool = Field(True, alias="EMAILSYNC_TRACKING")
    send_max_bytes: int = Field(25 * 1000 * 1000, alias="EMAILSYNC_SEND_MAX_BYTES", ge=1024)  # Gmail's 25 MB
    sends_per_hour: int = Field(60, alias="EMAILSYNC_SENDS_PER_HOUR", ge=1)  # per account
    # Hits this soon after sending are the recipient's server fetching, not a person reading.
    tracking_quiet_seconds: float = Field(5.0, alias="EMAILSYNC_TRACKING_QUIET_SECONDS", ge=0)
    tracking_event_retention_days: float = Field(90.0, alias="EMAILSYNC_TRACKING_EVENT_RETENTION_DAYS", gt=0)
    # Sign in with Google / Microsoft (OAuth 2.0): each is offered once its client id and secret are set.
    google_client_id: str | None = Field(None, alias="GOOGLE_CLIENT_ID")
    google_client_secret: str | None = Field(None, alias="GOOGLE_CLIENT_SECRET", repr=False)
    google_oidc_discovery_url: str = Field(GOOGLE_DISCOVERY, alias="GOOGLE_OIDC_DISCOVERY_URL")
    google_imap_server: str = Field("imap.gmail.com:993", alias="GOOGLE_IMAP_SERVER")
    google_smtp_server: str = Field("smtp.gmail.com:465", alias="GOOGLE_SMTP_SERVER")
    microsoft_client_id: str | None = Field(None, alias="MICROSOFT_CLIENT_ID")
    microsoft_client_secret: str | None = Field(None, alias="MICROSOFT_CLIENT_SECRET", repr=False)
    microsoft_tenant: str = Field("common", alias="MICROSOFT_TENANT", pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,99}$")
    microsoft_oidc_discovery_url: str = Field(MICROSOFT_DISCOVERY, alias="MICROSOFT_OIDC_DISCOVERY_URL")
    microsoft_imap_server: str = Field("outlook.office365.com:993", alias="MICROSOFT_IMAP_SERVER")
    microsoft_smtp_server: str = Field("smtp.office365.com:587", alias="MICROSOFT_SMTP_SERVER")
    # Test-only: exit the process hard right after committing batch N, so crash tests crash where meant.
    test_exit_after_batch: int | None = Field(None, alias="EMAILSYNC_TEST_EXIT_AFTER_BATCH")

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("use sqlite:///path.db or postgresql://user@host/db")
        if value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @field_validator("allow_private_hosts", "allow_ports")
    @classmethod
    def _valid_policy(cls, value: str, info: ValidationInfo) -> str:
        try:
            if info.field_name == "allow_ports":
                OutboundPolicy.parse(ports=value)
            else:
                OutboundPolicy.parse(networks=value)
        except ValueError as exc:
            raise ValueError(f"{exc}; use a comma-separated list like 10.0.0.0/8 or 1024-65535") from None
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        if items == ["*"]:
            return "*"
        for item in items:
            try:
                if "/" in item:
                    ipaddress.ip_network(item)  # strict, as uvicorn parses it: 10.0.0.0/8, not 10.0.0.1/8
                else:
                    ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network; use a comma-separated list like "
                    "127.0.0.1,10.0.0.0/8 (or * to trust every peer, only when nothing else can reach the port)"
                ) from None
        return ",".join(items)

    @field_validator("google_imap_server", "google_smtp_server", "microsoft_imap_server", "microsoft_smtp_server")
    @classmethod
    def _valid_server(cls, value: str, info: ValidationInfo) -> str:
        smtp = (info.field_name or "").endswith("smtp_server")
        MailServer.parse(value, starttls_ports=(25, 587, 2525) if smtp else (143,))
        return value

    @field_validator("google_oidc_discovery_url", "microsoft_oidc_discovery_url")
    @classmethod
    def _valid_discovery_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("use the https:// address of the provider's OpenID configuration document")
        return value

    def oauth_providers(self) -> OAuthProviders:
        """The sign-in providers whose client id and secret are set, and why each other one is off."""
        found: dict[str, OAuthProvider] = {}
        missing: dict[str, str] = {}
        for name, client_id, secret in (
            ("google", self.google_client_id, self.google_client_secret),
            ("microsoft", self.microsoft_client_id, self.microsoft_client_secret),
        ):
            prefix = name.upper()
            unset = [n for n, v in ((f"{prefix}_CLIENT_ID", client_id), (f"{prefix}_CLIENT_SECRET", secret)) if not v]
            if unset:
                missing[name] = f"{' and '.join(unset)} {'is' if len(unset) == 1 else 'are'} not set"
            elif name == "google":
                found[name] = google_provider(
                    client_id or "",
                    secret or "",
                    self.google_oidc_discovery_url,
                    self.google_imap_server,
                    self.google_smtp_server,
                )
            else:
                found[name] = microsoft_provider(
                    client_id or "",
                    secret or "",
                    self.microsoft_oidc_discovery_url,
                    self.microsoft_tenant,
                    self.microsoft_imap_server,
                    self.microsoft_smtp_server,
                )
        return OAuthProviders(found, missing=missing)

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """Where typed mail server names may make this app connect."""
        return OutboundPolicy.parse(self.allow_private_hosts, self.allow_ports)

    @property
    def attempt_limits(self) -> AttemptLimits:
        """The failure limits of connection tests from the connect page."""
        return AttemptLimits(
            per_link=self.connect_failures_per_link,
            per_person=self.connect_failures_per_person,
            per_host=self.connect_failures_per_host,
            window=dt.timedelta(minutes=self.connect_failure_window_minutes),
        )

    @property
    def slice_deadline_seconds(self) -> float:
        """The overall deadline of one sync slice: the setting, else the slice budget plus a minute."""
        return self.slice_deadline if self.slice_deadline is not None else self.slice_seconds + 60.0

    @property
    def is_sqlite(self) -> bool:
        """True when the database is an embedded SQLite file."""
        return self.database_url.startswith("sqlite:")


def load_settings(**overrides: object) -> Settings:
    """Read the settings once; raise ConfigError naming the first bad setting."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = _env_name(str(err["loc"][0])) if err["loc"] else "settings"
        raise ConfigError(f"{name}: {err['msg']}. Fix it in the environment or .env and start again.") from None
    if settings.env == "production" and not settings.secret_key:
        raise ConfigError(
            "EMAILSYNC_SECRET_KEY: not set, and production refuses to invent one. "
            "Generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )
    if settings.backend == "procrastinate" and settings.is_sqlite:
        raise ConfigError("EMAILSYNC_BACKEND: procrastinate needs PostgreSQL; set DATABASE_URL to a postgresql:// URL.")
    return settings


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    return (info.alias if info and info.alias else field).upper()
