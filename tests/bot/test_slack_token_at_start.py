"""`serve` and `worker` ask Slack (auth.test, the fake Slack here) whose SLACK_BOT_TOKEN it is before starting."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import cli_env, run_cli
from tests.support.fake_slack import FakeSlack

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()


def _env(tmp_path: Path, fake: FakeSlack, token: str) -> dict[str, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return cli_env(
        tmp_path,
        SLACK_BOT_TOKEN=token,
        SLACK_SIGNING_SECRET="signing-secret",
        SLACK_API_URL=fake.api_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        PORT=str(port),
    )


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(("token", "error"), [("xoxb-revoked", "token_revoked"), ("made-up", "invalid_auth")])
def test_a_rejected_token_stops_with_one_line(tmp_path, fake_slack, command, token, error):
    fake_slack.revoked_tokens.add("xoxb-revoked")
    result = run_cli(_env(tmp_path, fake_slack, token), command, timeout=60)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if "Slack" in line]
    assert len(lines) == 1 and f"Slack rejected SLACK_BOT_TOKEN ({error})" in lines[0], result.stderr
    assert token not in result.stderr  # the token itself is never printed
    assert [c.method for c in fake_slack.calls if c.method == "auth.test"] == ["auth.test"]


def test_serve_names_the_workspace_and_bot_without_bolts_warning(tmp_path, fake_slack):
    env = _env(tmp_path, fake_slack, "xoxb-good-token")
    log = tmp_path / "serve.log"
    Path(env["EMAILSYNC_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    serve = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=env["EMAILSYNC_DATA_DIR"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        # serve checks, then its worker child checks too: wait for both lines
        while time.monotonic() < deadline and log.read_text().count("Slack: token of bot") < 2:
            assert serve.poll() is None, log.read_text()
            time.sleep(0.3)
        time.sleep(1)
    finally:
        serve.terminate()
        serve.wait(timeout=60)
    text = log.read_text()
    assert text.count("Slack: token of bot @emailsync (UBOT) in workspace Fake Team (T0001)") == 2, text
    assert "token will be unused" not in text, text
    assert "xoxb-good-token" not in text
