"""The composition root: builds the database engine, secret box, notifier and engine deps from Settings."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from bot.settings import ConfigError, Settings
from models.db import make_engine, upgrade
from models.secrets import SecretBox, SecretKeyError, load_or_create_key_file, parse_keys
from sync.engine import EngineConfig, EngineDeps
from sync.notifier import LoggingNotifier, Notifier

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Long-lived objects shared by the CLI commands, the web app and the worker."""

    settings: Settings
    db: Engine
    secrets: SecretBox
    notifier: Notifier

    def engine_config(self) -> EngineConfig:
        """Engine tunables from the settings."""
        s = self.settings
        return EngineConfig(
            timeout=s.imap_timeout,
            max_message_bytes=s.max_message_bytes,
            poll_seconds=s.poll_seconds,
            lease_ttl=s.lease_ttl,
            slice_deadline_seconds=s.slice_deadline_seconds,
            exit_after_batch=s.test_exit_after_batch,
            outbound=s.outbound_policy,
        )

    def engine_deps(self, role: str) -> EngineDeps:
        """Engine dependencies, with a lease owner naming this process."""
        owner = f"{role}:{socket.gethostname()}:{os.getpid()}"
        return EngineDeps(
            db=self.db, secrets=self.secrets, notifier=self.notifier, config=self.engine_config(), owner=owner
        )


def build_services(settings: Settings, *, migrate: bool = True) -> Services:
    """Open the database (bringing embedded SQLite up to date) and load the secret key."""
    if settings.is_sqlite:
        _ensure_sqlite_dir(settings.database_url)
    db = make_engine(settings.database_url)
    if migrate and settings.is_sqlite:
        upgrade(db)
    return Services(settings=settings, db=db, secrets=load_secret_box(settings), notifier=LoggingNotifier())


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
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
