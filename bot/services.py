"""The composition root: builds the database engine, secret box, notifier and engine deps from Settings."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from bot.settings import ConfigError, Settings
from models.db import make_engine, make_private, sqlite_path, upgrade_if_behind
from models.secrets import PRIVATE_DIR, SecretBox, SecretKeyError, load_or_create_key_file, parse_keys
from sync.notifier import LoggingNotifier, Notifier
from sync.oauth import OAuthProviders

if TYPE_CHECKING:  # the engine (IMAP, parsing) is imported by the commands that sync, not by every command
    from sync.engine import EngineConfig, EngineDeps

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Long-lived objects shared by the CLI commands, the web app and the worker."""

    settings: Settings
    db: Engine
    secrets: SecretBox
    notifier: Notifier
    oauth: OAuthProviders = field(default_factory=OAuthProviders)  # sign-in providers, with cached discovery

    def engine_config(self) -> EngineConfig:
        """Engine tunables from the settings."""
        from sync.engine import EngineConfig

        s = self.settings
        return EngineConfig(
            timeout=s.imap_timeout,
            max_message_bytes=s.max_message_bytes,
            poll_seconds=s.poll_seconds,
            lease_ttl=s.lease_ttl,
            slice_deadline_seconds=s.slice_deadline_seconds,
            exit_after_batch=s.test_exit_after_batch,
            outbound=s.outbound_policy,
            oauth=self.oauth,
        )

    def engine_deps(self, role: str) -> EngineDeps:
        """Engine dependencies, with a lease owner naming this process."""
        from sync.engine import EngineDeps

        owner = f"{role}:{socket.gethostname()}:{os.getpid()}"
        return EngineDeps(
            db=self.db, secrets=self.secrets, notifier=self.notifier, config=self.engine_config(), owner=owner
        )


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Open the database (bringing embedded SQLite up to date) and load the secret key."""
    if settings.is_sqlite:
        _ensure_sqlite_dir(settings.database_url)
    if settings.data_dir.is_dir():  # created private by the key file; one made by an older version is fixed
        make_private(settings.data_dir, PRIVATE_DIR)
    db = make_engine(settings.database_url)  # creates the SQLite file with mode 0600
    if migrate and settings.is_sqlite:
        upgrade_if_behind(db)  # a cheap revision check first: Alembic loads only when there is work
    return Services(
        settings=settings,
        db=db,
        secrets=load_secret_box(settings),
        notifier=LoggingNotifier(),
        oauth=settings.oauth_providers(),
    )


def log_sign_in_providers(oauth: OAuthProviders) -> None:
    """Say at start which sign-in providers are offered, and why each other one is not."""
    for provider in oauth.configured():
        log.info("Sign in with %s is on (%s)", provider.display_name, provider.discovery_url)
    for name, reason in oauth.missing.items():
        # One of the pair set and not the other is a mistake worth a warning; neither set is a choice.
        level = logging.WARNING if reason.endswith(" is not set") else logging.INFO
        log.log(level, "Sign in with %s is off: %s", name.capitalize(), reason)


def load_secret_box(settings: Settings) -> SecretBox:
    """The configured keys, or the embedded default key file (created on first use, mode 0600)."""
    if settings.secret_key:
        keys = parse_keys(settings.secret_key)
    else:
        key, created = load_or_create_key_file(settings.data_dir)
        if created:
            print(
                f"emailsync: no EMAILSYNC_SECRET_KEY set; created one in {settings.data_dir / 'secret.key'} "
                "(mode 0600). Back it up: without it stored passwords cannot be read.",
                file=sys.stderr,
            )
        keys = [key]
    try:
        return SecretBox(keys)
    except SecretKeyError as exc:
        raise ConfigError(str(exc)) from None


def _ensure_sqlite_dir(url: str) -> None:
    """Create the database's directory when missing, private (an existing one, such as the cwd, is left alone)."""
    path = sqlite_path(url)
    if path is not None:
        folder = path.resolve().parent
        if not folder.exists():
            folder.mkdir(parents=True, mode=PRIVATE_DIR)
            make_private(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
