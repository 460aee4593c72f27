"""`serve`, `worker` and `sync` on one SQLite file: one sync per account at a time, no duplicate, no lock error."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.cli import cli_env, run_cli
from tests.support.mail import make_message

LEASE_LINE = re.compile(r"lease (taken|given back) account=(\d+) owner=(\S+) token=(\d+) at=([\d.]+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=env["EMAILSYNC_DATA_DIR"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_serve_worker_and_sync_together(tmp_path, dovecot):
    port = _free_port()
    env = cli_env(
        tmp_path,
        dovecot,
        PORT=str(port),
        EMAILSYNC_TICK_SECONDS="0.3",
        EMAILSYNC_SLICE_SECONDS="0.2",
        EMAILSYNC_POLL_SECONDS="5",
    )
    expected: dict[str, int] = {}
    base = dt.datetime.now() - dt.timedelta(days=20)
    for n in range(3):
        user = f"conc{n}_{int(time.time() * 1000) % 100000}"
        dovecot.add_user(user, "pw")
        count = 300 + 50 * n
        dovecot.seed_maildir(
            user, "INBOX", [(make_message(subject=f"m{i}"), base + dt.timedelta(minutes=i)) for i in range(count)]
        )
        result = run_cli(
            env,
            "account",
            "add",
            "--team",
            "T",
            "--user",
            f"U{n}",
            "--email",
            f"{user}@example.net",
            "--username",
            user,
            "--imap-host",
            "127.0.0.1",
            "--imap-port",
            str(dovecot.imaps_port),
            "--password-stdin",
            "--start",
            "1m",
            stdin="pw\n",
        )
        assert result.returncode == 0, result.stderr
        expected[result.stdout.strip()] = count

    logs = [tmp_path / name for name in ("serve.log", "worker.log", "sync.log")]
    serve = _start(env, logs[0], "serve")
    worker = _start(env, logs[1], "worker")
    sync = _start(env, logs[2], "--verbose", "sync")  # its lease lines are info: quiet by default
    try:
        assert sync.wait(timeout=120) == 0, logs[2].read_text()[-3000:]
        deadline = time.monotonic() + 60
        healthy = False
        while time.monotonic() < deadline and not healthy:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                    healthy = resp.status == 200 and json.loads(resp.read())["ok"]
            except OSError:
                time.sleep(0.3)
        assert healthy, logs[0].read_text()[-3000:]
        # The worker processes take leases too: during the sync, or at their next poll (EMAILSYNC_POLL_SECONDS).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            owner.startswith("worker")
            for _, _, owner, _, _ in LEASE_LINE.findall(logs[0].read_text() + logs[1].read_text())
        ):
            time.sleep(0.3)
        time.sleep(2)  # let the worker processes run a few more ticks side by side
    finally:
        for proc in (serve, worker):
            proc.terminate()
        for proc in (serve, worker):
            proc.wait(timeout=60)

    # serve stops its worker child when it is stopped itself (nothing outlives it).
    child = re.search(r"started worker process (\d+)", logs[0].read_text())
    assert child is not None
    proc = Path(f"/proc/{child.group(1)}")
    assert not proc.exists() or "zombie" in (proc / "status").read_text()
    text = "\n".join(p.read_text() for p in logs)
    assert "database is locked" not in text
    assert "Traceback" not in text, text[-5000:]
    for account_id, count in expected.items():
        rows = run_cli(env, "messages", "export", "--account", account_id).stdout.splitlines()
        subjects = [json.loads(r)["subject"] for r in rows]
        assert len(subjects) == count and len(set(subjects)) == count

    # Lease intervals per account, from every process's log, never overlap.
    intervals: dict[str, list[tuple[float, float]]] = {}
    open_at: dict[tuple[str, str, str], float] = {}
    owners = set()
    for kind, account, owner, token, at in LEASE_LINE.findall(text):
        owners.add(owner.split(":")[0])
        if kind == "taken":
            open_at[(account, owner, token)] = float(at)
        else:
            intervals.setdefault(account, []).append((open_at.pop((account, owner, token)), float(at)))
    assert {"sync", "worker"} <= owners, owners  # the test only means something if both really synced
    for spans in intervals.values():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end - 0.001
