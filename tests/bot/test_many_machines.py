"""Many worker processes on one database (Procrastinate on PostgreSQL; local on SQLite): one sync per account.

Real `emailsync worker` subprocesses, real Dovecot, real PostgreSQL. Every process logs wall-clock
"lease taken/given back" marks (sync/engine.py) and the clock logs "tick owner= begun= ended=" marks;
the tests read them to check that no two runs of an account and no two ticks ever overlap.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from flows.doctor import procrastinate_checks
from models.clock import utcnow
from models.db import make_engine
from models.secrets import SecretBox
from tests.conftest import PG_ADMIN_URL, TEST_KEY
from tests.support.cli import cli_env, run_cli
from tests.support.cluster import (
    Cluster,
    mailbox_uids,
    make_accounts,
    request_sync_now_all,
    stored,
    synced_since,
    wait_for,
)
from tests.support.dovecot import DovecotServer
from tests.support.mail import make_message

ACCOUNTS = 30
# Short everything, so stalls, leases and takeovers happen in seconds.
SHORT = {
    "EMAILSYNC_TICK_SECONDS": "0.3",
    "EMAILSYNC_POLL_SECONDS": "5",
    "EMAILSYNC_SLICE_SECONDS": "2",
    "EMAILSYNC_LEASE_TTL": "6",
    "EMAILSYNC_STALL_SECONDS": "3",
    "EMAILSYNC_CLOCK_SECONDS": "0.5",
    "EMAILSYNC_IMAP_TIMEOUT": "15",
}
WAIT = 120.0  # generous: the machine is shared


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL database of this test only (empty: `emailsync db upgrade` builds it)."""
    name = f"procr_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _append_some(dovecot: DovecotServer, users: list[str], n: int) -> None:
    for user in random.sample(users, n):
        dovecot.append(user, "pw", "INBOX", make_message(subject=f"new {uuid.uuid4().hex[:6]}"))


def _assert_stored_equals_imap(db: Engine, dovecot: DovecotServer, accounts: dict[int, str]) -> None:
    have = stored(db)
    for account_id, user in accounts.items():
        expected = mailbox_uids(dovecot, user)
        count, distinct = have.get(account_id, (0, 0))
        assert count == expected, f"account {account_id}: {count} stored, {expected} in its INBOX"
        assert distinct == count, f"account {account_id}: {count - distinct} duplicates"


def _contend(db: Engine, dovecot: DovecotServer, accounts: dict[int, str], seconds: float) -> None:
    """Press "Sync now" on everything twice a second while new mail arrives."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        request_sync_now_all(db)
        _append_some(dovecot, list(accounts.values()), 3)
        time.sleep(0.5)


def _all_sync_again(db: Engine, cluster: Cluster, accounts: dict[int, str], what: str) -> None:
    mark = utcnow()
    request_sync_now_all(db)
    pressed = time.monotonic()

    def all_synced() -> bool:
        nonlocal pressed
        missing = set(accounts) - synced_since(db, mark)
        if missing and time.monotonic() - pressed > 10:  # failed on a starved machine: press again, as a person would
            request_sync_now_all(db, missing)
            pressed = time.monotonic()
        return not missing

    wait_for(all_synced, WAIT, f"every account to sync again ({what})", cluster.logs)


def _assert_no_overlap(cluster: Cluster) -> None:
    """No two runs of an account at once; a run that overlaps a later one must be one that was fenced out.

    A worker paused (SIGSTOP, or only starved on a loaded machine) past its lease finds the lease gone at
    its next commit and stops without writing ("lease lost"): its logged interval ends late, its writes did not.
    """
    fenced = cluster.fenced_out()
    overlaps = cluster.overlaps(allowed=lambda name, account: (name, account) in fenced)
    assert overlaps == [], overlaps
    print(f"{len(cluster.lease_intervals())} runs, {len(fenced)} fenced out")


def _wait_first_syncs(db: Engine, cluster: Cluster, accounts: dict[int, str], start: dt.datetime) -> None:
    _all_sync_again(db, cluster, accounts, "the first sync")


def _leases_of(db: Engine, pid: int) -> list[int]:
    with db.connect() as conn:
        rows = conn.execute(text("SELECT id FROM email_account WHERE lease_owner LIKE :o"), {"o": f"%:{pid}"}).all()
    return [int(r[0]) for r in rows]


def _in_transaction(db: Engine, pid: int) -> str | None:
    """The state of the process's app session that is inside a transaction (not the job queue's own), if any."""
    with db.connect() as conn:
        return conn.execute(
            text(
                "SELECT state FROM pg_stat_activity WHERE application_name = :name AND xact_start IS NOT NULL"
                " AND query NOT ILIKE '%procrastinate%' AND state IN ('active', 'idle in transaction') LIMIT 1"
            ),
            {"name": f"emailsync:{pid}"},
        ).scalar()


@pytest.mark.postgres
@pytest.mark.timeout(600)  # about two minutes on an idle machine; a shared, loaded one needs more
def test_procrastinate_workers_and_clocks(tmp_path, dovecot, pg_url):
    env = cli_env(tmp_path, dovecot, DATABASE_URL=pg_url, EMAILSYNC_BACKEND="procrastinate", **SHORT)
    upgraded = run_cli(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    db = make_engine(pg_url)
    accounts = make_accounts(db, SecretBox([TEST_KEY]), dovecot, ACCOUNTS)
    cluster = Cluster(env, tmp_path)
    began = time.monotonic()
    try:
        start = utcnow()
        w1 = cluster.start("worker1", "--concurrency", "3")
        w2 = cluster.start("worker2", "--concurrency", "3")
        clocks = [cluster.start("clock1", "--clock", "--concurrency", "1")]
        clocks.append(cluster.start("clock2", "--clock", "--concurrency", "1"))
        wait_for(
            lambda: synced_since(db, start) >= set(accounts), WAIT, "the first sync of every account", cluster.logs
        )

        print(f"{time.monotonic() - began:.1f} s")
        # 1. Contention: "Sync now" over and over, new mail arriving; no two runs of an account at once.
        _contend(db, dovecot, accounts, 6)
        _all_sync_again(db, cluster, accounts, "after contention")
        _assert_no_overlap(cluster)
        owners = {iv[5] for iv in cluster.lease_intervals()}
        assert {"worker1", "worker2"} <= owners, owners
        _assert_stored_equals_imap(db, dovecot, accounts)

        print(f"{time.monotonic() - began:.1f} s")
        # 2. SIGKILL of a worker in the middle of syncs: its jobs do not stay running, every account syncs again.
        request_sync_now_all(db)
        _append_some(dovecot, list(accounts.values()), 10)
        wait_for(lambda: bool(_leases_of(db, w1.proc.pid)), WAIT, "worker1 to hold a lease", cluster.logs)
        w1.proc.kill()
        w1.killed_at = time.time()
        w1.proc.wait()
        with db.connect() as conn:
            doing = [r[0] for r in conn.execute(text("SELECT id FROM procrastinate_jobs WHERE status = 'doing'"))]
        assert doing, "worker1 was killed while no job ran"

        def jobs_ended() -> bool:
            with db.connect() as conn:
                still = conn.execute(
                    text("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' AND id = ANY(:ids)"),
                    {"ids": doing},
                ).scalar()
            return still == 0

        wait_for(jobs_ended, WAIT, "the killed worker's jobs to be finished", cluster.logs)
        _all_sync_again(db, cluster, accounts, "after SIGKILL")
        _assert_stored_equals_imap(db, dovecot, accounts)
        _assert_no_overlap(cluster)
        assert "finished as failed" in "".join(c.text() for c in clocks)

        print(f"{time.monotonic() - began:.1f} s")
        # 3. SIGSTOP of a worker past the stall timeout, once between transactions (holding a lease, inside
        #    IMAP) and once inside a database transaction; then SIGCONT. The others carry on meanwhile.
        w3 = cluster.start("worker3", "--concurrency", "3")
        for inside_transaction in (False, True):
            frozen_at = _freeze(db, dovecot, accounts, w2.proc.pid, inside_transaction=inside_transaction)
            try:
                held = set(_leases_of(db, w2.proc.pid))
                request_sync_now_all(db)
                others = set(accounts) - held
                # Stall timeout (3 s) and lease TTL (6 s) pass; everything not held by the frozen worker syncs.
                wait_for(
                    lambda: synced_since(db, frozen_at) >= others,  # noqa: B023
                    WAIT,
                    "the other workers to carry on",
                    cluster.logs,
                )
                time.sleep(max(0.0, 8 - (utcnow() - frozen_at).total_seconds()))
            finally:
                os.kill(w2.proc.pid, signal.SIGCONT)
            _all_sync_again(db, cluster, accounts, f"after SIGCONT (inside a transaction: {inside_transaction})")
            _assert_stored_equals_imap(db, dovecot, accounts)
        _assert_no_overlap(cluster)
        assert w3.proc.poll() is None and w2.proc.poll() is None, cluster.logs()

        print(f"{time.monotonic() - began:.1f} s")
        # 4. The clock process killed: the other takes over; two ticks never run at once.
        holder = _doctor_clock(db)  # doctor names the process that holds the clock
        leader = next((c for c in clocks if f":{c.proc.pid} " in holder), None)
        assert leader is not None, holder
        standby = next(c for c in clocks if c is not leader)
        leader.proc.kill()
        leader.killed_at = time.time()
        leader.proc.wait()
        wait_for(
            lambda: any(t[1] > (leader.killed_at or 0) for t in _ticks_of(cluster, standby)),
            WAIT,
            "the standby clock to take over",
            cluster.logs,
        )
        wait_for(
            lambda: f":{standby.proc.pid} " in _doctor_clock(db), WAIT, "doctor to name the new clock", cluster.logs
        )
        # The clock's own connection cut (a database failover, a proxy restart): it stops ticking at once
        # and competes again; being the only --clock left, it wins again.
        elections = standby.text().count("clock: elected")
        with db.connect() as conn:
            cut = conn.execute(
                text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE :name"),
                {"name": f"emailsync-clock:%:{standby.proc.pid}"},
            ).scalar()
            conn.commit()
        assert cut == 1
        wait_for(
            lambda: standby.text().count("clock: elected") > elections, WAIT, "the clock elected again", cluster.logs
        )
        assert "stops ticking (lost the connection that holds the clock lock)" in standby.text()
        ticks = sorted(cluster.ticks(), key=lambda t: t[1])
        assert len({t[0] for t in ticks}) >= 2, ticks[-5:]
        for a, b in itertools.pairwise(ticks):
            assert b[1] >= a[2], f"ticks overlap: {a} and {b}"
        _all_sync_again(db, cluster, accounts, "after the clock moved")

        print(f"{time.monotonic() - began:.1f} s")
        # SIGTERM in the middle of syncs: every remaining process finishes its batch, commits and exits (20 s).
        request_sync_now_all(db)
        _append_some(dovecot, list(accounts.values()), 10)
        wait_for(lambda: bool(_leases_of(db, w3.proc.pid)), WAIT, "worker3 to hold a lease", cluster.logs)
        for w in cluster.workers:
            if w.proc.poll() is None:
                began = time.monotonic()
                assert w.stop() == 0, w.text()[-3000:]
                assert time.monotonic() - began < 20, f"{w.name} took over 20 s to stop"
        text_all = "".join(w.text() for w in cluster.workers)
        # (Tracebacks are expected: the session of the worker frozen inside a transaction was ended by the
        # server, and its slice crashed on waking. A job the clock finished meanwhile is not one of them.)
        assert "Task exception was never retrieved" not in text_all, cluster.logs()
    finally:
        cluster.kill_all()
        db.dispose()


def _doctor_clock(db: Engine) -> str:
    checks = {c["name"]: c for c in procrastinate_checks(db, stall_seconds=3)}
    return str(checks["clock"]["detail"]) + " "


def _ticks_of(cluster: Cluster, worker) -> list[tuple[str, float, float]]:
    return [t for t in cluster.ticks() if t[0].endswith(f":{worker.proc.pid}")]


def _freeze(
    db: Engine, dovecot: DovecotServer, accounts: dict[int, str], pid: int, *, inside_transaction: bool
) -> dt.datetime:
    """SIGSTOP the worker while it holds a lease (and, if asked, while its session is inside a transaction)."""
    deadline = time.monotonic() + WAIT
    if inside_transaction:
        # Big batches to commit make the worker's transactions long enough to be caught from outside.
        base = dt.datetime.now() - dt.timedelta(days=5)
        for user in random.sample(list(accounts.values()), 4):
            mail = [(make_message(subject=f"bulk {i}"), base + dt.timedelta(seconds=i)) for i in range(500)]
            dovecot.seed_maildir(user, "INBOX", mail)
    while time.monotonic() < deadline:
        request_sync_now_all(db)
        _append_some(dovecot, list(accounts.values()), 5)
        for _ in range(400):
            ready = _in_transaction(db, pid) if inside_transaction else _leases_of(db, pid)
            if ready:
                os.kill(pid, signal.SIGSTOP)
                at = utcnow()
                time.sleep(0.3)
                if not inside_transaction and _leases_of(db, pid):
                    return at
                if inside_transaction and _in_transaction(db, pid) == "idle in transaction":
                    return at
                os.kill(pid, signal.SIGCONT)  # it finished just before the stop: try again
            time.sleep(0.005)
    raise AssertionError("never caught the worker holding a lease / inside a transaction")


def test_two_local_workers_share_one_sqlite_file(tmp_path, dovecot):
    # No pauses here: a lease long enough that a starved slice on a loaded machine keeps it.
    env = cli_env(tmp_path, dovecot, **{**SHORT, "EMAILSYNC_LEASE_TTL": "60"})
    db = make_engine(env["DATABASE_URL"])
    from models.db import upgrade

    upgrade(db)
    accounts = make_accounts(db, SecretBox([TEST_KEY]), dovecot, 10)
    cluster = Cluster(env, tmp_path)
    try:
        start = utcnow()
        cluster.start("local1", "--concurrency", "2")
        cluster.start("local2", "--concurrency", "2", "--clock")  # --clock: the local backend always ticks
        wait_for(
            lambda: synced_since(db, start) >= set(accounts), WAIT, "the first sync of every account", cluster.logs
        )
        _contend(db, dovecot, accounts, 5)
        _all_sync_again(db, cluster, accounts, "after contention")
        assert cluster.overlaps() == [], cluster.overlaps()
        assert {iv[5] for iv in cluster.lease_intervals()} == {"local1", "local2"}
        _assert_stored_equals_imap(db, dovecot, accounts)
        # SIGKILL one in the middle of syncs: the other syncs everything again, nothing lost or doubled.
        victim = cluster.workers[0]
        request_sync_now_all(db)
        wait_for(lambda: bool(_leases_of(db, victim.proc.pid)), WAIT, "local1 to hold a lease", cluster.logs)
        victim.proc.kill()
        victim.killed_at = time.time()
        victim.proc.wait()
        _append_some(dovecot, list(accounts.values()), 5)
        _all_sync_again(db, cluster, accounts, "after SIGKILL")
        _assert_stored_equals_imap(db, dovecot, accounts)
        assert cluster.overlaps() == [], cluster.overlaps()
        assert cluster.workers[1].stop() == 0
    finally:
        cluster.kill_all()
        db.dispose()


def test_procrastinate_backend_is_refused_on_sqlite(tmp_path):
    env = cli_env(tmp_path, EMAILSYNC_BACKEND="procrastinate")
    result = run_cli(env, "worker")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "emailsync: EMAILSYNC_BACKEND: procrastinate needs PostgreSQL; set DATABASE_URL to a postgresql:// URL."
    ]
