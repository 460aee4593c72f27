"""IDLE delivery-to-stored time with many watches in one worker process, and what the watches cost it.

A private Dovecot, N accounts (one user each) in a SQLite file, one real ``emailsync worker`` process with a
ten-minute poll interval (so only IDLE explains a message stored within seconds). Once every INBOX is
watched and every first sync is done, M messages are delivered one by one (APPEND) to random accounts and
the time until each is in the database is measured (polled every 10 ms). Also reported: the worker's
threads, RSS and CPU over 10 quiet seconds with every watch idling. Target (issue 12): p99 under 2 s.
Dovecot notices a delivery through inotify, and only 128 inotify instances exist per uid by default (shared by
every Dovecot of the machine): users whose IMAP process went without are left out of the deliveries (counted
as users_without_inotify), since their delay is Dovecot's check interval, not ours.

    python -m bench.idle_delivery                    # 100 accounts, 40 deliveries (~1 min)
    python -m bench.idle_delivery --accounts 300 --deliveries 100 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import func  # noqa: E402
from sqlmodel import select  # noqa: E402

from flows.accounts import AccountDraft, add_account  # noqa: E402
from models.db import make_engine, upgrade  # noqa: E402
from models.secrets import SecretBox  # noqa: E402
from models.tables import EmailAccount, Message  # noqa: E402
from sync.imap_session import ImapLogin  # noqa: E402
from tests.support.cli import cli_env  # noqa: E402
from tests.support.dovecot import start_dovecot  # noqa: E402
from tests.support.mail import make_message  # noqa: E402
from tests.support.network import LOOPBACK_POLICY  # noqa: E402

KEY = "yNk0zlX9u1z4Qy3QwXZC7bYV8m2dQdH7f1v6sY0kE2c="


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    until = time.monotonic() + timeout
    while not check():
        if time.monotonic() > until:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def run(accounts: int, deliveries: int, workdir: Path) -> dict[str, object]:
    """The benchmark; returns its figures."""
    dovecot = start_dovecot(workdir / "dovecot")
    try:
        db_url = f"sqlite:///{workdir / 'cli.db'}"
        db = make_engine(db_url)
        upgrade(db)
        secrets = SecretBox([KEY])
        users: dict[int, str] = {}
        print(f"adding {accounts} accounts ...", file=sys.stderr)
        for n in range(accounts):
            user = f"b{n}_{uuid.uuid4().hex[:6]}"
            dovecot.add_user(user, "pw")
            # Dovecot's rawlog would write every session to disk: off for these users.
            os.rmdir(dovecot.rawlog_dir(user))
            login = ImapLogin(dovecot.host, dovecot.imaps_port, "tls", user, "pw")
            draft = AccountDraft(team_id="T", user_id=f"U{n}", email=f"{user}@example.net", imap=login)
            account = add_account(
                db, secrets, draft, timeout=30, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY
            )
            users[account] = user
        env = cli_env(
            workdir,
            dovecot,
            DATABASE_URL=db_url,
            EMAILSYNC_SECRET_KEY=KEY,
            EMAILSYNC_POLL_SECONDS="600",
            EMAILSYNC_TICK_SECONDS="1",
        )
        log = workdir / "worker.log"
        Path(env["EMAILSYNC_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            env={**env, "PYTHONPATH": str(REPO)},
            cwd=env["EMAILSYNC_DATA_DIR"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            started = time.monotonic()
            _wait(lambda: log.read_text().count("watching INBOX with IDLE") >= accounts, 300, "every watch idling")
            watched_after = time.monotonic() - started

            def synced() -> int:
                with db.connect() as conn:
                    stmt = select(func.count()).where(EmailAccount.last_synced_at.is_not(None))  # type: ignore[union-attr]
                    return int(conn.execute(stmt).scalar_one())

            _wait(lambda: synced() >= accounts, 300, "every first sync")
            time.sleep(3)
            cpu0, t0 = _cpu_seconds(worker.pid), time.monotonic()
            time.sleep(10)
            idle_cpu = (_cpu_seconds(worker.pid) - cpu0) / (time.monotonic() - t0)
            status = _proc_status(worker.pid)
            # Dovecot learns of a delivery through inotify; past fs.inotify.max_user_instances (128 per uid by
            # default, shared by every Dovecot of that uid) its IMAP process falls back to a check every 30 s,
            # which measures Dovecot, not us: such users get no deliveries (the count is reported).
            dovecot_log = (workdir / "dovecot" / "dovecot.log").read_text(errors="replace")
            warned = [line for line in dovecot_log.splitlines() if "Inotify instance limit" in line]
            polled = {u for u in users.values() if any(f"imap({u})" in line for line in warned)}
            targets = sorted(a for a, u in users.items() if u not in polled)
            rng = random.Random(42)
            took: list[float] = []
            print(f"delivering {deliveries} messages ...", file=sys.stderr)
            for i in range(deliveries):
                account = rng.choice(targets)
                with db.connect() as conn:
                    before = conn.execute(select(func.count()).where(Message.account_id == account)).scalar_one()
                dovecot.append(users[account], "pw", "INBOX", make_message(subject=f"bench {i}"))
                at = time.monotonic()
                while True:
                    with db.connect() as conn:
                        now = conn.execute(select(func.count()).where(Message.account_id == account)).scalar_one()
                    if now > before:
                        took.append(time.monotonic() - at)
                        break
                    if time.monotonic() - at > 60:
                        raise SystemExit(f"delivery {i} to account {account} not stored within 60 s")
                    time.sleep(0.01)
                time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(30)
        took.sort()
        return {
            "accounts": accounts,
            "deliveries": deliveries,
            "all_watched_s": round(watched_after, 1),
            "delivery_p50_s": round(statistics.median(took), 3),
            "delivery_p99_s": round(took[min(len(took) - 1, int(len(took) * 0.99))], 3),
            "delivery_max_s": round(took[-1], 3),
            "worker_threads": int(status["Threads"].strip()),
            "worker_rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "worker_cpu_idle_pct": round(idle_cpu * 100, 2),
            "users_without_inotify": len(polled),  # Dovecot polls their INBOX every 30 s: not delivered to
        }
    finally:
        dovecot.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--deliveries", type=int, default=40)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workdir", type=Path, help="keep Dovecot's log, the database and the worker's log here")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run(args.accounts, args.deliveries, args.workdir.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
            figures = run(args.accounts, args.deliveries, Path(tmp))
    for key, value in figures.items():
        print(f"{key:24} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
