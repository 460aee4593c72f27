"""The migrations build exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlmodel import SQLModel

import models.tables  # noqa: F401
from models.db import alembic_config, make_engine, owned_by_app, upgrade
from tests.conftest import PG_ADMIN_URL


def test_migrations_match_the_models(db):
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": owned_by_app})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def blank_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database of its own, for migrating step by step."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'blank.db'}")
        yield engine
        engine.dispose()
        return
    name = f"emailsync_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}")
    try:
        yield engine
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


ROWS = [
    "INSERT INTO email_account (id, team_id, user_id, email, imap_host, imap_port, imap_security, username,"
    " secret_encrypted, state, sync_mode, start_option, contact_scope, visibility, failures, sync_requested,"
    " lease_token, created_at) VALUES (1, 'T1', 'U1', 'a@x', 'imap.x', 993, 'tls', 'a@x', 's', 'active', 'all',"
    " 'now', 'all', 'private', 0, FALSE, 0, '2026-01-01 00:00:00')",
    "INSERT INTO folder (id, account_id, name, selected, uidvalidity, setup_uidnext, fwd_uid, backfill_hi,"
    " backfill_done, backfill_scope, rematch, highestmodseq, last_uidnext, last_messages)"
    " VALUES (1, 1, 'INBOX', TRUE, 2147483647, 10, 9, 0, TRUE, 'all', FALSE, 77, 10, 1)",
    "INSERT INTO message (id, account_id, team_id, gm_msgid, size, direction, visibility, truncated, created_at)"
    " VALUES (1, 1, 'T1', 2147483647, 1234, 'received', 'private', FALSE, '2026-01-01 00:00:00')",
    "INSERT INTO message_location (id, message_id, folder_id, uidvalidity, uid, flags)"
    " VALUES (1, 1, 1, 2147483647, 9, '\\Seen')",
    "INSERT INTO message_address (id, message_id, role, position, email) VALUES (1, 1, 'from', 0, 'b@x')",
]


def _contents(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    queries = {
        "folder": "SELECT uidvalidity, setup_uidnext, fwd_uid, highestmodseq, last_uidnext, last_messages FROM folder",
        "message": "SELECT id, gm_msgid, size FROM message",
        "message_location": "SELECT message_id, folder_id, uidvalidity, uid, flags FROM message_location",
        "message_address": "SELECT message_id, email FROM message_address",
    }
    with engine.connect() as conn:
        return {table: [tuple(r) for r in conn.exec_driver_sql(sql).all()] for table, sql in queries.items()}


def test_bigint_migration_keeps_every_row_and_the_foreign_keys(blank_db: Engine) -> None:
    # On SQLite the migration rebuilds `folder`, `message` and `message_location`; with foreign keys on,
    # dropping the old `message` would cascade and empty message_location and message_address.
    cfg = alembic_config(blank_db)
    command.upgrade(cfg, "0005")
    with blank_db.begin() as conn:
        for sql in ROWS:
            conn.exec_driver_sql(sql)
    before = _contents(blank_db)
    assert all(len(rows) == 1 for rows in before.values())

    upgrade(blank_db)
    assert _contents(blank_db) == before
    if blank_db.dialect.name == "sqlite":
        with blank_db.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # put back after the migration
    with blank_db.begin() as conn:
        conn.exec_driver_sql("UPDATE message_location SET uid = 4294967295")
        conn.exec_driver_sql("DELETE FROM message")  # the rebuilt tables still cascade
    after = _contents(blank_db)
    assert (after["message_location"], after["message_address"]) == ([], [])

    command.downgrade(cfg, "0005")  # fine while every value fits in 32 bits
    with blank_db.begin() as conn:
        for sql in ROWS[2:]:
            conn.exec_driver_sql(sql)
    assert _contents(blank_db) == before


@pytest.mark.postgres
def test_procrastinate_schema_is_applied_once_by_its_migration(tmp_path: Path) -> None:
    name = f"procr_mig_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = make_engine(PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}")

    def job_tables() -> set[str]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT tablename FROM pg_tables WHERE starts_with(tablename, 'procrastinate')")
            return {r[0] for r in rows}

    try:
        upgrade(engine)
        assert {"procrastinate_jobs", "procrastinate_workers", "procrastinate_events"} <= job_tables()
        upgrade(engine)  # a second `db upgrade` (another machine) applies nothing again
        command.downgrade(alembic_config(engine), "0010")
        assert job_tables() == set()
        upgrade(engine)
        assert "procrastinate_jobs" in job_tables()
    finally:
        engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
