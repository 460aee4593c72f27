"""One sync slice, or one connection test, in a child process that reports its outcome, time and peak memory.

The test process has run other tests and its peak RSS says nothing; a fresh child does. The child reads
VmHWM (peak resident memory) from /proc/self/status after its imports and set-up, and again at the end,
so ``grown_kb`` is what the slice or the connection test itself added to the peak.

    python -m tests.support.sync_child '{"kind": "slice", ...}'   # prints one JSON line

``run_child(..., code=DIR)`` runs the same child against another checkout of the app (an export of main, to
measure the code before a change): this file is copied next to nothing else and run with DIR on the path.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEST_KEY = "yNk0zlX9u1z4Qy3QwXZC7bYV8m2dQdH7f1v6sY0kE2c="  # the key of the `secrets` fixture (tests/conftest.py)


def run_child(spec: dict[str, Any], *, timeout: float, code: Path | None = None) -> dict[str, Any]:
    """Run the child on ``spec``; its JSON result plus ``exit`` (None when it had to be killed at ``timeout``).

    spec: ``kind`` ("slice" or "connect"), ``cafile``; for a slice ``db`` (URL) and ``account_id``; for a
    connection test ``host``, ``port`` and ``deadline_seconds``; optional ``config`` (EngineConfig fields;
    those the code does not know are left out). ``code``: another checkout of the app to run instead.
    """
    with tempfile.TemporaryDirectory(prefix="sync-child-") as tmp:
        if code is None:
            argv = [sys.executable, "-m", "tests.support.sync_child", json.dumps(spec)]
            root = REPO
        else:
            script = shutil.copy(__file__, Path(tmp) / "sync_child.py")
            argv = [sys.executable, str(script), json.dumps(spec)]
            root = Path(code)
        proc = subprocess.Popen(
            argv,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        start = time.monotonic()
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            peak = _vm_kb("VmHWM", proc.pid)  # its peak so far, read before it is killed
            proc.kill()
            out, err = proc.communicate()
            return {"exit": None, "wall_s": time.monotonic() - start, "peak_kb": peak, "stderr": err[-3000:]}
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return {**json.loads(line), "exit": proc.returncode, "stderr": err[-3000:]}
    return {"exit": proc.returncode, "wall_s": time.monotonic() - start, "stderr": err[-3000:]}


def _vm_kb(field: str, pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _context(cafile: str) -> Callable[[], ssl.SSLContext]:
    def factory() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=cafile)

    return factory


def _slice(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    from models.db import make_engine
    from models.secrets import SecretBox
    from sync.engine import EngineConfig, EngineDeps, sync_account
    from sync.notifier import LoggingNotifier
    from tests.support.network import LOOPBACK_POLICY

    known = {f.name for f in dataclasses.fields(EngineConfig)}
    tunables = {k: v for k, v in spec.get("config", {}).items() if k in known}
    config = EngineConfig(ssl_context=_context(spec["cafile"]), outbound=LOOPBACK_POLICY, **tunables)
    deps = EngineDeps(
        db=make_engine(spec["db"]),
        secrets=SecretBox([TEST_KEY]),
        notifier=LoggingNotifier(),
        config=config,
        owner=f"child:{os.getpid()}",
    )
    with deps.db.connect():
        pass  # open the pool now: its memory is set-up, not the slice's

    def run() -> dict[str, Any]:
        return {"outcome": sync_account(deps, spec["account_id"]).value}

    return run


def _connect(spec: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    from flows.accounts import check_connection
    from sync.errors import SyncError
    from sync.imap_session import ImapLogin
    from tests.support.network import LOOPBACK_POLICY

    login = ImapLogin(spec["host"], spec["port"], "tls", "user", "password")

    def run() -> dict[str, Any]:
        try:
            folders = check_connection(
                login,
                None,
                timeout=spec.get("config", {}).get("timeout", 30.0),
                ssl_context=_context(spec["cafile"]),
                outbound=LOOPBACK_POLICY,
                deadline_seconds=spec["deadline_seconds"],
            )
        except SyncError as exc:
            return {"outcome": "failed", "code": exc.code, "error": str(exc)}
        return {"outcome": "ok", "folders": len(folders), "longest_name": max(len(f.name) for f in folders)}

    return run


def main() -> None:
    """Set up, measure, run once, print the result as one JSON line."""
    spec = json.loads(sys.argv[1])
    run = {"slice": _slice, "connect": _connect}[spec["kind"]](spec)
    before = _vm_kb("VmHWM")
    start = time.monotonic()
    result = run()
    wall = time.monotonic() - start
    peak = _vm_kb("VmHWM")
    print(json.dumps({**result, "wall_s": wall, "peak_kb": peak, "grown_kb": peak - before}), flush=True)


if __name__ == "__main__":
    main()
