"""`emailsync worker` watches INBOX with IDLE: a delivery is stored in seconds, and a killed worker's watch moves.

Real worker processes against a real Dovecot, on SQLite (processes sharing one file) and PostgreSQL; the poll
interval is ten minutes, so only IDLE can explain a message stored within seconds.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, func
from sqlmodel import select

from models.db import make_engine
from models.tables import IdleWatch, Message
from tests.conftest import PG_ADMIN_URL
from tests.support.cli import cli_env, run_cli
from tests.support.mail import make_message

OWNER_PID = re.compile(r"^idle:worker:[^:]+:(\d+):")


def wait_for(check: Callable[[], object], timeout: float, what: str, logs: list[Path] | None = None) -> float:
    """Poll until ``check()`` is true; return the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs or [])
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tails}")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for the worker processes: a SQLite file, or a PostgreSQL database of this test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    name = f"idle_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Worker:
    """One `emailsync worker` process with its log."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            cwd=env["EMAILSYNC_DATA_DIR"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def setup(tmp_path: Path, dovecot, database_url: str, **extra: str) -> tuple[dict[str, str], int, str, Engine]:
    env = cli_env(
        tmp_path,
        dovecot,
        DATABASE_URL=database_url,
        EMAILSYNC_POLL_SECONDS="600",  # polling cannot explain anything below
        EMAILSYNC_TICK_SECONDS="0.5",
        **extra,
    )
    assert run_cli(env, "db", "upgrade").returncode == 0
    user = f"idle_{uuid.uuid4().hex[:8]}"
    dovecot.add_user(user, "pw")
    added = run_cli(
        env,
        *("account", "add", "--team", "T", "--user", "U", "--email", f"{user}@example.net", "--username", user),
        *("--imap-host", "127.0.0.1", "--imap-port", str(dovecot.imaps_port), "--password-stdin", "--start", "now"),
        stdin="pw\n",
    )
    assert added.returncode == 0, added.stderr
    return env, int(added.stdout.strip()), user, make_engine(database_url)


def stored(db: Engine, account: int) -> int:
    with db.connect() as conn:
        return int(conn.execute(select(func.count()).where(Message.account_id == account)).scalar_one())


def watch_owner(db: Engine, account: int) -> str | None:
    with db.connect() as conn:
        row = conn.execute(
            select(IdleWatch.owner, IdleWatch.lease_until).where(IdleWatch.account_id == account)
        ).first()
    return row[0] if row else None


def test_a_delivery_is_stored_within_seconds_and_sigterm_stops_the_watch(tmp_path, dovecot, database_url):
    env, account, user, db = setup(tmp_path, dovecot, database_url)
    worker = Worker(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: f"account {account}: watching INBOX with IDLE" in worker.text(), 60, "watch", [worker.log])
        wait_for(lambda: "lease given back account=" in worker.text(), 60, "first sync", [worker.log])
        assert stored(db, account) == 0
        took = []
        for n in range(3):
            dovecot.append(user, "pw", "INBOX", make_message(subject=f"idle {n}"))
            took.append(wait_for(lambda n=n: stored(db, account) == n + 1, 10, "stored", [worker.log]))
        print(f"delivery to stored: {', '.join(f'{t:.2f} s' for t in took)}")
        assert re.search(r"^idle:worker:", watch_owner(db, account) or "")
        doctor = run_cli(env, "doctor", "--json")
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["idle watches"]["detail"].startswith("1 INBOX watched (worker:"), checks["idle watches"]
        assert f":{worker.proc.pid}:" in checks["idle watches"]["detail"]
        worker.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert worker.proc.wait(timeout=30) == 0, worker.text()[-3000:]
        assert time.monotonic() - start < 10
    finally:
        worker.close()
    text = worker.text()
    assert "Traceback" not in text, text[-3000:]
    assert watch_owner(db, account) is None  # given back on the way out: another worker may take it at once
    # The watch ended IDLE and logged out (Dovecot's record of what the client sent).
    sent = b"".join(p.read_bytes() for p in dovecot.rawlog_dir(user).glob("*.in"))
    assert re.search(rb"\d DONE\r?\n[\d.]+ Z LOGOUT", sent), sent[-500:]
    db.dispose()


def test_killing_the_worker_that_owns_a_watch_moves_it(tmp_path, dovecot, database_url):
    env, account, user, db = setup(tmp_path, dovecot, database_url, EMAILSYNC_LEASE_TTL="3")
    workers = [Worker(env, tmp_path / f"worker{n}.log") for n in range(2)]
    logs = [w.log for w in workers]
    try:
        wait_for(lambda: OWNER_PID.match(watch_owner(db, account) or ""), 60, "a watch owner", logs)
        pid = int(OWNER_PID.match(watch_owner(db, account) or "").group(1))  # type: ignore[union-attr]
        owner = next(w for w in workers if w.proc.pid == pid)
        other = next(w for w in workers if w is not owner)
        wait_for(lambda: f"account {account}: watching INBOX with IDLE" in owner.text(), 60, "watch", logs)
        wait_for(lambda: "lease given back account=" in owner.text() + other.text(), 60, "first sync", logs)
        assert f"account {account}: watching INBOX" not in other.text()  # one watch, one owner
        owner.proc.kill()
        owner.proc.wait()
        # The lease (3 s) runs out; the other worker claims the watch and idles.
        wait_for(lambda: f"account {account}: watching INBOX with IDLE" in other.text(), 30, "takeover", logs)
        new_owner = OWNER_PID.match(watch_owner(db, account) or "")
        assert new_owner and int(new_owner.group(1)) == other.proc.pid
        before = stored(db, account)
        dovecot.append(user, "pw", "INBOX", make_message(subject="after the takeover"))
        wait_for(lambda: stored(db, account) == before + 1, 10, "stored after the takeover", logs)
        assert "Traceback" not in other.text(), other.text()[-3000:]
    finally:
        for w in workers:
            w.close()
    db.dispose()


def test_idle_seconds_setting(tmp_path, monkeypatch):
    from bot.settings import ConfigError, load_settings

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("EMAILSYNC_IDLE_SECONDS", raising=False)
    assert load_settings().idle_seconds == 1500  # under RFC 2177's 29 minutes
    monkeypatch.setenv("EMAILSYNC_IDLE_SECONDS", "2")
    assert load_settings().idle_seconds == 2
    monkeypatch.setenv("EMAILSYNC_IDLE_SECONDS", "1800")
    with pytest.raises(ConfigError, match="EMAILSYNC_IDLE_SECONDS"):
        load_settings()
