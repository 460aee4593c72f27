"""Slack acknowledgement latency with past syncs running in the background (DESIGN section 10).

Runs the real app as ``python -m bot serve`` (the web process, which starts the worker as a child process)
against a fake Slack and a private Dovecot, and times signed Slack requests sent like Slack sends them:

- ``/emailsync help`` (a slash command: the listener acks, then answers through the response URL),
- a ``block_actions`` click on App Home's "Edit general settings" (acks, reads the settings, ``views.open``).

Three phases, in one ``serve`` process: *idle* (empty database, the worker ticking with nothing due),
*busy* (``--accounts`` mailboxes of ``--messages`` messages added with ``emailsync account add``, side by
side; their past syncs run in the worker while the requests are sent; a request counts only when the database
showed every sync running before and after it, later ones are the *tail*) and *after* (the same again once the
syncs are done: the machine's own drift). In each phase the requests go one at a time (alternating kinds,
``--gap`` apart), then in ``--burst-rounds`` bursts of ``--burst`` at once. The HTTP time until the app's
answer to the request is the ack latency (Slack gives up after 3 s); the time until the fake Slack received
the app's real answer (the response-URL post, or ``views.open``) is reported next to it.

    python -m bench.ack_latency [--messages N] [--accounts N] [--requests N] [--burst N] [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.report import fmt, machine, pct, say, table, write_json

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-pw"
SIGNING_SECRET = "bench-signing-secret"
TEAM = "T0001"
DEFAULT_MESSAGES = 15_000
DEFAULT_ACCOUNTS = 3
DEFAULT_REQUESTS = 200
QUICK_MESSAGES = 5_000
QUICK_REQUESTS = 50
WARMUP_REQUESTS = 20
POLL_SECONDS = 0.25
KINDS = ("slash", "block")
KIND_NAMES = {"slash": "/emailsync help (slash command)", "block": "block_actions (Home: general settings)"}
PHASES = ("idle", "busy", "tail", "after", "idle-burst", "busy-burst", "tail-burst", "after-burst")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------------
# Mailboxes: the deterministic generator of bench/past_sync.py (a tenth of the messages carry a 40-60 KB
# attachment, a third are multipart/alternative), built in a fork pool and written into the Maildirs.

_SEED_MAILBOX: Any = None  # set before the build workers fork


def _build(planned: Any) -> bytes:
    from bench.past_sync import build_message

    return build_message(_SEED_MAILBOX, planned)


def seed_mailbox(server: Any, user: str, count: int, now: dt.datetime) -> dict[str, Any]:
    """Create ``user`` and write ``count`` messages into its folders; returns size and shape."""
    global _SEED_MAILBOX
    from bench.past_sync import plan_mailbox

    server.add_user(user, PASSWORD)
    shutil.rmtree(server.rawlog_dir(user), ignore_errors=True)  # else Dovecot writes every session byte
    mailbox = plan_mailbox(count, f"{user}@bench.example", now=now)
    total = 0

    def sized(raws: Iterator[bytes], msgs: list[Any]) -> Iterator[tuple[bytes, dt.datetime]]:
        nonlocal total
        for raw, m in zip(raws, msgs, strict=True):
            total += len(raw)
            yield raw, m.date

    _SEED_MAILBOX = mailbox
    try:
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
            for folder, msgs in mailbox.by_folder().items():
                server.seed_maildir(user, folder, sized(pool.imap(_build, msgs, chunksize=32), msgs))
    finally:
        _SEED_MAILBOX = None
    return {
        "user": user,
        "messages": count,
        "bytes": total,
        "attachments": sum(m.attachment for m in mailbox.messages),
        "oldest": min(m.date for m in mailbox.messages).date().isoformat(),
    }


# ------------------------------------------------------------------------------------------------
# Watching the processes and the database


def proc_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of one process (None once it is gone)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])
    return total - values[3] - values[4], total


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@dataclass
class Snapshot:
    """One look at the database: which sync runs are running, and what is stored."""

    at: float
    running: int
    stored: int


class SyncWatcher:
    """Polls the app's SQLite file (plain SELECTs, autocommit) every POLL_SECONDS in a thread."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.snapshots: list[Snapshot] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
                running = conn.execute("SELECT count(*) FROM sync_run WHERE status = 'running'").fetchone()[0]
                stored = conn.execute("SELECT count(*) FROM message").fetchone()[0]
                self.snapshots.append(Snapshot(time.time(), int(running), int(stored)))
            except sqlite3.Error:
                pass  # the schema is not there yet, or a writer holds a lock for longer than the timeout
            self._stop.wait(POLL_SECONDS)
        if conn is not None:
            conn.close()

    def running_at(self, when: float) -> int:
        """Sync runs surely running at ``when``: the fewer of the snapshots just before and just after it."""
        times = [s.at for s in self.snapshots]
        i = bisect.bisect_right(times, when)
        if i == 0 or i == len(times):
            return 0
        return min(self.snapshots[i - 1].running, self.snapshots[i].running)

    def stored_at(self, when: float) -> int:
        times = [s.at for s in self.snapshots]
        i = bisect.bisect_right(times, when)
        return self.snapshots[max(i - 1, 0)].stored if self.snapshots else 0

    def latest(self) -> Snapshot | None:
        return self.snapshots[-1] if self.snapshots else None


def sync_runs(db_path: Path) -> list[dict[str, Any]]:
    """Every sync_run row, with its account's address and stored message count."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT r.id, r.account_id, a.email, r.kind, r.status, r.started_at, r.finished_at, r.slices,"
            " r.total, r.processed, r.stored, r.error_message,"
            " (SELECT count(*) FROM message m WHERE m.account_id = r.account_id) AS messages"
            " FROM sync_run r JOIN email_account a ON a.id = r.account_id ORDER BY r.id"
        ).fetchall()
    out = []
    for row in rows:
        r = dict(row)
        start, end = r["started_at"], r["finished_at"]
        r["seconds"] = (
            (dt.datetime.fromisoformat(str(end)) - dt.datetime.fromisoformat(str(start))).total_seconds()
            if start and end
            else None
        )
        out.append(r)
    return out


# ------------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Sample:
    """One signed request: its ack (HTTP answer) time and the time until Slack got the app's answer."""

    kind: str
    phase: str
    sent_at: float
    ack_s: float
    status: int
    answer_s: float | None = None
    error: str | None = None
    syncs_running: int = 0
    key: str = ""  # the response URL or trigger id that identifies the app's answer


@dataclass
class PhaseCpu:
    """CPU used while one phase ran: the web process, the worker and the whole machine."""

    seconds: float
    web_cpu_s: float | None
    worker_cpu_s: float | None
    machine_busy: float  # fraction of all CPUs
    loadavg: float


def summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50_ms": pct(values, 50) * 1000,
        "p95_ms": pct(values, 95) * 1000,
        "max_ms": max(values) * 1000,
        "mean_ms": statistics.fmean(values) * 1000,
    }


class AckBench:
    """Owns Dovecot, the fake Slack, the ``serve`` process tree and the work directory."""

    def __init__(self, args: argparse.Namespace) -> None:
        from cryptography.fernet import Fernet

        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-ack-latency-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.work / "data"
        self.data_dir.mkdir(exist_ok=True)
        self.db_path = self.work / "app.db"
        self.key = Fernet.generate_key().decode()
        self.now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
        self.server: Any = None
        self.fake: Any = None
        self.driver: Any = None
        self.serve: subprocess.Popen[bytes] | None = None
        self.worker_pid: int | None = None
        self.port = 0
        self.watcher = SyncWatcher(self.db_path)
        self.samples: list[Sample] = []
        self.cpu: dict[str, PhaseCpu] = {}
        self.mailboxes: list[dict[str, Any]] = []
        self.accounts: list[int] = []
        self.home_view_id: str | None = None
        self.timeline: dict[str, float] = {}
        self.worker_left_running = False

    # ---- set-up and tear-down --------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("EMAILSYNC_", "SLACK_", "DATABASE_URL"))}
        return {
            **keep,
            "PYTHONPATH": str(REPO) + (os.pathsep + keep["PYTHONPATH"] if keep.get("PYTHONPATH") else ""),
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": f"sqlite:///{self.db_path}",
            "EMAILSYNC_SECRET_KEY": self.key,
            "EMAILSYNC_DATA_DIR": str(self.data_dir),
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.fake.api_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            "PORT": str(self.port),
            "SSL_CERT_FILE": str(self.server.cafile),
            "EMAILSYNC_TICK_SECONDS": "1",
            # the bench's Dovecot listens on loopback, on high ports
            "EMAILSYNC_ALLOW_PRIVATE_HOSTS": "127.0.0.0/8",
            "EMAILSYNC_ALLOW_PORTS": "1024-65535",
        }

    def start(self) -> None:
        sys.path.insert(0, str(REPO))
        from tests.support.dovecot import start_dovecot
        from tests.support.fake_slack import FakeSlack

        self.server = start_dovecot(self.work / "dovecot")
        say(f"dovecot on 127.0.0.1:{self.server.imaps_port} (imaps), work dir {self.work}")
        for n in range(1, self.args.accounts + 1):
            started = time.perf_counter()
            info = seed_mailbox(self.server, f"ack{n}", self.args.messages, self.now)
            self.mailboxes.append(info)
            say(
                f"seeded {info['user']}: {info['messages']:,} messages, {info['bytes'] / 1e6:.1f} MB "
                f"({info['attachments']} with a 40-60 KB attachment) in {time.perf_counter() - started:.1f}s"
            )
        self.warm_dovecot()
        self.fake = FakeSlack()
        self.fake.start()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        log = (self.work / "serve.log").open("wb")
        self.serve = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            env=self.env(),
            cwd=self.data_dir,  # no stray .env is read
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # serve and its worker child form one process group
        )
        log.close()
        say(f"emailsync serve started (pid {self.serve.pid}) on port {self.port}; log {self.work / 'serve.log'}")
        self.wait_healthy()
        workers = child_pids(self.serve.pid)
        self.worker_pid = workers[0] if len(workers) == 1 else None
        say(f"healthy; worker child pid {self.worker_pid}")
        self.watcher.start()
        from tests.support.slack_driver import SlackDriver

        self.driver = SlackDriver(f"http://127.0.0.1:{self.port}/slack/events", SIGNING_SECRET, self.fake)
        self.driver.app_home_opened("U0001")
        publish = self.fake.wait_for("views.publish", predicate=lambda c: c.args.get("user_id") == "U0001")
        if not publish[-1].ok:
            raise RuntimeError(f"views.publish failed: {publish[-1].summary()}")
        self.home_view_id = self.fake.home_tabs["U0001"]["id"]

    def warm_dovecot(self) -> None:
        """Index every folder once (untimed), so the first sync does not pay Dovecot's first look."""
        for info in self.mailboxes:
            client = self.server.client(info["user"], PASSWORD)
            try:
                for flags, _delim, name in client.list_folders():
                    if not any(f.lower() == b"\\noselect" for f in flags):
                        client.select_folder(name, readonly=True)
            finally:
                client.logout()

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        assert self.serve is not None
        while time.monotonic() < deadline:
            if self.serve.poll() is not None:
                raise RuntimeError(f"serve exited with {self.serve.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                    if resp.status == 200 and json.loads(resp.read()).get("ok"):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"serve did not become healthy in {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.work / "serve.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop everything that was started, each by its own id; never raises."""
        with contextlib.suppress(Exception):
            self.watcher.stop()
        if self.driver is not None:
            with contextlib.suppress(Exception):
                self.driver.close()
        if self.serve is not None:
            self.stop_serve()
        if self.fake is not None:
            with contextlib.suppress(Exception):
                self.fake.stop()
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            say(f"kept {self.work}")

    def stop_serve(self) -> None:
        """SIGTERM to serve, then to its worker if serve left it running; SIGKILL after 30 s each."""
        proc = self.serve
        assert proc is not None
        workers = set(child_pids(proc.pid)) | ({self.worker_pid} if self.worker_pid else set())
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                say("serve did not stop in 30 s: SIGKILL to its process group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        time.sleep(0.5)  # serve's own clean-up would stop the worker now
        left = sorted(pid for pid in workers if alive(pid))
        if left:
            self.worker_left_running = True
            say(f"serve exited but left its worker {left} running: SIGTERM to it")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while any(alive(pid) for pid in left) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in left:
                if alive(pid):
                    say(f"worker {pid} did not stop in 30 s: SIGKILL")
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    # ---- the accounts ----------------------------------------------------------------------------

    def add_accounts(self) -> None:
        """``emailsync account add`` for every mailbox at once (each tests the login first), so that the tick
        finds them due together and their past syncs overlap."""
        start = (self.now.date() - dt.timedelta(days=self.args.start_days)).isoformat()
        procs = []
        for n, info in enumerate(self.mailboxes, start=1):
            argv = [sys.executable, "-m", "bot", "account", "add", "--team", TEAM, "--user", f"U{n:04d}"]
            argv += ["--email", f"{info['user']}@bench.example", "--username", info["user"]]
            argv += ["--imap-host", "127.0.0.1", "--imap-port", str(self.server.imaps_port)]
            argv += ["--password-stdin", "--start", start, "--json"]
            procs.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=self.env(),
                    cwd=self.data_dir,
                )
            )
        failures = []
        for proc in procs:
            try:
                out, err = proc.communicate(PASSWORD + "\n", timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            if proc.returncode == 0:
                self.accounts.append(int(json.loads(out)["id"]))
            else:
                failures.append(f"exit {proc.returncode}: {err.strip()[-500:]}")
        if failures:
            raise RuntimeError("account add failed: " + " | ".join(failures))
        say(f"added accounts {sorted(self.accounts)} (start {start}) with `emailsync account add`, side by side")

    def wait_running(self, want: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            snap = self.watcher.latest()
            if snap is not None and snap.running >= want:
                return
            if any(r["status"] != "running" for r in sync_runs(self.db_path)):
                raise RuntimeError(f"a sync finished before all {want} were running; give them more to do (--messages)")
            time.sleep(0.05)
        raise RuntimeError(f"the {want} syncs did not all start within {timeout:.0f}s:\n{self.log_tail()}")

    def wait_syncs_done(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = sync_runs(self.db_path)
            if runs and all(r["status"] != "running" for r in runs):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the syncs did not finish within {timeout:.0f}s")

    # ---- requests --------------------------------------------------------------------------------

    def one_request(self, kind: str, phase: str, driver: Any = None) -> Sample:
        """Send one signed request and time its HTTP answer (the ack); the app's answer is matched later."""
        driver = driver or self.driver
        sent_at = time.time()
        if kind == "slash":
            response = driver.slash_command("help", user_id="U0001")
            key = driver.last_payload["response_url"]
        else:
            from bot import ids

            response = driver.block_action(ids.A_HOME_GENERAL, view=self.home_view_id)
            key = driver.last_payload["trigger_id"]
        sample = Sample(kind, phase, sent_at, response.elapsed.total_seconds(), response.status_code, key=key)
        if response.status_code != 200:
            sample.error = f"HTTP {response.status_code}"
        return sample

    def match_answers(self, samples: list[Sample], timeout: float = 10) -> None:
        """The app's answer to each request at the fake Slack: the post to its response URL, or the
        ``views.open`` with its trigger id; waits up to ``timeout`` s for the last ones."""
        deadline = time.monotonic() + timeout
        while True:
            by_url = {c.url: c for c in self.fake.calls_to("response_url")}
            by_trigger = {c.args.get("trigger_id"): c for c in self.fake.calls_to("views.open")}
            missing = 0
            for s in samples:
                if s.answer_s is not None or s.status != 200:
                    continue
                call = (by_url if s.kind == "slash" else by_trigger).get(s.key)
                if call is None:
                    missing += 1
                    continue
                s.answer_s = call.at - s.sent_at
                if not call.ok:
                    s.error = f"{call.method}: {call.error}"
            if not missing:
                return
            if time.monotonic() > deadline:
                for s in samples:
                    if s.answer_s is None and s.error is None:
                        s.error = f"no answer at Slack within {timeout:.0f} s"
                return
            time.sleep(0.1)

    @contextlib.contextmanager
    def phase_cpu(self, phase: str) -> Iterator[None]:
        """Record the CPU the web process, the worker and the machine used while the block runs."""
        web_before = proc_cpu_s(self.serve.pid if self.serve else None)
        worker_before = proc_cpu_s(self.worker_pid)
        busy_before, total_before = machine_cpu()
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        busy_after, total_after = machine_cpu()
        web_after = proc_cpu_s(self.serve.pid if self.serve else None)
        worker_after = proc_cpu_s(self.worker_pid)
        self.cpu[phase] = PhaseCpu(
            seconds=seconds,
            web_cpu_s=None if web_before is None or web_after is None else web_after - web_before,
            worker_cpu_s=None if worker_before is None or worker_after is None else worker_after - worker_before,
            machine_busy=(busy_after - busy_before) / max(total_after - total_before, 1),
            loadavg=os.getloadavg()[0],
        )

    def run_bursts(self, phase: str, *, busy: int = 0) -> list[Sample]:
        """``--burst-rounds`` rounds of ``--burst`` requests sent at once (half slash commands, half clicks),
        0.3 s apart, each from its own connection. With ``busy``: stop once a sync has finished."""
        from concurrent.futures import ThreadPoolExecutor

        from tests.support.slack_driver import SlackDriver

        width = self.args.burst
        drivers = [SlackDriver(self.driver.app_url, SIGNING_SECRET, self.fake) for _ in range(width)]
        taken: list[Sample] = []
        try:
            with self.phase_cpu(phase), ThreadPoolExecutor(width) as pool:
                for _ in range(self.args.burst_rounds):
                    snap = self.watcher.latest()
                    if busy and (snap is None or snap.running < busy):
                        break
                    jobs = [(KINDS[j % len(KINDS)], phase, d) for j, d in enumerate(drivers)]
                    taken += list(pool.map(lambda job: self.one_request(*job), jobs))
                    time.sleep(0.3)
        finally:
            for d in drivers:
                d.close()
        self.match_answers(taken)
        self.samples.extend(taken)
        acks = [s.ack_s for s in taken]
        if acks:
            say(
                f"  {phase}: {len(taken)} requests in bursts of {width}, ack p50 {pct(acks, 50) * 1000:.1f} ms, "
                f"max {max(acks) * 1000:.1f} ms, {sum(1 for s in taken if s.error)} errors"
            )
        return taken

    def run_phase(self, phase: str, requests: int, *, record: bool = True, busy: int = 0) -> list[Sample]:
        """``requests`` of each kind, alternating, ``--gap`` seconds apart.

        With ``busy`` (the number of syncs): a request counts towards ``requests`` only when the latest look
        at the database saw all of them running, and the phase ends early once none runs any more.
        """
        taken: list[Sample] = []
        counted = dict.fromkeys(KINDS, 0)
        with self.phase_cpu(phase) if record else contextlib.nullcontext():
            i = 0
            while min(counted.values()) < requests:
                kind = KINDS[i % len(KINDS)]
                i += 1
                snap = self.watcher.latest()
                running = snap.running if snap else 0
                if busy and running == 0:
                    break
                if counted[kind] >= requests:
                    continue
                taken.append(self.one_request(kind, phase))
                if not busy or running >= busy:
                    counted[kind] += 1
                if self.args.gap:
                    time.sleep(self.args.gap)
        self.match_answers(taken)
        if not record:
            return taken
        seconds = self.cpu[phase].seconds
        self.samples.extend(taken)
        errors = [s for s in taken if s.error]
        acks = [s.ack_s for s in taken]
        say(
            f"  {phase}: {len(taken)} requests in {seconds:.1f}s, ack p50 {pct(acks, 50) * 1000:.1f} ms, "
            f"max {max(acks) * 1000:.1f} ms, {len(errors)} errors" + (f" (first: {errors[0].error})" if errors else "")
        )
        return taken

    # ---- the run ---------------------------------------------------------------------------------

    def run(self) -> None:
        n = self.args.requests
        say(f"warm-up: {WARMUP_REQUESTS} requests of each kind (not counted)")
        self.run_phase("warm-up", WARMUP_REQUESTS, record=False)
        say(f"idle: {n} requests of each kind, no account in the database (the worker ticks every second)")
        self.timeline["idle_start"] = time.time()
        self.run_phase("idle", n)
        if self.args.burst:
            self.run_bursts("idle-burst")
        self.timeline["idle_end"] = time.time()
        self.add_accounts()
        self.timeline["accounts_added"] = time.time()
        want = len(self.accounts)
        self.wait_running(want)
        self.timeline["all_running"] = time.time()
        say(f"all {want} past syncs running; busy: {n} requests of each kind while all of them run")
        busy = self.run_phase("busy", n, busy=want)
        if self.args.burst:
            busy += self.run_bursts("busy-burst", busy=want)
        self.timeline["busy_end"] = time.time()
        time.sleep(POLL_SECONDS * 2 + 0.1)  # one more look at the database after the last request
        for s in busy:  # afterwards, from the looks just before and just after each request
            s.syncs_running = self.watcher.running_at(s.sent_at)
            if s.syncs_running < want:
                s.phase = "tail-burst" if s.phase == "busy-burst" else "tail"
        tail = sum(1 for s in busy if s.phase.startswith("tail"))
        say(f"  {len(busy) - tail} requests sent while all {want} syncs ran, {tail} after the first had finished")
        say("waiting for the past syncs to finish ...")
        self.wait_syncs_done(self.args.timeout)
        self.timeline["syncs_done"] = time.time()
        time.sleep(2)  # let the last progress messages and Home updates go out
        say(f"after: {n} requests of each kind, the syncs done")
        self.run_phase("after", n)
        if self.args.burst:
            self.run_bursts("after-burst")


# ------------------------------------------------------------------------------------------------
# Report


def pendingtable(samples: list[Sample]) -> tuple[list[list[str]], dict[str, Any]]:
    """Ack latency grouped by how many earlier requests were still unanswered at the fake Slack."""
    groups: dict[str, list[float]] = {}
    for s in samples:
        unanswered = sum(
            1 for o in samples if o.sent_at < s.sent_at and (o.answer_s is None or o.sent_at + o.answer_s > s.sent_at)
        )
        label = "0" if unanswered == 0 else "1-2" if unanswered <= 2 else "3-4" if unanswered <= 4 else "5 or more"
        groups.setdefault(label, []).append(s.ack_s)
    rows, out = [], {}
    for label in ("0", "1-2", "3-4", "5 or more"):
        stats = summary(groups.get(label, []))
        out[label] = stats
        if stats:
            rows.append(
                [label, str(stats["n"]), fmt(stats["p50_ms"], 1), fmt(stats["p95_ms"], 1), fmt(stats["max_ms"], 1)]
            )
    return rows, out


def report(bench: AckBench) -> dict[str, Any]:
    by: dict[tuple[str, str], list[Sample]] = {}
    for s in bench.samples:
        by.setdefault((s.kind, s.phase), []).append(s)
    stats: dict[str, dict[str, Any]] = {}
    rows = []
    for kind in KINDS:
        stats[kind] = {}
        for phase in PHASES:
            taken = by.get((kind, phase), [])
            ack = summary([s.ack_s for s in taken])
            answer = summary([s.answer_s for s in taken if s.answer_s is not None])
            errors = sum(1 for s in taken if s.error)
            stats[kind][phase] = {"ack": ack, "answer": answer, "errors": errors}
            if not taken and phase not in ("idle", "busy", "after"):
                continue
            rows.append(
                [
                    KIND_NAMES[kind],
                    phase,
                    str(len(taken)),
                    fmt(ack and ack["p50_ms"], 1),
                    fmt(ack and ack["p95_ms"], 1),
                    fmt(ack and ack["max_ms"], 1),
                    fmt(answer and answer["p50_ms"], 1),
                    fmt(answer and answer["p95_ms"], 1),
                    fmt(answer and answer["max_ms"], 1),
                    str(errors),
                ]
            )
    ratios: dict[str, dict[str, float | None]] = {}
    pairs = (("busy", "idle"), ("after", "idle"), ("busy-burst", "idle-burst"), ("after-burst", "idle-burst"))
    for kind in KINDS:
        ratios[kind] = {}
        for what in ("ack", "answer"):
            for phase, base in pairs:
                one, other = stats[kind][base][what], stats[kind][phase][what]
                for key in ("p50_ms", "p95_ms", "max_ms"):
                    ratios[kind][f"{what} {phase}/{base} {key[:-3]}"] = other[key] / one[key] if one and other else None

    def ratio_row(kind: str, busy: str, idle: str, after: str) -> list[str]:
        r = ratios[kind]
        return (
            [KIND_NAMES[kind]]
            + [fmt(r[f"ack {busy}/{idle} {k}"], 2) for k in ("p50", "p95", "max")]
            + [fmt(r[f"ack {after}/{idle} p50"], 2)]
            + [fmt(r[f"answer {busy}/{idle} {k}"], 2) for k in ("p50", "p95")]
        )

    ratio_rows = [ratio_row(kind, "busy", "idle", "after") for kind in KINDS]
    burst_rows = [ratio_row(kind, "busy-burst", "idle-burst", "after-burst") for kind in KINDS]
    ratio_head = [
        "request",
        "ack busy/idle p50",
        "ack busy/idle p95",
        "ack busy/idle max",
        "ack after/idle p50",
        "answer busy/idle p50",
        "answer busy/idle p95",
    ]

    want = len(bench.accounts)
    busy = sorted((s for s in bench.samples if s.phase in ("busy", "busy-burst")), key=lambda s: s.sent_at)
    tail = [s for s in bench.samples if s.phase in ("tail", "tail-burst")]
    stored_start = bench.watcher.stored_at(busy[0].sent_at) if busy else 0
    stored_end = bench.watcher.stored_at(busy[-1].sent_at) if busy else 0
    runs = sync_runs(bench.db_path)
    first_start = bench.timeline.get("accounts_added")
    span = (bench.timeline["syncs_done"] - first_start) if first_start and "syncs_done" in bench.timeline else None
    busy_window = (busy[-1].sent_at - busy[0].sent_at) if busy else None

    today = dt.date.today()
    mb = sum(m["bytes"] for m in bench.mailboxes) / 1e6
    print(
        f"\nSlack ack latency, `emailsync serve` (web process + worker child), {len(bench.accounts)} past syncs of "
        f"{bench.args.messages:,} messages each ({mb:.0f} MB in all) in the background "
        f"({today}, {os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.2f})\n"
    )
    print(
        table(
            [
                "request",
                "phase",
                "n",
                "ack p50 ms",
                "ack p95 ms",
                "ack max ms",
                "answer p50 ms",
                "answer p95 ms",
                "answer max ms",
                "errors",
            ],
            rows,
        )
    )
    print("\nRatios, one request at a time (busy/idle; after/idle is the machine's own drift)\n")
    print(table(ratio_head, ratio_rows))
    if bench.args.burst:
        print(
            f"\nRatios, bursts of {bench.args.burst} requests at once (busy-burst/idle-burst, after-burst/idle-burst)\n"
        )
        print(table(ratio_head, burst_rows))
    print("\nCPU during each phase (busy includes its tail)\n")
    cpu_rows = [
        [
            phase,
            fmt(c.seconds, 1),
            fmt(c.web_cpu_s and c.web_cpu_s / c.seconds * 100, 0),
            fmt(c.worker_cpu_s and c.worker_cpu_s / c.seconds * 100, 0),
            fmt(c.machine_busy * 100, 0),
            fmt(c.loadavg, 2),
        ]
        for phase, c in bench.cpu.items()
    ]
    print(table(["phase", "wall s", "web process %CPU", "worker %CPU", "machine busy %", "load avg"], cpu_rows))
    print("\nThe past syncs (in the worker child of serve)\n")
    run_rows = [
        [
            r["email"],
            r["kind"],
            r["status"],
            f"{r['messages']:,}",
            fmt(r["seconds"], 1),
            fmt(r["messages"] / r["seconds"] if r["seconds"] else None, 0),
            str(r["slices"]),
        ]
        for r in runs
    ]
    print(table(["mailbox", "kind", "status", "stored", "run s", "msgs/s", "slices"], run_rows))
    pending_rows, pending = pendingtable([s for s in busy if s.phase == "busy"])
    if pending_rows:
        print(
            "\nBusy acks by the earlier requests whose answer had not reached Slack yet when each was sent"
            " (their listeners still run; Bolt's default listener pool has 5 threads)\n"
        )
        print(table(["unanswered earlier requests", "n", "ack p50 ms", "ack p95 ms", "ack max ms"], pending_rows))
    print(
        f"\nBusy phases: {len(busy)} requests sent while all {want} syncs were running (sync_run rows polled every"
        f" {POLL_SECONDS} s, a request counts when the looks before and after it both saw {want} running), over"
        f" {fmt(busy_window, 1)} s, during which {stored_end - stored_start:,} messages were stored; {len(tail)} more"
        f" (the tail rows) after the first sync had finished."
        f" From `account add` to the last sync done: {fmt(span, 1)} s."
    )
    if bench.worker_left_running:
        print(
            "\nNote: on SIGTERM, serve exited but left its worker child running (the bench stopped it); uvicorn"
            " re-raises the signal after its shutdown, so serve's own clean-up never runs."
        )
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "messages_per_account": bench.args.messages,
        "accounts": len(bench.accounts),
        "requests_per_kind": bench.args.requests,
        "gap_s": bench.args.gap,
        "mailboxes": bench.mailboxes,
        "latency": stats,
        "ratios": ratios,
        "cpu": {phase: asdict(c) for phase, c in bench.cpu.items()},
        "sync_runs": runs,
        "busy_coverage": {
            "requests_all_syncs_running": len(busy),
            "requests_after_first_sync_done": len(tail),
            "busy_window_s": busy_window,
            "stored_during_busy": stored_end - stored_start,
        },
        "serve_left_worker_running": bench.worker_left_running,
        "busy_ack_by_unanswered": pending,
        "timeline": bench.timeline,
        "machine": machine(),
        "samples": [asdict(s) for s in bench.samples],
    }
    return result


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ack_latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, help=f"messages per mailbox ({DEFAULT_MESSAGES})")
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS, help="mailboxes syncing at once (3)")
    parser.add_argument("--requests", type=int, help=f"requests of each kind per phase ({DEFAULT_REQUESTS})")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_MESSAGES} messages, {QUICK_REQUESTS} requests"
    )
    parser.add_argument("--gap", type=float, default=0.01, help="seconds between requests (0.01)")
    parser.add_argument("--burst", type=int, default=10, help="then requests sent at once, this many (10; 0: none)")
    parser.add_argument("--burst-rounds", type=int, default=10, help="rounds of --burst requests per phase (10)")
    parser.add_argument("--start-days", type=int, default=730, help="past sync window in days (730: every message)")
    parser.add_argument("--timeout", type=float, default=1800, help="how long the syncs may take, seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the JSON result (samples included) to FILE")
    parser.add_argument("--workdir", help="where Dovecot, the Maildirs and the database go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args(argv)
    args.messages = args.messages or (QUICK_MESSAGES if args.quick else DEFAULT_MESSAGES)
    args.requests = args.requests or (QUICK_REQUESTS if args.quick else DEFAULT_REQUESTS)

    def on_sigterm(*_: object) -> None:
        raise SystemExit(143)  # unwinds through the finally below

    signal.signal(signal.SIGTERM, on_sigterm)
    bench = AckBench(args)
    try:
        bench.start()
        bench.run()
        result = report(bench)
        write_json(result, args.json)
    finally:
        bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
