"""`emailsync doctor` as a process: the Slack mode and token (fake Slack), key, backend, PUBLIC_BASE_URL, accounts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.fake_slack import FakeSlack


class _Healthz(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/healthz" else 404)  # serve answers 503 while its clock is stale
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def public_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()


def _checks(result) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_fresh_install_reports_every_setting(tmp_path):
    env = cli_env(tmp_path)
    env.pop("EMAILSYNC_SECRET_KEY")
    result = run_cli(env, "doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = _checks(result)
    assert checks["database"]["ok"] and "sqlite" in checks["database"]["detail"]
    assert checks["schema"]["ok"] and "not created yet" in checks["schema"]["detail"]  # doctor changes nothing
    assert run_cli(env, "account", "list").returncode == 0  # creates the database
    checks = _checks(run_cli(env, "doctor", "--json"))
    assert checks["schema"]["detail"] == "up to date"
    assert str(Path(env["EMAILSYNC_DATA_DIR"]).resolve() / "secret.key") in checks["secret key"]["detail"]
    assert checks["backend"]["detail"].startswith("local")
    assert checks["Slack"]["detail"].startswith("off:") and checks["Slack"]["ok"]
    assert "not set" in checks["public URL"]["detail"]
    assert checks["accounts"]["detail"] == "none connected yet"


def test_slack_socket_mode_token_and_public_url(tmp_path, fake_slack, public_site):
    env = cli_env(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-doctor",
        SLACK_SIGNING_SECRET="secret",
        SLACK_APP_TOKEN="xapp-1-doctor",
        SLACK_API_URL=fake_slack.api_url,
        PUBLIC_BASE_URL=public_site,
    )
    assert run_cli(env, "account", "list").returncode == 0  # creates the database
    result = run_cli(env, "doctor", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = _checks(result)
    assert checks["Slack"]["detail"].startswith("Socket Mode (one workspace")
    assert checks["Slack bot token"]["detail"] == "token of bot @emailsync (UBOT) in workspace Fake Team (T0001)"
    assert checks["Slack app token"]["ok"]
    assert checks["public URL"]["ok"] and "answers (HTTP 503)" in checks["public URL"]["detail"]
    assert "EMAILSYNC_SECRET_KEY" in checks["secret key"]["detail"]
    assert "xoxb-doctor" not in result.stdout and "xapp-1-doctor" not in result.stdout


def test_a_revoked_token_and_an_unreachable_public_url_fail(tmp_path, fake_slack):
    fake_slack.revoked_tokens.add("xoxb-gone")
    env = cli_env(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-gone",
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=fake_slack.api_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{_closed_port()}",
    )
    result = run_cli(env, "doctor")
    assert result.returncode == 1
    assert "ok   Slack: HTTP (one workspace" in result.stdout
    assert "FAIL Slack bot token: Slack rejected SLACK_BOT_TOKEN (token_revoked)" in result.stdout
    assert "FAIL public URL: " in result.stdout and "does not answer from this host" in result.stdout


def test_oauth_mode_and_a_half_configured_slack(tmp_path):
    oauth = cli_env(tmp_path, SLACK_CLIENT_ID="1.2", SLACK_CLIENT_SECRET="s", SLACK_SIGNING_SECRET="x")
    assert _checks(run_cli(oauth, "doctor", "--json"))["Slack"]["detail"].startswith("OAuth (HTTP")
    half = cli_env(tmp_path, SLACK_BOT_TOKEN="xoxb-only")  # no signing secret: a mistake, not a choice
    result = run_cli(half, "doctor", "--json")
    assert result.returncode == 1 and not _checks(result)["Slack"]["ok"]
