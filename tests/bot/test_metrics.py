"""/metrics from real processes: `emailsync worker --metrics-port` (and its /healthz), and `emailsync serve`,
whose page includes its worker child's sync metrics; the counters move after a real sync against Dovecot."""

from __future__ import annotations

import datetime as dt
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import cli_env, run_cli
from tests.support.fake_slack import FakeSlack
from tests.support.mail import make_message

MESSAGES = 7


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        cwd=env["EMAILSYNC_DATA_DIR"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def _scrape_until(url: str, ready: Callable[[dict], bool], log: Path, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    samples: dict = {}
    while time.monotonic() < deadline:
        try:
            status, text = _get(url)
            if status == 200:
                samples = _samples(text)
                if ready(samples):
                    return samples
        except OSError:
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"metrics at {url} never got there; last: {samples}\n{log.read_text()[-3000:]}")


def _account_with_mail(tmp_path: Path, dovecot, **extra: str) -> tuple[dict[str, str], str]:
    env = cli_env(tmp_path, dovecot, EMAILSYNC_TICK_SECONDS="0.3", EMAILSYNC_POLL_SECONDS="5", **extra)
    user = f"metrics_{int(time.time() * 1000) % 1000000}"
    dovecot.add_user(user, "pw")
    old = dt.datetime.now() - dt.timedelta(days=3)
    dovecot.seed_maildir(
        user, "INBOX", [(make_message(subject=f"m{i}"), old + dt.timedelta(minutes=i)) for i in range(MESSAGES)]
    )
    added = run_cli(
        env,
        *("account", "add", "--team", "T0001", "--user", "U0001", "--email", f"{user}@example.net"),
        *("--username", user, "--imap-host", "127.0.0.1", "--imap-port", str(dovecot.imaps_port)),
        *("--password-stdin", "--start", "1m"),
        stdin="pw\n",
    )
    assert added.returncode == 0, added.stderr
    return env, added.stdout.strip()


def test_worker_serves_metrics_and_healthz_and_the_counters_move(tmp_path, dovecot):
    env, _account = _account_with_mail(tmp_path, dovecot, HOST="127.0.0.1")
    port = _free_port()
    log = tmp_path / "worker.log"
    worker = _start(env, log, "worker", "--metrics-port", str(port))
    try:
        url = f"http://127.0.0.1:{port}"
        samples = _scrape_until(
            f"{url}/metrics",
            lambda s: (
                _value(s, "emailsync_messages_stored_total") >= MESSAGES
                and _value(s, "emailsync_sync_slices_total", kind="past", outcome="done") >= 1
            ),
            log,
        )
        assert _value(samples, "emailsync_sync_slice_seconds_count", kind="past", outcome="done") >= 1
        assert _value(samples, "emailsync_sync_errors_total") == 0
        # Later polls find nothing new: they are counted as incremental slices, and nothing more is stored.
        samples = _scrape_until(
            f"{url}/metrics", lambda s: _value(s, "emailsync_sync_slices_total", kind="incremental") >= 1, log
        )
        assert _value(samples, "emailsync_messages_stored_total") == MESSAGES
        assert ("emailsync_queue_depth", frozenset()) in samples and ("emailsync_accounts_due", frozenset()) in samples
        status, body = _get(f"{url}/healthz")
        assert status == 200 and json.loads(body)["ok"] is True and json.loads(body)["database"] == "up"
        assert _get(f"{url}/other")[0] == 404
    finally:
        code = _stop(worker)
    assert code == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_a_taken_metrics_port_is_refused_with_one_clear_line(tmp_path):
    env = cli_env(tmp_path, HOST="127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli(env, "worker", "--metrics-port", str(taken.getsockname()[1]), timeout=60)
    assert result.returncode == 2
    assert "cannot serve metrics on 127.0.0.1:" in result.stderr and "choose another --metrics-port" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_metrics_include_the_worker_childs_sync_and_slack_calls(tmp_path, dovecot):
    with FakeSlack() as fake:
        port = _free_port()
        env, _account = _account_with_mail(
            tmp_path,
            dovecot,
            HOST="127.0.0.1",
            PORT=str(port),
            SLACK_BOT_TOKEN="xoxb-test",
            SLACK_SIGNING_SECRET="test-signing-secret",
            SLACK_API_URL=fake.api_url,
            EMAILSYNC_HOME_PUBLISH_SECONDS="0",
        )
        log = tmp_path / "serve.log"
        serve = _start(env, log, "serve")
        try:
            samples = _scrape_until(
                f"http://127.0.0.1:{port}/metrics",
                lambda s: (
                    _value(s, "emailsync_messages_stored_total", process="worker") >= MESSAGES
                    and _value(
                        s, "emailsync_slack_calls_total", process="worker", method="chat.postMessage", status="ok"
                    )
                    >= 2
                ),
                log,
            )
            # The worker child's slices, and the Slack calls its notifier made (progress, summary, Home).
            assert _value(samples, "emailsync_sync_slices_total", process="worker", kind="past", outcome="done") >= 1
            assert _value(samples, "emailsync_worker_metrics_up") == 1
            fake.wait_for("views.publish", predicate=lambda c: c.ok)
            samples = _scrape_until(
                f"http://127.0.0.1:{port}/metrics",
                lambda s: _value(s, "emailsync_slack_calls_total", process="worker", method="views.publish") >= 1,
                log,
            )
            # serve's own samples are there too, told apart by their process label.
            assert _value(samples, "emailsync_messages_stored_total", process="serve") == 0
            sent = {c.method for c in fake.calls if c.ok}
            assert {"chat.postMessage", "views.publish"} <= sent
        finally:
            code = _stop(serve)
    text = log.read_text()
    assert code in (0, -signal.SIGTERM), text[-3000:]  # uvicorn re-raises SIGTERM once it has shut down
    assert "Traceback" not in text, text[-3000:]


def test_serves_own_metrics_when_the_worker_child_does_not_answer():
    from bot.metrics_server import render_merged

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/metrics"
        samples = _samples(render_merged(url).decode())
    assert samples[("emailsync_worker_metrics_up", frozenset())] == 0
    assert ("emailsync_queue_depth", frozenset({("process", "serve")})) in samples
