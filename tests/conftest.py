"""Shared fixtures: a private Dovecot, SQLite and PostgreSQL databases, mailboxes and engine deps."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers the tables for TRUNCATE)
from flows.accounts import AccountDraft, add_account
from models.db import make_engine, upgrade
from models.secrets import SecretBox
from sync.engine import EngineConfig, EngineDeps, Outcome, sync_account
from sync.imap_session import ImapLogin
from tests.support.dovecot import DovecotServer, start_dovecot
from tests.support.mail import RecordingNotifier
from tests.support.network import LOOPBACK_POLICY

PG_ADMIN_URL = os.environ.get("EMAILSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_KEY = "yNk0zlX9u1z4Qy3QwXZC7bYV8m2dQdH7f1v6sY0kE2c="
_users = itertools.count(1)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    """One Dovecot for the whole run; each test gets its own user."""
    server = start_dovecot(tmp_path_factory.mktemp("dovecot"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated once, dropped at the end."""
    name = f"emailsync_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The database under test: a fresh SQLite file, or the run's PostgreSQL database."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        upgrade(engine)
    else:
        engine = make_engine(request.getfixturevalue("pg_database"))
        # Each test starts from empty tables, as with its own SQLite file.
        tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite database only (for tests where the backend does not matter)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


@dataclass
class Mailbox:
    """A Dovecot user of one test, with helpers to fill it."""

    server: DovecotServer
    user: str
    password: str

    @property
    def login(self) -> ImapLogin:
        """TLS login data for the engine."""
        return ImapLogin(self.server.host, self.server.imaps_port, "tls", self.user, self.password)

    def append(self, folder: str, raw: bytes, *, flags: tuple[str, ...] = (), date: dt.datetime | None = None) -> int:
        """APPEND and return the UID."""
        return self.server.append(self.user, self.password, folder, raw, flags=flags, internal_date=date)

    def create(self, folder: str) -> None:
        """Create a folder."""
        self.server.create_folder(self.user, self.password, folder)


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> Mailbox:
    """A fresh, empty mailbox (user) on the shared Dovecot."""
    user = f"user{next(_users)}_{uuid.uuid4().hex[:6]}"
    dovecot.add_user(user, "secret-pw")
    return Mailbox(dovecot, user, "secret-pw")


@pytest.fixture
def secrets() -> SecretBox:
    """A secret box with a fixed test key."""
    return SecretBox([TEST_KEY])


@pytest.fixture
def notifier() -> RecordingNotifier:
    """Records every notification."""
    return RecordingNotifier()


@pytest.fixture
def deps(db: Engine, secrets: SecretBox, notifier: RecordingNotifier, dovecot: DovecotServer) -> EngineDeps:
    """Engine dependencies against the test database and Dovecot."""
    config = EngineConfig(timeout=10, progress_seconds=0, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY)
    return EngineDeps(db=db, secrets=secrets, notifier=notifier, config=config, owner=f"test:{uuid.uuid4().hex[:6]}")


@pytest.fixture
def connect(deps: EngineDeps, mailbox: Mailbox) -> Callable[..., int]:
    """Connect the test mailbox as an account (through the real flow) and return its id."""
    team = f"T{uuid.uuid4().hex[:8]}"

    def _connect(**choices: object) -> int:
        email = f"{mailbox.user}@example.net"
        draft = AccountDraft(team_id=team, user_id="U1", email=email, imap=mailbox.login, **choices)  # type: ignore[arg-type]
        return add_account(
            deps.db, deps.secrets, draft, timeout=10, ssl_context=deps.config.ssl_context, outbound=LOOPBACK_POLICY
        )

    _connect.team = team  # type: ignore[attr-defined]
    return _connect


@pytest.fixture
def run_sync(deps: EngineDeps) -> Callable[[int], Outcome]:
    """Sync an account to completion (looping over slices)."""

    def _run(account_id: int) -> Outcome:
        while (outcome := sync_account(deps, account_id)) is Outcome.MORE:
            pass
        return outcome

    return _run


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (its own browser download is never used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (its own cookies)."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture(scope="module")
def all_stacks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Per test module: a sign-in provider, its Dovecot and its SMTP server, for each flavour."""
    from tests.support.signin import stacks

    with stacks(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])) as started:
        yield started


@pytest.fixture(params=["google", "microsoft"])
def stack(request: pytest.FixtureRequest, all_stacks: dict[str, Any]) -> Any:
    """One flavour's stack, its provider reset for this test."""
    chosen = all_stacks[request.param]
    chosen.idp.reset()
    return chosen
