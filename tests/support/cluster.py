"""Many `emailsync worker` processes on one database: start them, fill accounts, read their lease and tick marks."""

from __future__ import annotations

import datetime as dt
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from flows.accounts import AccountDraft, add_account
from models.secrets import SecretBox
from sync.imap_session import ImapLogin
from tests.support.dovecot import DovecotServer
from tests.support.mail import make_message
from tests.support.network import LOOPBACK_POLICY

LEASE_LINE = re.compile(r"lease (taken|given back) account=(\d+) owner=(\S+) token=(\d+) at=([\d.]+)")
# A run that ended like this wrote nothing after another process took its lease: every write is fenced,
# and a crash (its session ended by the server while the process was frozen) rolls back its transaction.
LOST_LINE = re.compile(r"account (\d+): (?:lease lost|sync slice crashed)")
TICK_LINE = re.compile(r"tick owner=(\S+) begun=([\d.]+) ended=([\d.]+)")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Worker:
    """One `emailsync worker` subprocess and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    killed_at: float | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack into the log
                time.sleep(2)
                self.proc.kill()
                self.proc.wait()
                tail = self.text()[-6000:]
                raise AssertionError(f"{self.name} did not stop within 30 s after SIGTERM\n{tail}") from None
        return self.proc.returncode


@dataclass
class Cluster:
    """The worker processes of one test, with helpers to read what they did."""

    env: dict[str, str]
    workdir: Path
    workers: list[Worker] = field(default_factory=list)

    def start(self, name: str, *args: str) -> Worker:
        Path(self.env["EMAILSYNC_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", *args],
            env={**self.env, "PYTHONPATH": str(REPO), "PYTHONFAULTHANDLER": "1"},
            cwd=self.env["EMAILSYNC_DATA_DIR"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        worker = Worker(name, proc, log)
        self.workers.append(worker)
        return worker

    def kill_all(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {w.name}\n{w.text()[-4000:]}" for w in self.workers)

    def lease_intervals(self) -> list[tuple[int, str, int, float, float, str]]:
        """(account, owner, token, taken, given back, worker name) from every log; a killed run ends at its kill."""
        intervals = []
        for w in self.workers:
            open_: dict[tuple[int, str, int], float] = {}
            for m in LEASE_LINE.finditer(w.text()):
                what, account, owner, token, at = m.groups()
                key = (int(account), owner, int(token))
                if what == "taken":
                    open_[key] = float(at)
                elif key in open_:
                    intervals.append((*key, open_.pop(key), float(at), w.name))
            end = w.killed_at if w.killed_at is not None else time.time()
            intervals += [(*key, start, end, w.name) for key, start in open_.items()]
        return intervals

    def fenced_out(self) -> set[tuple[str, int]]:
        """(worker name, account) pairs where the worker found its lease gone and stopped without writing."""
        return {(w.name, int(a)) for w in self.workers for a in LOST_LINE.findall(w.text())}

    def overlaps(self, *, allowed: Callable[[str, int], bool] = lambda _w, _a: False) -> list[str]:
        """Pairs of lease intervals of one account that overlap, unless the earlier one was fenced out."""
        found = []
        by_account: dict[int, list[tuple[int, str, int, float, float, str]]] = {}
        for iv in self.lease_intervals():
            by_account.setdefault(iv[0], []).append(iv)
        for account, ivs in by_account.items():
            ivs.sort(key=lambda iv: iv[3])
            for n, a in enumerate(ivs):
                for b in ivs[n + 1 :]:  # every later one, not only the next: a long run can span several
                    if b[3] < a[4] and not allowed(a[5], account):
                        found.append(
                            f"account {account}: {a[1]} token {a[2]} [{a[3]:.3f}, {a[4]:.3f}] and "
                            f"{b[1]} token {b[2]} [{b[3]:.3f}, {b[4]:.3f}]"
                        )
        return found

    def ticks(self) -> list[tuple[str, float, float]]:
        return [(m[0], float(m[1]), float(m[2])) for w in self.workers for m in TICK_LINE.findall(w.text())]


def make_accounts(
    db: Engine, secrets: SecretBox, dovecot: DovecotServer, count: int, *, messages: int = 3
) -> dict[int, str]:
    """`count` Dovecot users with a few messages each, connected as accounts (past mail: a year); id -> user."""
    base = dt.datetime.now() - dt.timedelta(days=10)
    team = f"T{uuid.uuid4().hex[:8]}"
    made: dict[int, str] = {}
    for n in range(count):
        user = f"mm{n}_{uuid.uuid4().hex[:6]}"
        dovecot.add_user(user, "pw")
        dovecot.seed_maildir(
            user,
            "INBOX",
            [(make_message(subject=f"{user} {i}"), base + dt.timedelta(minutes=i)) for i in range(messages)],
        )
        draft = AccountDraft(
            team_id=team,
            user_id=f"U{n}",
            email=f"{user}@example.net",
            imap=ImapLogin(dovecot.host, dovecot.imaps_port, "tls", user, "pw"),
            start="1y",
        )
        account_id = add_account(
            db, secrets, draft, timeout=20, ssl_context=dovecot.ssl_context, outbound=LOOPBACK_POLICY
        )
        made[account_id] = user
    return made


def request_sync_now_all(db: Engine, only: set[int] | None = None) -> None:
    """Press "Sync now" on every account, or on ``only`` (due now; remembered when a run is going on)."""
    from models import accounts as account_queries
    from models.db import session_scope

    with session_scope(db) as session:
        ids = [a.id for a in account_queries.list_accounts(session) if a.id is not None]
    ids = [i for i in ids if only is None or i in only]
    for account_id in ids:
        try:
            with session_scope(db) as session:
                account_queries.request_sync_now(session, account_id=account_id)
        except OperationalError:  # its row is locked by a frozen worker (lock_timeout): as a person, try later
            continue


def mailbox_uids(dovecot: DovecotServer, user: str) -> int:
    """How many messages the user's INBOX holds, listed directly over IMAP."""
    client = dovecot.client(user, "pw")
    try:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["ALL"]))
    finally:
        client.logout()


def stored(db: Engine) -> dict[int, tuple[int, int]]:
    """Per account: (stored messages, distinct Message-IDs among them)."""
    with db.connect() as conn:
        rows = conn.execute(
            text("SELECT account_id, count(*), count(DISTINCT message_id) FROM message GROUP BY account_id")
        ).all()
    return {int(a): (int(n), int(d)) for a, n, d in rows}


def synced_since(db: Engine, since: dt.datetime) -> set[int]:
    """Accounts whose last completed run ended after ``since`` (a run that began later stored all mail up to then)."""
    with db.connect() as conn:
        rows = conn.execute(text("SELECT id, last_synced_at FROM email_account WHERE last_synced_at IS NOT NULL")).all()
    out = set()
    for account_id, at in rows:
        at = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(str(at))
        if at.tzinfo is None:
            at = at.replace(tzinfo=dt.UTC)
        if at > since:
            out.add(int(account_id))
    return out


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    """Poll until predicate() holds (a loaded machine gets generous time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{logs()}")
