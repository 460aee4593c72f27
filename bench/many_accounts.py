"""Many idle accounts (issue 12): what polling them costs, quiet polls, IDLE delivery and Slack acks, per backend.

One private Dovecot holds ``--accounts`` mailboxes of 9 folders each (written straight into the Maildirs). For each
configuration (the local backend on SQLite, the procrastinate backend on PostgreSQL with 1 and with 2 workers) the
bench makes a fresh database (``emailsync db upgrade``), creates every account in it directly through the models
(encrypted password, the folders one real LIST found), starts the real processes (``emailsync serve``; on the
procrastinate backend also ``emailsync worker --clock`` per worker), lets the first sync of every account run
(untimed), then measures:

1. **Idle poll.** Every account is made due at once (one UPDATE); the time until each was synced once (its lease
   token moved and its lease was given back), the CPU of the worker processes, the web process, Dovecot (all its
   processes) and the PostgreSQL backends of the database, the rows each table gained and the Slack calls.
2. **IDLE delivery.** Messages APPENDed one by one to INBOXes a worker watches; the time from the end of the APPEND
   until the message row exists (the database polled every 20 ms).
3. **Slack acks under load.** 50 accounts get new mail in a folder IDLE does not watch and are made due; while their
   syncs run, rounds of 20 signed Slack requests at once (slash commands and Home clicks, the code of
   ``bench/ack_latency.py``) go to ``serve``.

    python -m bench.many_accounts [--accounts N] [--quick] [--backends local,procrastinate] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import report as out
from bench.ack_latency import (
    CLK_TCK,
    Sample,
    child_pids,
    machine_cpu,
    match_answers,
    open_home,
    proc_cpu_s,
    send_request,
)
from bench.report import fmt, pct, table

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-pw"
SIGNING_SECRET = "bench-signing-secret"
PG_ADMIN_URL = os.environ.get("EMAILSYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
# Nine folders: four special-use ones (Dovecot marks them), INBOX, and four of the person's own, one nested.
FOLDERS = ("INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive", "Projects", "Projects/2026", "Newsletter")
SEED_PER_FOLDER = 2
DEFAULT_ACCOUNTS = 1000
QUICK_ACCOUNTS = 100
ACK_SYNCS = 50
ACK_WIDTH = 20
IDLE_CAPACITY = 500  # watches per worker process (sync/idle.py's default)
TARGETS = {"poll_s": 30.0, "rows": 0.0, "slack": 0.0, "idle_p99_ms": 2000.0, "ack_p99_ms": 300.0}
STATE_POLL = 0.1
IDLE_CHECK_SECONDS = 1  # Dovecot's mailbox_idle_check_interval here (see seed_dovecot)


def say(text: str) -> None:
    """Progress on stderr with the time of day (a full run takes a while)."""
    out.say(f"[{time.strftime('%H:%M:%S')}] {text}")


def user_name(index: int) -> str:
    return f"ma{index:05d}"


@dataclass(frozen=True)
class Config:
    """One measured set-up: the backend, the database, and how many worker processes."""

    backend: str  # local | procrastinate
    database: str  # sqlite | postgresql
    workers: int

    @property
    def label(self) -> str:
        if self.backend == "local":
            return f"local, {'SQLite' if self.database == 'sqlite' else 'PostgreSQL'}"
        return f"procrastinate, {self.workers} worker{'s' if self.workers > 1 else ''}"

    @property
    def tag(self) -> str:
        return f"{self.backend[:5]}_{self.database[:2]}_{self.workers}"


# ------------------------------------------------------------------------------------------------
# The processes' CPU, from /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_with_children(pid: int) -> float | None:
    """User + system CPU seconds of a process plus its reaped children's (None once it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def session_cpu(sid: int) -> float:
    """CPU seconds of every live process of session ``sid`` and of the children they reaped.

    Dovecot's master leads its own session and forks every service process; an imap process that ended is
    counted in the master's reaped-children times, so logins that came and went are not lost.
    """
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and len(fields) > 14 and int(fields[3]) == sid and fields[0] != "Z":
                total += sum(int(v) for v in fields[11:15]) / CLK_TCK
    return total


def pids_cpu(pids: Sequence[int]) -> float:
    """CPU seconds of these processes (and their reaped children); a process that is gone counts 0."""
    return sum(cpu_with_children(pid) or 0.0 for pid in pids)


def session_count(sid: int, name: str) -> int:
    """Live processes of session ``sid`` whose command is ``name``."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == name:
                    fields = _stat_fields(int(entry))
                    count += bool(fields and int(fields[3]) == sid)
    return count


# ------------------------------------------------------------------------------------------------
# Dovecot with many mailboxes


def seed_dovecot(work: Path, accounts: int) -> Any:
    """A private Dovecot with ``accounts`` users of 9 folders each (a few messages per folder, in the Maildirs)."""
    from tests.support.dovecot import start_dovecot
    from tests.support.mail import make_message

    # An IDLE watch holds one imap process; two workers watch up to 2 x 500, polls come on top.
    # Every imap process in IDLE takes an inotify instance, and the kernel allows 128 per user (all Dovecots of
    # the machine share the "mail" user): past that, Dovecot looks at the mailbox every mailbox_idle_check_interval
    # instead (30 s by default). One second keeps Dovecot's part of the delivery time small and known.
    server = start_dovecot(
        work / "dovecot",
        imap_process_limit=max(500, 2 * accounts + 300),
        idle_check_seconds=IDLE_CHECK_SECONDS,
    )
    started = time.perf_counter()
    when = dt.datetime.now() - dt.timedelta(days=3)
    for i in range(accounts):
        user = user_name(i)
        server.add_user(user, PASSWORD)
        shutil.rmtree(server.rawlog_dir(user), ignore_errors=True)  # else Dovecot writes every session byte
        for folder in FOLDERS:
            msgs = [(make_message(subject=f"{folder} {n}", date=when), when) for n in range(SEED_PER_FOLDER)]
            server.seed_maildir(user, folder, msgs)
    say(
        f"dovecot on 127.0.0.1:{server.imaps_port}: {accounts} users x {len(FOLDERS)} folders "
        f"({SEED_PER_FOLDER} messages each) in {time.perf_counter() - started:.1f}s"
    )
    return server


def seed_new_mail(server: Any, users: Sequence[str], folder: str, count: int) -> None:
    """``count`` new messages in ``folder`` of each user, straight into the Maildir."""
    from tests.support.mail import make_message

    now = dt.datetime.now()
    for user in users:
        msgs = [(make_message(subject=f"load {n}", body=f"message {n}\n" * 20), now) for n in range(count)]
        server.seed_maildir(user, folder, msgs)


# ------------------------------------------------------------------------------------------------
# The database of one configuration


class Database:
    """A fresh SQLite file or PostgreSQL database (``bench_many_...``), its row counts and the accounts' state."""

    def __init__(self, kind: str, work: Path, tag: str) -> None:
        self.kind = kind
        self.name = ""
        if kind == "sqlite":
            self.path: Path | None = work / f"{tag}.db"
            self.url = f"sqlite:///{self.path}"
        else:
            import psycopg

            self.path = None
            self.name = f"bench_many_{os.getpid()}_{tag}_{uuid.uuid4().hex[:6]}"
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
            base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
            self.url = f"{base}/{self.name}"
        self._engine: Any = None

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from models.db import make_engine

            self._engine = make_engine(self.url)
        return self._engine

    def drop(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self.kind == "postgresql":
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def rows(self) -> dict[str, int]:
        """Rows of every table (procrastinate's included on PostgreSQL)."""
        from sqlalchemy import inspect, text

        names = [n for n in inspect(self.engine).get_table_names() if n != "alembic_version"]
        with self.engine.connect() as conn:
            return {n: int(conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar_one()) for n in sorted(names)}

    def inserted(self) -> dict[str, int] | None:
        """PostgreSQL: rows ever inserted per table (deleted ones included), from pg_stat_user_tables."""
        if self.kind != "postgresql":
            return None
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(text("SELECT relname, n_tup_ins FROM pg_stat_user_tables"))}

    def backend_pids(self) -> list[int]:
        """PostgreSQL: the server processes serving this database (the bench's own connection left out)."""
        if self.kind != "postgresql":
            return []
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": self.name},
            )
            return [int(r[0]) for r in rows]

    def states(self) -> dict[int, tuple[int, str | None, str | None]]:
        """Each account's (lease token, lease owner, last error code)."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, lease_token, lease_owner, last_error_code FROM email_account"))
            return {int(r[0]): (int(r[1]), r[2], r[3]) for r in rows}

    def make_due(self, account_ids: Sequence[int] | None = None) -> None:
        """Every account (or these) due now, in one statement."""
        from sqlalchemy import bindparam, text

        from models.clock import utcnow

        with self.engine.begin() as conn:
            if account_ids is None:
                conn.execute(text("UPDATE email_account SET next_sync_at = :now"), {"now": utcnow()})
            else:
                stmt = text("UPDATE email_account SET next_sync_at = :now WHERE id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                )
                conn.execute(stmt, {"now": utcnow(), "ids": list(account_ids)})

    def watched(self, pids: Sequence[int]) -> list[int]:
        """Accounts whose INBOX one of these worker processes holds an IDLE watch lease on (empty without the
        idle_watch table). Owners name their process (``idle:worker:<host>:<pid>:...``): a lease left behind
        by the workers of an earlier configuration on the same database does not count."""
        from sqlalchemy import inspect, text

        from models.clock import utcnow

        if "idle_watch" not in inspect(self.engine).get_table_names():
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT account_id, owner FROM idle_watch WHERE owner IS NOT NULL AND lease_until > :now"),
                {"now": utcnow()},
            )
            marks = [f":{pid}:" for pid in pids]
            return sorted(int(r[0]) for r in rows if any(m in str(r[1]) for m in marks))

    def stored_ids(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Message-IDs have a message row (with or without angle brackets)."""
        from sqlalchemy import bindparam, text

        if not message_ids:
            return set()
        variants = [*message_ids, *(f"<{m}>" for m in message_ids)]
        stmt = text("SELECT message_id FROM message WHERE message_id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        with self.engine.connect() as conn:
            return {str(r[0]).strip("<>") for r in conn.execute(stmt, {"ids": variants})}


def create_accounts(db: Database, key: str, server: Any, accounts: int) -> list[int]:
    """Every account in the database at once, due now: the password encrypted as the app does, the folders as
    one real login and LIST of the first mailbox found them (every mailbox has the same folders)."""
    from flows.accounts import check_connection
    from models import accounts as account_queries
    from models.clock import utcnow
    from models.db import session_scope
    from models.secrets import SecretBox
    from models.tables import Folder
    from sync.folders import selected_by_default
    from sync.imap_session import ImapLogin
    from tests.support.fake_slack import TEAM_ID
    from tests.support.network import LOOPBACK_POLICY

    started = time.perf_counter()
    login = ImapLogin(server.host, server.imaps_port, "tls", user_name(0), PASSWORD)
    remote = check_connection(login, None, timeout=30, ssl_context=server.ssl_context, outbound=LOOPBACK_POLICY)
    if len(remote) != len(FOLDERS):
        raise RuntimeError(f"expected {len(FOLDERS)} folders in Dovecot, LIST found {[f.name for f in remote]}")
    box = SecretBox([key])
    ids: list[int] = []
    for first in range(0, accounts, 250):  # a transaction per 250 accounts
        with session_scope(db.engine) as session:
            for i in range(first, min(first + 250, accounts)):
                user = user_name(i)
                account = account_queries.create_account(
                    session,
                    team_id=TEAM_ID,
                    user_id=f"U{i + 1:04d}",
                    email=f"{user}@bench.example",
                    imap_host=server.host,
                    imap_port=server.imaps_port,
                    imap_security="tls",
                    username=user,
                    secret_encrypted=box.encrypt(PASSWORD),
                    sync_mode="all",
                    start_option="now",
                    start_date=None,
                    contact_scope="all",
                    visibility="private",
                    next_sync_at=utcnow(),
                )
                assert account.id is not None
                ids.append(account.id)
                for rf in remote:
                    session.add(
                        Folder(account_id=account.id, name=rf.name, role=rf.role, selected=selected_by_default(rf.role))
                    )
    selected = sum(selected_by_default(rf.role) for rf in remote)
    say(
        f"  {accounts} accounts created ({selected} of {len(remote)} folders synced)"
        f" in {time.perf_counter() - started:.1f}s"
    )
    return ids


# ------------------------------------------------------------------------------------------------
# The app's processes


class AppProcesses:
    """``emailsync serve`` (on the local backend with its worker child) and, on procrastinate, the workers."""

    def __init__(self, cfg: Config, db: Database, server: Any, fake: Any, work: Path, key: str, args: Any) -> None:
        self.cfg = cfg
        self.db = db
        self.server = server
        self.fake = fake
        self.work = work
        self.key = key
        self.args = args
        self.data_dir = work / f"data-{cfg.tag}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.serve: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.worker_pids: list[int] = []
        self.logs: list[Path] = []

    def env(self) -> dict[str, str]:
        from tests.support.network import LOOPBACK_SETTINGS

        keep = {k: v for k, v in os.environ.items() if not k.startswith(("EMAILSYNC_", "SLACK_", "DATABASE_URL"))}
        env = {
            **keep,
            "PYTHONPATH": str(REPO) + (os.pathsep + keep["PYTHONPATH"] if keep.get("PYTHONPATH") else ""),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.db.url,
            "EMAILSYNC_BACKEND": self.cfg.backend,
            "EMAILSYNC_SECRET_KEY": self.key,
            "EMAILSYNC_DATA_DIR": str(self.data_dir),
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.fake.api_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "PORT": str(self.port),
            "SSL_CERT_FILE": str(self.server.cafile),
            "EMAILSYNC_TICK_SECONDS": "1",
            # Only the bench makes accounts due: no poll of its own comes in the middle of a measurement.
            "EMAILSYNC_POLL_SECONDS": "86400",
            **LOOPBACK_SETTINGS,
        }
        if self.args.concurrency:
            env["EMAILSYNC_WORKERS"] = str(self.args.concurrency)
        return env

    def upgrade(self) -> None:
        """``emailsync db upgrade`` (Procrastinate's schema too, on PostgreSQL)."""
        started = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "bot", "db", "upgrade"],
            env=self.env(),
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if res.returncode != 0:
            raise RuntimeError(f"emailsync db upgrade failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        say(f"  emailsync db upgrade in {time.perf_counter() - started:.1f}s")

    def _start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        log_path = self.work / f"{self.cfg.tag}-{name}.log"
        self.logs.append(log_path)
        with log_path.open("wb") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "bot", *argv],
                env=self.env(),
                cwd=self.data_dir,  # no stray .env is read
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> None:
        if self.cfg.backend == "procrastinate":
            # Workers first: serve's /healthz is 200 only once an elected clock has ticked.
            for n in range(self.cfg.workers):
                argv = ["worker", "--clock"]  # every worker may be the clock; the advisory lock elects one
                if self.args.concurrency:
                    argv += ["--concurrency", str(self.args.concurrency)]
                self.workers.append(self._start(f"worker{n + 1}", *argv))
            self.worker_pids = [w.pid for w in self.workers]
        self.serve = self._start("serve", "serve")
        self._wait_healthy()
        if self.cfg.backend == "local":
            deadline = time.monotonic() + 30
            while not (children := child_pids(self.serve.pid)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if len(children) != 1:
                raise RuntimeError(f"serve should have one worker child, found {children}")
            self.worker_pids = children
        say(f"  serve (pid {self.serve.pid}, port {self.port}) and worker pids {self.worker_pids} started")

    def _wait_healthy(self, timeout: float = 90) -> None:
        assert self.serve is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"serve did not become healthy in {timeout:.0f}s:\n{self.log_tail()}")

    def check_alive(self) -> None:
        for proc in [*self.workers, *([self.serve] if self.serve else [])]:
            if proc.poll() is not None:
                raise RuntimeError(f"an app process (pid {proc.pid}) exited with {proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        out = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                out.append(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def web_pid(self) -> int | None:
        return self.serve.pid if self.serve else None

    def stop(self) -> dict[str, float | None]:
        """SIGTERM to the workers and serve (each by its pid), SIGKILL to its group after 30 s; never raises.

        Returns the seconds each process took to exit after the SIGTERM (None: it had to be killed).
        """
        procs = [*self.workers, *([self.serve] if self.serve else [])]
        names = {proc.pid: f"worker{n + 1}" for n, proc in enumerate(self.workers)}
        if self.serve:
            names[self.serve.pid] = "serve"
        took: dict[str, float | None] = {}
        signalled = time.perf_counter()
        local_children = list(self.worker_pids) if self.cfg.backend == "local" else []
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, 30 - (time.perf_counter() - signalled)))
                took[names[proc.pid]] = time.perf_counter() - signalled
            except subprocess.TimeoutExpired:
                took[names[proc.pid]] = None
                say(f"  pid {proc.pid} did not stop in 30 s: SIGKILL to its process group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        for pid in local_children:  # serve stops its worker child; make sure
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return took


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


# ------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class CpuSnapshot:
    """CPU seconds so far of the workers, the web process, Dovecot and the database's PostgreSQL backends."""

    at: float
    workers: float
    web: float
    dovecot: float
    postgres: dict[int, float]
    machine_busy: float
    machine_total: float


@dataclass
class PollResult:
    """One idle poll of every account."""

    accounts: int
    polled: int
    failed: int
    wall_s: float
    first_s: float | None  # the first account polled
    cpu_workers_s: float
    cpu_web_s: float
    cpu_dovecot_s: float
    cpu_postgres_s: float | None
    machine_busy: float  # fraction of all CPUs during the poll
    rows_grown: dict[str, int]
    rows_inserted: dict[str, int] | None
    slack_calls: dict[str, int]

    @property
    def cpu_total_s(self) -> float:
        return self.cpu_workers_s + self.cpu_web_s + self.cpu_dovecot_s + (self.cpu_postgres_s or 0.0)

    @property
    def rows_per_poll(self) -> float:
        return sum(max(v, 0) for v in self.rows_grown.values()) / max(self.polled, 1)

    @property
    def slack_per_poll(self) -> float:
        return sum(self.slack_calls.values()) / max(self.polled, 1)


@dataclass
class Delivery:
    """One message APPENDed to a watched INBOX and when its row appeared."""

    account_id: int
    message_id: str
    appended_at: float = 0.0  # when the APPEND was answered
    append_s: float = 0.0
    stored_at: float | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.stored_at is None else self.stored_at - self.appended_at


@dataclass
class ConfigResult:
    """Everything measured for one configuration."""

    config: Config
    accounts: int
    first_sync_s: float | None = None
    watches: int | None = None
    idle_note: str = ""
    dovecot_notify: str = "inotify"  # how Dovecot noticed new mail for the IDLE sessions
    poll: PollResult | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    acks: list[Sample] = field(default_factory=list)
    ack_note: str = ""
    ack_syncs_running: list[int] = field(default_factory=list)
    ack_syncs_done_at_end: int | None = None
    ack_syncs_s: float | None = None  # from making the 50 due to the last round
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str | None = None
    profile: dict[str, Any] | None = None
    stop_s: dict[str, float | None] = field(default_factory=dict)  # SIGTERM to exit, per process (None: killed)


class ConfigRun:
    """Sets up one configuration, runs the three measurements, and tears it down."""

    def __init__(
        self,
        cfg: Config,
        db: Database,
        fresh: bool,
        server: Any,
        fake: Any,
        work: Path,
        key: str,
        args: Any,
        idle: bool,
    ) -> None:
        self.cfg = cfg
        self.server = server
        self.fake = fake
        self.work = work
        self.key = key
        self.args = args
        self.idle = idle
        self.db = db
        self.fresh = fresh  # a new database; else the accounts of the configuration before are reused
        self.app = AppProcesses(cfg, self.db, server, fake, work, key, args)
        self.ids: list[int] = []
        self.users: dict[int, str] = {}
        self.result = ConfigResult(cfg, args.accounts)

    # ---- helpers ---------------------------------------------------------------------------------

    def cpu(self) -> CpuSnapshot:
        busy, total = machine_cpu()
        return CpuSnapshot(
            at=time.perf_counter(),
            workers=pids_cpu(self.app.worker_pids),
            web=pids_cpu([p for p in [self.app.web_pid()] if p]),
            dovecot=session_cpu(self.server.pid),
            postgres={pid: proc_cpu_s(pid) or 0.0 for pid in self.db.backend_pids()},
            machine_busy=busy,
            machine_total=total,
        )

    def wait_polled(
        self, before: Mapping[int, tuple[int, str | None, str | None]], ids: Sequence[int], timeout: float, what: str
    ) -> tuple[float, float | None, int]:
        """Wait until each account's lease token moved past ``before`` and its lease is free again.

        Returns (seconds, seconds until the first one, failed ones). The lease is the one thing every sync
        takes, quiet or not, on every backend; the token is bumped by each acquisition.
        """
        started = time.perf_counter()
        first: float | None = None
        pending = set(ids)
        last_report = started
        while pending:
            states = self.db.states()
            now = time.perf_counter()
            for account_id in list(pending):
                token, owner, _error = states[account_id]
                if token > before[account_id][0] and owner is None:
                    pending.discard(account_id)
                    if first is None:
                        first = now - started
            if not pending:
                break
            if now - started > timeout:
                raise RuntimeError(f"{what}: {len(pending)} accounts not synced within {timeout:.0f}s")
            if now - last_report > 15:
                say(f"    {what}: {len(ids) - len(pending)}/{len(ids)} after {now - started:.0f}s")
                last_report = now
            self.app.check_alive()
            time.sleep(STATE_POLL)
        states = self.db.states()
        failed = sum(1 for a in ids if states[a][2] is not None)
        return time.perf_counter() - started, first, failed

    # ---- phases ----------------------------------------------------------------------------------

    def run(self) -> ConfigResult:
        say(f"== {self.cfg.label}")
        try:
            before: Mapping[int, tuple[int, str | None, str | None]]
            if self.fresh:
                self.app.upgrade()
                self.ids = create_accounts(self.db, self.key, self.server, self.args.accounts)
                before = {a: (0, None, None) for a in self.ids}
            else:
                self.ids = sorted(self.db.states())
                before = self.db.states()
            self.users = {a: user_name(i) for i, a in enumerate(self.ids)}
            self.app.start()
            if not self.fresh:
                # Once more over every account, which also ends the syncs the last configuration's ack phase left.
                self.db.make_due()
            seconds, _, failed = self.wait_polled(before, self.ids, self.args.timeout, "first sync")
            self.result.first_sync_s = seconds
            what = "first sync" if self.fresh else "warm-up poll (accounts reused)"
            say(f"  {what} of {len(self.ids)} accounts (untimed set-up) in {seconds:.1f}s, {failed} failed")
            if failed:
                raise RuntimeError(f"{failed} first syncs failed:\n{self.app.log_tail()}")
            self.settle_watches()
            self.result.poll = self.idle_poll()
            if self.args.profile:
                self.result.profile = self.profile_polls(Path(f"{self.args.profile}.{self.cfg.tag}"))
            self.result.deliveries = self.idle_deliveries()
            self.ack_under_load()
        except Exception as exc:  # one configuration failing still reports the others
            self.result.error = f"{type(exc).__name__}: {exc}"
            say(f"  FAILED: {self.result.error}")
        finally:
            self.result.loadavg = os.getloadavg()
            self.result.stop_s = self.app.stop()
            if self.result.stop_s:
                say(
                    f"  stopped: {', '.join(f'{k} {fmt(v, 1)} s' for k, v in self.result.stop_s.items())} after SIGTERM"
                )
        return self.result

    def settle_watches(self) -> None:
        """Wait until the workers' IDLE watches stop growing (their logins would otherwise land in the poll)."""
        if not self.idle:
            self.result.idle_note = "no sync/idle.py in this checkout"
            return
        want = min(len(self.ids), IDLE_CAPACITY * len(self.app.worker_pids))
        started = time.monotonic()
        stable_since, last = time.monotonic(), -1
        while time.monotonic() - started < self.args.timeout:
            count = len(self.db.watched(self.app.worker_pids))
            if count != last:
                stable_since, last = time.monotonic(), count
            if count >= want and time.monotonic() - stable_since > 3:
                break
            if count < want and time.monotonic() - stable_since > 30:
                break  # no more coming
            time.sleep(0.5)
        imap = session_count(self.server.pid, "imap")
        self.result.watches = last
        say(
            f"  {last} IDLE watches leased (of {want} possible), {imap} imap processes in Dovecot,"
            f" after {time.monotonic() - started:.0f}s"
        )
        time.sleep(2)

    def idle_poll(self) -> PollResult:
        """Every account due at once: the time and CPU until each was polled once, and what it left behind."""
        # PostgreSQL's backends flush their table statistics up to 10 s late: the set-up's must be in before.
        time.sleep(1 if self.cfg.database == "sqlite" else 11)
        before_rows, before_ins = self.db.rows(), self.db.inserted()
        before_calls = len(self.fake.calls)
        before = self.db.states()
        cpu0 = self.cpu()
        self.db.make_due()
        wall, first, failed = self.wait_polled(before, self.ids, self.args.timeout, "idle poll")
        cpu1 = self.cpu()
        # Let coalesced Slack calls go out, and (PostgreSQL) the backends flush their table statistics.
        time.sleep(self.args.settle if self.cfg.database == "sqlite" else max(self.args.settle, 11))
        after_rows, after_ins = self.db.rows(), self.db.inserted()
        calls: dict[str, int] = {}
        for call in self.fake.calls[before_calls:]:
            calls[call.method] = calls.get(call.method, 0) + 1
        grown = {t: after_rows.get(t, 0) - before_rows.get(t, 0) for t in after_rows}
        inserted = None
        if before_ins is not None and after_ins is not None:
            inserted = {t: n - before_ins.get(t, 0) for t, n in after_ins.items() if n - before_ins.get(t, 0)}
        pg = None
        if self.cfg.database == "postgresql":
            pg = sum(v - cpu0.postgres.get(pid, 0.0) for pid, v in cpu1.postgres.items())
        result = PollResult(
            accounts=len(self.ids),
            polled=len(self.ids),
            failed=failed,
            wall_s=wall,
            first_s=first,
            cpu_workers_s=cpu1.workers - cpu0.workers,
            cpu_web_s=cpu1.web - cpu0.web,
            cpu_dovecot_s=cpu1.dovecot - cpu0.dovecot,
            cpu_postgres_s=pg,
            machine_busy=(cpu1.machine_busy - cpu0.machine_busy) / max(cpu1.machine_total - cpu0.machine_total, 1),
            rows_grown={t: n for t, n in grown.items() if n},
            rows_inserted=inserted,
            slack_calls=calls,
        )
        say(
            f"  idle poll: {len(self.ids)} accounts in {wall:.1f}s ({failed} failed), CPU workers "
            f"{result.cpu_workers_s:.1f}s web {result.cpu_web_s:.1f}s Dovecot {result.cpu_dovecot_s:.1f}s"
            + (f" PostgreSQL {pg:.1f}s" if pg is not None else "")
            + f"; rows {result.rows_grown or 'none'}; Slack calls {calls or 'none'}"
        )
        return result

    def profile_polls(self, path: Path) -> dict[str, Any]:
        """Idle polls in this process, one after another under cProfile, with the worker's own services.

        ``sync_account`` on up to 100 idle accounts (not the ones the ack phase uses) with the Slack notifier the
        worker builds; the sync thread's CPU per poll is the client's cost without the pool, the tick or IDLE.
        The profile goes to ``path``; the top functions are printed.
        """
        import cProfile
        import io
        import pstats

        from bot.services import build_services
        from bot.settings import load_settings
        from bot.slack_app import slack_notifier
        from sync.engine import sync_account

        accounts = self.ids[: min(101, len(self.ids) - ACK_SYNCS)]
        saved_env, saved_cwd = dict(os.environ), os.getcwd()
        os.environ.clear()
        os.environ.update(self.app.env())  # SSL_CERT_FILE is read whenever a TLS context is made
        os.chdir(self.app.data_dir)
        try:
            services = build_services(load_settings(), migrate=False)
            services.notifier = slack_notifier(services) or services.notifier
            deps = services.engine_deps("bench-profile")
            sync_account(deps, accounts[0])  # the first pays the imports and the first connections
            prof = cProfile.Profile(time.thread_time)  # CPU, not waits: the machine is shared
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            prof.enable()
            outcomes = [sync_account(deps, a).value for a in accounts[1:]]
            prof.disable()
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            os.chdir(saved_cwd)
        prof.dump_stats(str(path))
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        polls = len(accounts) - 1
        result = {
            "polls": polls,
            "outcomes": {o: outcomes.count(o) for o in set(outcomes)},
            "thread_cpu_ms_per_poll": cpu / polls * 1000,
            "wall_ms_per_poll": wall / polls * 1000,
            "file": str(path),
            "top": out.getvalue(),
        }
        say(
            f"  profile: {polls} idle polls in this process, {result['thread_cpu_ms_per_poll']:.1f} ms CPU and"
            f" {result['wall_ms_per_poll']:.1f} ms wall each (cProfile inflates both); {path}"
        )
        return result

    def idle_deliveries(self) -> list[Delivery]:
        """APPEND one message at a time to watched INBOXes and time each until its row exists."""
        from tests.support.mail import make_message

        if not self.idle:
            return []
        watched = self.db.watched(self.app.worker_pids)
        if not watched:
            self.result.idle_note = "no IDLE watch was leased"
            return []
        rng = random.Random(7)
        chosen = [rng.choice(watched) for _ in range(self.args.deliveries)]
        users = self.users
        deliveries = [Delivery(a, f"idle-{n}-{uuid.uuid4().hex[:12]}@bench.example") for n, a in enumerate(chosen)]
        stop = threading.Event()
        done = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                pending = [d for d in deliveries if d.appended_at and d.stored_at is None]
                if pending:
                    found = self.db.stored_ids([d.message_id for d in pending])
                    now = time.time()
                    for d in pending:
                        if d.message_id in found:
                            d.stored_at = now
                if all(d.stored_at is not None for d in deliveries):
                    done.set()
                    return
                stop.wait(0.02)

        watcher = threading.Thread(target=watch, name="stored-watcher", daemon=True)
        watcher.start()
        try:
            for d in deliveries:
                raw = make_message(subject="idle delivery", message_id=f"<{d.message_id}>")
                started = time.time()
                self.server.append(users[d.account_id], PASSWORD, "INBOX", raw)
                d.appended_at = time.time()
                d.append_s = d.appended_at - started
                time.sleep(self.args.delivery_gap)
            done.wait(30)
        finally:
            stop.set()
            watcher.join(timeout=5)
        lat = [d.latency_s for d in deliveries if d.latency_s is not None]
        missed = sum(1 for d in deliveries if d.stored_at is None)
        with contextlib.suppress(OSError):
            if "Inotify instance limit" in self.server.log_path.read_text(errors="replace"):
                self.result.dovecot_notify = f"a look every {IDLE_CHECK_SECONDS} s (inotify instances used up)"
        if lat:
            say(
                f"  IDLE delivery: {len(lat)} stored, p50 {pct(lat, 50) * 1000:.0f} ms,"
                f" p99 {pct(lat, 99) * 1000:.0f} ms, {missed} not stored within 30 s"
            )
        return deliveries

    def ack_under_load(self) -> None:
        """Rounds of 20 signed Slack requests at once while 50 accounts sync new mail."""
        from tests.support.slack_driver import SlackDriver

        syncing = self.ids[-ACK_SYNCS:]
        users = [self.users[a] for a in syncing]
        # Archive: a folder IDLE does not watch, so the syncs start when the bench makes them due, not before.
        seed_new_mail(self.server, users, "Archive", self.args.ack_messages)
        url = f"http://127.0.0.1:{self.app.port}/slack/events"
        drivers = [SlackDriver(url, SIGNING_SECRET, self.fake) for _ in range(ACK_WIDTH)]
        try:
            home = open_home(drivers[0], self.fake)
            send_request(drivers[0], "slash", "warm-up", home_view_id=home)  # the first request pays imports
            before = self.db.states()
            running: list[tuple[float, int, int]] = []  # (time, under lease, done)
            stop = threading.Event()

            def watch() -> None:
                while not stop.is_set():
                    states = self.db.states()
                    held = sum(1 for a in syncing if states[a][1] is not None)
                    finished = sum(1 for a in syncing if states[a][0] > before[a][0] and states[a][1] is None)
                    running.append((time.time(), held, finished))
                    stop.wait(0.05)

            watcher = threading.Thread(target=watch, name="sync-watcher", daemon=True)
            watcher.start()
            samples: list[Sample] = []
            started = time.perf_counter()
            self.db.make_due(syncing)
            deadline = time.monotonic() + 30
            while not any(r[1] for r in running[-1:]) and time.monotonic() < deadline:
                time.sleep(0.02)  # until the first of them is under lease
            with ThreadPoolExecutor(ACK_WIDTH) as pool:
                for _ in range(self.args.ack_rounds):
                    if running and running[-1][2] >= len(syncing):
                        break
                    jobs = [(["slash", "block"][j % 2], d) for j, d in enumerate(drivers)]
                    samples += list(pool.map(lambda job: send_request(job[1], job[0], "load", home_view_id=home), jobs))
                    time.sleep(0.2)
            self.result.ack_syncs_done_at_end = running[-1][2] if running else None
            self.result.ack_syncs_s = time.perf_counter() - started
            # The rest of the syncs is not waited for: stopping the workers ends them (cursors kept).
            stop.set()
            watcher.join(timeout=5)
            for s in samples:  # how many of the 50 were under lease when each request went out
                at = [r for r in running if r[0] <= s.sent_at]
                s.syncs_running = at[-1][1] if at else 0
            match_answers(self.fake, samples)
            self.result.acks = samples
            self.result.ack_syncs_running = [s.syncs_running for s in samples]
            acks = [s.ack_s for s in samples]
            say(
                f"  acks: {len(samples)} requests in rounds of {ACK_WIDTH}, p50 {pct(acks, 50) * 1000:.0f} ms, p99 "
                f"{pct(acks, 99) * 1000:.0f} ms, {sum(1 for s in samples if s.error)} errors; "
                f"{self.result.ack_syncs_done_at_end} of {len(syncing)} syncs done when the last round went out,"
                f" {self.result.ack_syncs_s:.1f}s after they were made due"
            )
        finally:
            for d in drivers:
                d.close()


# ------------------------------------------------------------------------------------------------
# Report


def _ratio(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    if target == 0:
        return "met" if value == 0 else "missed"
    return f"{value / target:.2f}x"


def _ms(values: Sequence[float], q: float) -> float | None:
    return pct(values, q) * 1000 if values else None


def summarize(r: ConfigResult) -> dict[str, Any]:
    """The headline figures of one configuration."""
    lat = [d.latency_s for d in r.deliveries if d.latency_s is not None]
    acks = [s.ack_s for s in r.acks]
    answers = [s.answer_s for s in r.acks if s.answer_s is not None]
    p = r.poll
    return {
        "config": r.config.label,
        "accounts": r.accounts,
        "error": r.error,
        "first_sync_s": r.first_sync_s,
        "poll_wall_s": p and p.wall_s,
        "poll_cpu_total_s": p and p.cpu_total_s,
        "poll_cpu_workers_s": p and p.cpu_workers_s,
        "poll_cpu_web_s": p and p.cpu_web_s,
        "poll_cpu_dovecot_s": p and p.cpu_dovecot_s,
        "poll_cpu_postgres_s": p and p.cpu_postgres_s,
        "poll_cpu_per_account_ms": p and p.cpu_total_s / max(p.polled, 1) * 1000,
        "poll_machine_busy": p and p.machine_busy,
        "poll_failed": p and p.failed,
        "rows_per_poll": p and p.rows_per_poll,
        "rows_grown": p and p.rows_grown,
        "rows_inserted": p and p.rows_inserted,
        "slack_per_poll": p and p.slack_per_poll,
        "slack_calls": p and p.slack_calls,
        "watches": r.watches,
        "idle_note": r.idle_note,
        "dovecot_notify": r.dovecot_notify if r.deliveries else None,
        "deliveries": len(r.deliveries),
        "delivered_stored": len(lat),
        "idle_p50_ms": _ms(lat, 50),
        "idle_p99_ms": _ms(lat, 99),
        "idle_max_ms": max(lat) * 1000 if lat else None,
        "acks": len(acks),
        "ack_errors": sum(1 for s in r.acks if s.error),
        "ack_p50_ms": _ms(acks, 50),
        "ack_p99_ms": _ms(acks, 99),
        "ack_max_ms": max(acks) * 1000 if acks else None,
        "answer_p50_ms": _ms(answers, 50),
        "answer_p99_ms": _ms(answers, 99),
        "ack_syncs_under_lease_mean": (sum(r.ack_syncs_running) / len(r.ack_syncs_running))
        if r.ack_syncs_running
        else None,
        "ack_syncs_done_at_last_round": r.ack_syncs_done_at_end,
        "ack_rounds_s": r.ack_syncs_s,
        "loadavg_at_end": r.loadavg,
        "profile": r.profile,
        "stop_s": r.stop_s,
    }


def report(results: list[ConfigResult], args: Any, started: float) -> dict[str, Any]:
    """Print the tables (stdout) and return the JSON document."""
    sums = [summarize(r) for r in results]
    n = args.accounts
    print(
        f"\nMany accounts: {n:,} accounts x {len(FOLDERS)} folders in one Dovecot "
        f"({dt.date.today()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end, "
        f"{time.perf_counter() - started:.0f}s in all)\n"
    )
    head = ["measure", *(s["config"] for s in sums), "target"]

    def row(name: str, key: str, digits: int = 1, target: str = "") -> list[str]:
        return [name, *(fmt(s[key], digits) if not isinstance(s[key], str) else s[key] for s in sums), target]

    scale = TARGETS["poll_s"] * n / 1000
    rows = [
        row(f"idle poll of {n:,} accounts, wall s", "poll_wall_s", 1, f"< {scale:g} s"),
        ["  ratio to target", *(_ratio(s["poll_wall_s"], scale) for s in sums), "< 1"],
        row("  CPU s, all (workers + web + Dovecot + PG)", "poll_cpu_total_s", 1, f"< {2 * scale:g} (2 cores)"),
        row("  CPU s, workers", "poll_cpu_workers_s"),
        row("  CPU s, web process", "poll_cpu_web_s"),
        row("  CPU s, Dovecot", "poll_cpu_dovecot_s"),
        row("  CPU s, PostgreSQL backends", "poll_cpu_postgres_s"),
        row("  CPU ms per account", "poll_cpu_per_account_ms", 1),
        [
            "  machine busy during the poll",
            *(fmt(s["poll_machine_busy"] and s["poll_machine_busy"] * 100, 0) + " %" for s in sums),
            "",
        ],
        row("  failed polls", "poll_failed", 0, "0"),
        row("rows per idle poll", "rows_per_poll", 3, "0"),
        ["  ratio to target", *(_ratio(s["rows_per_poll"], 0) for s in sums), ""],
        row("Slack calls per idle poll", "slack_per_poll", 3, "0"),
        ["  ratio to target", *(_ratio(s["slack_per_poll"], 0) for s in sums), ""],
        row("IDLE watches leased", "watches", 0),
        row("IDLE delivery-to-stored p50 ms", "idle_p50_ms", 0),
        row("IDLE delivery-to-stored p99 ms", "idle_p99_ms", 0, "< 2000 ms"),
        ["  ratio to target", *(_ratio(s["idle_p99_ms"], TARGETS["idle_p99_ms"]) for s in sums), "< 1"],
        [
            "  stored / delivered",
            *(f"{s['delivered_stored']}/{s['deliveries']}" if s["deliveries"] else s["idle_note"] or "-" for s in sums),
            "",
        ],
        ["  Dovecot noticed new mail by", *(s["dovecot_notify"] or "-" for s in sums), ""],
        row(f"ack p50 ms ({ACK_WIDTH} at once, {ACK_SYNCS} syncs)", "ack_p50_ms", 0),
        row("ack p99 ms", "ack_p99_ms", 0, "< 300 ms"),
        ["  ratio to target", *(_ratio(s["ack_p99_ms"], TARGETS["ack_p99_ms"]) for s in sums), "< 1"],
        row("  ack max ms", "ack_max_ms", 0),
        row("  answer at Slack p50 ms", "answer_p50_ms", 0),
        ["  requests / errors", *(f"{s['acks']} / {s['ack_errors']}" for s in sums), "0 errors"],
        row("  syncs under lease per request (mean)", "ack_syncs_under_lease_mean", 1),
        row("  syncs done at the last round", "ack_syncs_done_at_last_round", 0, f"< {ACK_SYNCS}"),
        row("set-up: first sync (procrastinate 2: poll again), s", "first_sync_s", 1),
    ]
    print(table(head, rows))
    for s in sums:
        if s["error"]:
            print(f"\n{s['config']}: FAILED: {s['error']}")
        details = []
        if s["rows_grown"]:
            details.append(f"tables that grew: {s['rows_grown']}")
        if s["rows_inserted"]:
            details.append(f"rows inserted (PostgreSQL statistics, deleted ones included): {s['rows_inserted']}")
        if s["slack_calls"]:
            details.append(f"Slack calls: {s['slack_calls']}")
        if s["stop_s"]:
            stops = ", ".join(
                f"{k} {fmt(v, 1) if v is not None else 'killed after 30'} s" for k, v in s["stop_s"].items()
            )
            details.append(f"from SIGTERM to exit: {stops}")
        if details:
            print(f"\n{s['config']}: " + "; ".join(details))
        if s["profile"]:
            prof = s["profile"]
            print(
                f"\n{s['config']}: {prof['polls']} idle polls in the bench process under cProfile"
                f" ({prof['outcomes']}): {prof['thread_cpu_ms_per_poll']:.1f} ms CPU, {prof['wall_ms_per_poll']:.1f} ms"
                f" wall per poll; the top functions by own CPU time:\n"
            )
            print("\n".join(line for line in prof["top"].splitlines() if line.strip())[:6000])
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "accounts": n,
        "folders": list(FOLDERS),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "targets": TARGETS,
        "machine": out.machine(),
        "results": sums,
        "deliveries": {r.config.label: [asdict(d) | {"latency_s": d.latency_s} for d in r.deliveries] for r in results},
        "acks": {r.config.label: [asdict(s) for s in r.acks] for r in results},
    }


# ------------------------------------------------------------------------------------------------


def configs_for(args: Any) -> list[Config]:
    out: list[Config] = []
    for backend in args.backends:
        if backend == "local":
            out.append(Config("local", "sqlite", 1))
            if args.local_postgres:
                out.append(Config("local", "postgresql", 1))
        else:
            out += [Config("procrastinate", "postgresql", w) for w in args.workers]
    return out


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    return lambda text: [kind(part.strip()) for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.many_accounts", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--accounts", type=int, help=f"accounts of 9 folders ({DEFAULT_ACCOUNTS}; --quick: {QUICK_ACCOUNTS})"
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_ACCOUNTS} accounts, fewer deliveries")
    parser.add_argument("--backends", type=_csv(str), default=["local", "procrastinate"], help="local,procrastinate")
    parser.add_argument("--workers", type=_csv(int), default=[1, 2], help="procrastinate worker processes, e.g. 1,2")
    parser.add_argument("--local-postgres", action="store_true", help="also the local backend on PostgreSQL")
    parser.add_argument("--concurrency", type=int, help="syncs at once per worker process (default: the app's)")
    parser.add_argument("--deliveries", type=int, help="IDLE deliveries per configuration (100; --quick: 30)")
    parser.add_argument("--delivery-gap", type=float, default=0.3, help="seconds between deliveries (0.3)")
    parser.add_argument("--ack-rounds", type=int, default=5, help=f"rounds of {ACK_WIDTH} requests at once (5)")
    parser.add_argument("--ack-messages", type=int, help="new messages per syncing account (300; --quick: 150)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a poll before counting Slack calls")
    parser.add_argument("--timeout", type=float, default=900, help="how long one phase may take, seconds (900)")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    parser.add_argument(
        "--profile", metavar="FILE", help="also 100 idle polls in-process under cProfile (FILE.<config>)"
    )
    parser.add_argument("--workdir", help="where Dovecot, the databases and the logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and the PostgreSQL databases")
    args = parser.parse_args(argv)
    args.accounts = args.accounts or (QUICK_ACCOUNTS if args.quick else DEFAULT_ACCOUNTS)
    args.deliveries = args.deliveries or (30 if args.quick else 100)
    args.ack_messages = args.ack_messages or (150 if args.quick else 300)
    if args.accounts < ACK_SYNCS:
        parser.error(f"--accounts must be at least {ACK_SYNCS} (the ack measurement syncs {ACK_SYNCS} of them)")
    unknown = set(args.backends) - {"local", "procrastinate"}
    if unknown:
        parser.error(f"unknown backend {', '.join(sorted(unknown))}: use local and/or procrastinate")

    def on_sigterm(*_: object) -> None:
        raise SystemExit(143)  # unwinds through the finally below

    signal.signal(signal.SIGTERM, on_sigterm)
    sys.path.insert(0, str(REPO))
    from cryptography.fernet import Fernet

    from tests.support.fake_slack import FakeSlack

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-many-accounts-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    say(f"work dir {work}; load average {os.getloadavg()[0]:.2f}")
    idle = (REPO / "sync" / "idle.py").exists()
    has_procrastinate = (REPO / "sync" / "procrastinate_backend.py").exists()
    configs = configs_for(args)
    if not has_procrastinate and any(c.backend == "procrastinate" for c in configs):
        say("this checkout has no procrastinate backend (sync/procrastinate_backend.py): measuring the local one only")
        configs = [c for c in configs if c.backend != "procrastinate"]
    key = Fernet.generate_key().decode()
    server = fake = None
    results: list[ConfigResult] = []
    dbs: dict[str, Database] = {}
    try:
        server = seed_dovecot(work, args.accounts)
        fake = FakeSlack()
        fake.start()
        for cfg in configs:
            # The procrastinate configurations share one database: the first sync of every account runs once.
            shared = f"{cfg.backend}-{cfg.database}"
            fresh = shared not in dbs
            if fresh:
                dbs[shared] = Database(cfg.database, work, cfg.tag)
            results.append(ConfigRun(cfg, dbs[shared], fresh, server, fake, work, key, args, idle).run())
        result = report(results, args, started)
        out.write_json(result, args.json)
    finally:
        for db in dbs.values():
            with contextlib.suppress(Exception):
                if args.keep:
                    db.engine.dispose()
                else:
                    db.drop()
        if fake is not None:
            with contextlib.suppress(Exception):
                fake.stop()
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
