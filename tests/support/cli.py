"""Running the real `emailsync` command line in a subprocess with a test environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.dovecot import DovecotServer
from tests.support.network import LOOPBACK_SETTINGS


def cli_env(tmp_path: Path, dovecot: DovecotServer | None = None, **extra: str) -> dict[str, str]:
    """Environment for a CLI run: its own SQLite file and data dir, Dovecot's CA trusted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMAILSYNC_", "SLACK_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}",
        EMAILSYNC_DATA_DIR=str(tmp_path / "data"),
        EMAILSYNC_SECRET_KEY="yNk0zlX9u1z4Qy3QwXZC7bYV8m2dQdH7f1v6sY0kE2c=",
        PYTHONUNBUFFERED="1",
        **LOOPBACK_SETTINGS,
    )
    if dovecot is not None:
        env["SSL_CERT_FILE"] = str(dovecot.cafile)
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `python -m bot ARGS` (from the data dir, so no stray .env is read) and capture its output."""
    workdir = Path(env["EMAILSYNC_DATA_DIR"])
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        timeout=timeout,
        cwd=workdir,
    )
