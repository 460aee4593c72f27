"""Mail stays private on disk and out of error messages: file modes, and SQL parameters never shown."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from bot.services import build_services
from bot.settings import Settings
from models.db import session_scope
from models.tables import ProcessedSlackEvent, SyncRun


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def test_a_fresh_data_dir_and_sqlite_file_are_private(tmp_path):
    database = tmp_path / "state" / "app.db"  # its directory does not exist yet
    data_dir = tmp_path / "data"
    with umask(0o022):  # the usual umask, which made them 0755/0644
        services = build_services(Settings(DATABASE_URL=f"sqlite:///{database}", EMAILSYNC_DATA_DIR=str(data_dir)))
        with session_scope(services.db) as session:  # a write, so the WAL and shared memory exist
            session.add(ProcessedSlackEvent(event_id="Ev1"))
        wal, shm = Path(f"{database}-wal"), Path(f"{database}-shm")
        assert wal.exists() and shm.exists()
        assert mode(data_dir) == 0o700 and mode(data_dir / "secret.key") == 0o600
        assert mode(database.parent) == 0o700
        assert (mode(database), mode(wal), mode(shm)) == (0o600, 0o600, 0o600)
        services.db.dispose()


def test_files_left_readable_by_an_older_version_are_made_private(tmp_path):
    database = tmp_path / "app.db"
    data_dir = tmp_path / "data"
    settings = Settings(DATABASE_URL=f"sqlite:///{database}", EMAILSYNC_DATA_DIR=str(data_dir))
    build_services(settings).db.dispose()
    data_dir.chmod(0o755)
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if path.exists():
            path.chmod(0o644)
    services = build_services(settings)
    with session_scope(services.db) as session:
        session.add(ProcessedSlackEvent(event_id="Ev1"))
    assert mode(data_dir) == 0o700
    assert mode(database) == 0o600
    assert mode(Path(f"{database}-wal")) == 0o600 and mode(Path(f"{database}-shm")) == 0o600
    services.db.dispose()


def test_errors_never_show_sql_parameters(db):
    mail_content = "Dear Bob, the merger closes on Friday"
    # A run of an account that does not exist: the foreign key fails, with mail-like text among the values.
    with pytest.raises(IntegrityError) as caught, session_scope(db) as session:
        session.add(SyncRun(account_id=999, error_message=mail_content))
        session.flush()
    assert "merger" not in str(caught.value)
    assert "SQL parameters hidden" in str(caught.value)
