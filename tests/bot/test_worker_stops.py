"""`emailsync worker` stops within seconds on SIGTERM, even while a slice is stuck on a dripping server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.cli import cli_env, run_cli
from tests.support.hostile_imap import HostileImapServer, Script


def test_sigterm_does_not_wait_for_a_stuck_server(tmp_path):
    with HostileImapServer(workdir=tmp_path / "tls") as server:
        env = cli_env(tmp_path, SSL_CERT_FILE=str(server.cafile), EMAILSYNC_TICK_SECONDS="0.3")
        added = run_cli(
            env,
            *("account", "add", "--team", "T", "--user", "U", "--email", "someone@example.net"),
            *("--imap-host", server.host, "--imap-port", str(server.port), "--password-stdin", "--start", "1y"),
            stdin="pw\n",
        )
        assert added.returncode == 0, added.stderr
        account = added.stdout.strip()
        # The first header FETCH is answered one byte every 0.5 s, forever: no read timeout ever trips,
        # and the slice's deadline (EMAILSYNC_SLICE_SECONDS + 60 s) is far away.
        server.script = Script(behaviour="drip", drip_at="fetch", drip_interval=0.5)
        log = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker"],
            env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
            cwd=env["EMAILSYNC_DATA_DIR"],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            assert server.stats.hostile_started.wait(60), log.read_text()[-3000:]
            time.sleep(1)  # a few drips into the answer
            worker.send_signal(signal.SIGTERM)
            start = time.monotonic()
            code = worker.wait(timeout=30)
            took = time.monotonic() - start
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    text = log.read_text()
    assert code == 0, text[-3000:]
    assert took < 10, f"the worker took {took:.1f} s to stop"
    assert f"account {account}: slice stopped by shutdown" in text
    assert "Traceback" not in text, text[-3000:]
    # Stopping is not the server's fault: no failure is recorded, and the next worker continues at once.
    rows = {r["id"]: r for r in json.loads(run_cli(env, "account", "list", "--json").stdout)}
    row = rows[int(account)]
    assert row["state"] == "syncing", row
    assert not row.get("last_error"), row


def test_the_slice_deadline_defaults_to_the_slice_budget_plus_a_minute(tmp_path, monkeypatch):
    from bot.settings import load_settings

    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.delenv("EMAILSYNC_SLICE_DEADLINE", raising=False)
    monkeypatch.setenv("EMAILSYNC_SLICE_SECONDS", "100")
    assert load_settings().slice_deadline_seconds == 160
    monkeypatch.setenv("EMAILSYNC_SLICE_DEADLINE", "30")
    assert load_settings().slice_deadline_seconds == 30
