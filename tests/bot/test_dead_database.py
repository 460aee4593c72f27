"""`serve` on a database that refuses connections: /healthz says 503, the log says it once, no traceback per tick."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.cli import cli_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_serve_on_a_dead_database_logs_the_failure_once(tmp_path):
    port = _free_port()
    dead = f"postgresql://postgres@127.0.0.1:{_free_port()}/emailsync"  # nothing listens there: refused
    env = cli_env(tmp_path, DATABASE_URL=dead, PORT=str(port), EMAILSYNC_TICK_SECONDS="0.2")
    log = tmp_path / "serve.log"
    serve = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=tmp_path,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "scheduler tick failed" not in log.read_text():
            time.sleep(0.3)
        assert "scheduler tick failed" in log.read_text(), log.read_text()[-3000:]
        assert _healthz(port) == 503
        time.sleep(4)  # twenty more ticks at 0.2 s, every one of them failing
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    failures = [line for line in text.splitlines() if "scheduler tick failed" in line]
    assert len(failures) == 1 and "refused the connection" in failures[0], text
    assert "still failing" not in text  # the first reminder comes after a minute
    assert len(text.splitlines()) < 30, text
