"""Socket Mode, as a person tries the app on a laptop: `emailsync serve` with SLACK_APP_TOKEN, no public URL.

The real `serve` runs as a subprocess against the fake Slack; a local websocket server plays Slack's side
of Socket Mode, sends the setup flow's slash command, interactions and events as envelopes and checks
each ack by its envelope id. The connect page is still reached over HTTP, in Chromium.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from slack_bolt import App

from bot import ids
from bot.socket_mode import SocketModeError, start_socket_mode
from tests.bot.test_setup_end_to_end import fill_connect_page, has_block, link_of, option_values, text_of
from tests.support.cli import cli_env
from tests.support.dovecot import DovecotServer
from tests.support.fake_slack import FakeSlack
from tests.support.mail import make_message
from tests.support.slack_app import SIGNING_SECRET, _free_port
from tests.support.socket_mode import APP_TOKEN, FakeSocketMode, SocketModeDriver

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServeProcess:
    """`emailsync serve` in a subprocess, its HTTP address and its log."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _serve_env(tmp_path: Path, fake: FakeSlack, dovecot: DovecotServer | None, port: int, **extra: str) -> dict:
    return cli_env(
        tmp_path,
        dovecot,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=fake.api_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        HOST="127.0.0.1",
        PORT=str(port),
        EMAILSYNC_TICK_SECONDS="0.5",
        EMAILSYNC_IMAP_TIMEOUT="10",
        PYTHONPATH=str(ROOT),
        **extra,
    )


def _start_serve(env: dict, log: Path) -> subprocess.Popen[bytes]:
    workdir = Path(env["EMAILSYNC_DATA_DIR"])
    workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"], env=env, cwd=workdir, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()  # serve stops its worker child on SIGTERM
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def socket_serve(tmp_path, dovecot) -> Iterator[tuple[ServeProcess, FakeSlack, FakeSocketMode]]:
    """The real `emailsync serve` in Socket Mode, the fake Slack and the fake Socket Mode server."""
    with FakeSlack() as fake, FakeSocketMode(fake) as socket_mode:
        port = _free_port()
        log = tmp_path / "serve.log"
        process = _start_serve(_serve_env(tmp_path, fake, dovecot, port, SLACK_APP_TOKEN=APP_TOKEN), log)
        serve = ServeProcess(process, f"http://127.0.0.1:{port}", log)
        try:
            deadline = time.monotonic() + 90  # a loaded machine: imports, migrations, the socket
            while not socket_mode.connected:
                assert process.poll() is None, f"serve exited with {process.returncode}:\n{serve.output()[-3000:]}"
                assert time.monotonic() < deadline, f"no Socket Mode connection:\n{serve.output()[-3000:]}"
                time.sleep(0.1)
            yield serve, fake, socket_mode
        finally:
            _stop(process)
        assert not fake.internal_errors, fake.internal_errors


def test_a_new_user_sets_up_email_sync_over_socket_mode(socket_serve, mailbox, smtp, page):
    serve, fake, socket_mode = socket_serve
    driver = SocketModeDriver(socket_mode)
    mailbox.create("Projects")
    mailbox.append("INBOX", make_message(subject="hello over the socket"))
    mailbox.append("Projects", make_message(subject="a project"))
    smtp.users[mailbox.user] = mailbox.password
    # One apps.connections.open with the app-level token: the bot token never opens the socket.
    assert [c.token for c in fake.calls_to("apps.connections.open")] == [APP_TOKEN]

    # The slash command: acked (an empty ack) and the modal opens with the envelope's trigger id.
    assert driver.slash_command("").status_code == 200
    assert driver.last_ack is not None and driver.last_ack.payload is None
    opened = fake.wait_for("views.open", timeout=30)[0]
    assert opened.ok, opened.summary()
    view_id = opened.response["view"]["id"]
    assert "Step 1 of 4" in text_of(opened.response["view"])

    # The connect page is HTTP even in Socket Mode: the person's browser reaches serve on localhost.
    assert link_of(opened.response["view"]).startswith(serve.base_url + "/connect/")
    fill_connect_page(page, link_of(opened.response["view"]), mailbox, smtp.port, mailbox.password)
    assert "is connected" in page.inner_text("#done")
    fake.wait_for("views.update", predicate=lambda c: "Step 2 of 4" in text_of(c.args["view"]), timeout=30)

    # Interactions: a view submission answered in its ack (response_action update)...
    response = driver.view_submission(
        view_id, {ids.B_TRACKING: {ids.A_TRACKING: ["track_opens"]}, ids.B_VISIBILITY: {ids.A_VISIBILITY: "private"}}
    )
    assert response.json()["response_action"] == "update"
    assert "Step 3 of 4" in text_of(fake.view(view_id))
    # ...and a block action, acked empty, its work done after the ack.
    driver.block_action(ids.A_SYNC_MODE, view=view_id, selected_option="labels")
    assert driver.last_ack is not None and driver.last_ack.payload is None
    fake.wait_for("views.update", predicate=lambda c: has_block(c.args["view"], ids.B_FOLDERS), timeout=30)
    chosen = option_values(fake.view(view_id), ids.B_FOLDERS, ["INBOX"])
    driver.view_submission(
        view_id, {ids.B_SYNC_MODE: {ids.A_SYNC_MODE: "labels"}, ids.B_FOLDERS: {ids.A_FOLDERS: chosen}}
    )
    assert "Step 4 of 4" in text_of(fake.view(view_id))
    response = driver.view_submission(view_id, {ids.B_START: {ids.A_START: "3m"}, ids.B_SCOPE: {ids.A_SCOPE: "all"}})
    assert response.json() == {"response_action": "clear"}
    fake.wait_for("chat.postMessage", predicate=lambda c: "Email sync is set up" in c.args.get("text", ""), timeout=30)

    # The worker serve started runs the first sync (INBOX only) and reports it.
    fake.wait_for("chat.postMessage", predicate=lambda c: "is done in" in c.args.get("text", ""), timeout=120)

    # An event: opening the Home tab publishes it; the events_api ack carries no payload.
    publishes = len(fake.calls_to("views.publish"))
    driver.app_home_opened("U0001")
    assert driver.last_ack is not None and driver.last_ack.payload is None
    fake.wait_for("views.publish", count=publishes + 1, timeout=30)
    assert "active" in json.dumps(fake.home_tabs["U0001"])

    # Every envelope was acked once, by its id, and nothing else came back.
    assert set(socket_mode.acks) == set(socket_mode.sent) and len(socket_mode.sent) == 6
    assert socket_mode.errors == []
    assert socket_mode.connections_opened == 1
    # Socket Mode needs no signature, and nothing was ever POSTed to /slack/events.
    assert "POST /slack/events" not in serve.output()
    assert APP_TOKEN not in serve.output() and "ticket=" not in serve.output()  # secrets stay out of the log


@pytest.mark.parametrize(
    ("token", "error", "said"),
    [
        ("xapp-1-A0001-1-revokedorwrong", "invalid_auth", "Slack rejected SLACK_APP_TOKEN (invalid_auth)"),
        ("xoxb-a-bot-token-by-mistake", "not_allowed_token_type", "SLACK_APP_TOKEN is not an app-level token"),
    ],
)
def test_a_bad_app_token_stops_serve_with_one_clear_line(tmp_path, token, error, said):
    with FakeSlack() as fake, FakeSocketMode(fake):
        port = _free_port()
        log = tmp_path / "serve.log"
        process = _start_serve(_serve_env(tmp_path, fake, None, port, SLACK_APP_TOKEN=token), log)
        try:
            code = process.wait(timeout=120)
        finally:
            _stop(process)
    output = log.read_text()
    assert code == 1, output
    lines = [line for line in output.splitlines() if "SLACK_APP_TOKEN" in line]
    assert len(lines) == 1 and lines[0].startswith("emailsync: ") and said in lines[0], output
    assert "App-Level Tokens" in lines[0]
    assert "Traceback" not in output and "Failed to retrieve WSS URL" not in output, output
    assert token not in output  # never the secret itself
    assert "started worker process" not in output  # it stops before starting anything
    assert [c.error for c in fake.calls_to("apps.connections.open")] == [error]


def _bolt(fake_api_url: str) -> App:
    from slack_sdk import WebClient

    return App(
        token="xoxb-test",
        signing_secret=SIGNING_SECRET,
        client=WebClient(token="xoxb-test", base_url=fake_api_url),
        token_verification_enabled=False,
    )


def test_socket_mode_connects_and_closes_in_process():
    with FakeSlack() as fake, FakeSocketMode(fake) as socket_mode:
        handler = start_socket_mode(_bolt(fake.api_url), APP_TOKEN)
        try:
            socket_mode.wait_connected(30)
        finally:
            handler.close()
        assert socket_mode.errors == []


def test_an_unreachable_slack_is_one_line_naming_the_address():
    port = _free_port()  # nothing listens there
    with pytest.raises(SocketModeError) as caught:
        start_socket_mode(_bolt(f"http://127.0.0.1:{port}/api/"), APP_TOKEN)
    message = str(caught.value)
    assert f"could not reach Slack at http://127.0.0.1:{port}/api/" in message and "\n" not in message
    assert APP_TOKEN not in message


def test_a_websocket_that_does_not_open_is_one_line():
    with FakeSlack() as fake:
        fake.app_tokens.add(APP_TOKEN)
        dead = _free_port()
        fake.socket_mode_url = lambda: f"ws://127.0.0.1:{dead}/link/?ticket=x"
        with pytest.raises(SocketModeError) as caught:
            start_socket_mode(_bolt(fake.api_url), APP_TOKEN)
    assert f"the websocket to 127.0.0.1:{dead} did not open" in str(caught.value) and "\n" not in str(caught.value)


def test_the_fake_answers_apps_connections_open_only_for_its_app_token():
    with FakeSlack() as fake, FakeSocketMode(fake):
        http = httpx.Client(base_url=fake.api_url)
        ok = http.post("apps.connections.open", headers={"Authorization": f"Bearer {APP_TOKEN}"}).json()
        assert ok["ok"] and ok["url"].startswith("ws://127.0.0.1:")
        wrong = http.post("apps.connections.open", headers={"Authorization": "Bearer xapp-1-other"}).json()
        assert wrong == {"ok": False, "error": "invalid_auth"}
        bot = http.post("apps.connections.open", headers={"Authorization": "Bearer xoxb-test"}).json()
        assert bot == {"ok": False, "error": "not_allowed_token_type"}
        elsewhere = http.post("auth.test", headers={"Authorization": f"Bearer {APP_TOKEN}"}).json()
        assert elsewhere == {"ok": False, "error": "not_allowed_token_type"}
