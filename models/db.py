"""Database engine and session factory, and the Alembic upgrade that brings a database up to date."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlmodel import Session

log = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration. Compared with the database's stored revision at start, so a database that is up to
# date never loads Alembic (about half a second). tests/models/test_schema_head.py keeps it equal to
# Alembic's real head: add a migration, bump this.
HEAD_REVISION = "0012"
READONLY_OPTION = "emailsync_readonly"
PG_CONNECT_TIMEOUT = 10  # seconds
PRIVATE_FILE = 0o600  # the database holds mail bodies: readable by its owner only
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
# A process frozen inside a transaction (SIGSTOP, a hung VM) must not stop the others: PostgreSQL ends
# its session after this long, so its row locks go; and a statement waits at most this long for a lock.
IDLE_IN_TRANSACTION_MS = 30_000
LOCK_TIMEOUT_MS = 5_000


def postgres_session_options() -> str:
    """The libpq `options` every PostgreSQL session of the app starts with (see the timeouts above)."""
    return f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} -c lock_timeout={LOCK_TIMEOUT_MS}"


def application_name() -> str:
    """How this process names itself to PostgreSQL (pg_stat_activity): operators and tests find it by pid."""
    return f"emailsync:{os.getpid()}"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for an in-memory database or another backend."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def make_private(path: Path, mode: int = PRIVATE_FILE) -> None:
    """chmod to mode when the file is there and not already so (a file someone else owns is reported, not fatal)."""
    try:
        if path.exists() and (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
    except PermissionError:
        log.warning("%s: cannot make it private (mode %o); it is not ours", path, mode)


def create_private_sqlite(path: Path) -> None:
    """Create the database file with mode 0600 before SQLite does (SQLite would follow the umask: 0644)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, PRIVATE_FILE)  # whatever the umask
        os.close(fd)
    make_private(path)


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout, foreign keys and IMMEDIATE transactions.

    SQL parameters never appear in errors or logs (they can hold mail content); a SQLite file and its
    WAL are private to the user.
    """
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None and path.parent.is_dir():
            create_private_sqlite(path)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, begin transactions, so they can be IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
            if path is not None:
                # SQLite gives the WAL and shared-memory files the database's mode; files left by an
                # older version (0644) are fixed here.
                for suffix in SQLITE_SIDE_FILES:
                    make_private(path.with_name(path.name + suffix))

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # serve, worker and sync share one file: a deferred transaction that later writes can fail
            # at once with "database is locked"; IMMEDIATE waits for the busy timeout instead. A read-only
            # session needs no lock at all: in WAL mode its snapshot never waits for a writer.
            readonly = conn.get_execution_options().get(READONLY_OPTION)
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    # A server that accepts and then stays silent would hang every command: libpq gives up after this.
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": PG_CONNECT_TIMEOUT,
            "options": postgres_session_options(),
            "application_name": application_name(),
        }
        kwargs["connect_args"] = {**connect_args, **kwargs.get("connect_args", {})}
    return create_engine(url, pool_pre_ping=True, **kwargs)


@contextmanager
def session_scope(engine: Engine, *, readonly: bool = False) -> Iterator[Session]:
    """One session per job run or request: commit on success, roll back on error.

    readonly=True is for sessions that only read (web handlers, Home tabs): on SQLite they never queue
    behind a sync's writes.
    """
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def owned_by_app(name: str | None, type_: str, _parents: Any) -> bool:
    """Whether a database object is the app's own (Procrastinate's job tables are its, applied by a migration)."""
    return not (type_ == "table" and (name or "").startswith("procrastinate_"))


def alembic_config(engine: Engine) -> Any:
    """An Alembic config pointing at our migrations and this engine."""
    from alembic.config import Config  # imported here: Alembic and Mako cost ~1 s and ~70 MB at start-up

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every migration not yet applied (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def schema_revision(engine: Engine) -> str | None:
    """The revision stored in the database's alembic_version table; None for a database never migrated."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, "alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade_if_behind(engine: Engine) -> bool:
    """Upgrade unless the stored revision is already HEAD_REVISION; True when migrations ran."""
    if schema_revision(engine) == HEAD_REVISION:
        return False
    upgrade(engine)
    return True


def ping(engine: Engine) -> bool:
    """True when the database answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
