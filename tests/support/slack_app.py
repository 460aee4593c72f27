"""The real emailsync web app (Bolt + connect page) served over HTTP on loopback, against the fake Slack."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from bot.deps import SlackDeps, make_web_client
from bot.services import Services, build_services
from bot.settings import Settings
from bot.web import create_app, server_config
from flows import setup as setup_flow
from flows.setup import SetupState
from tests.support.dovecot import DovecotServer
from tests.support.fake_slack import FakeSlack
from tests.support.network import LOOPBACK_POLICY, LOOPBACK_SETTINGS
from tests.support.slack_driver import SlackDriver

SIGNING_SECRET = "test-signing-secret"
TEST_KEY = "yNk0zlX9u1z4Qy3QwXZC7bYV8m2dQdH7f1v6sY0kE2c="


@dataclass
class SlackHarness:
    """The app under test and the tools to drive it."""

    fake: FakeSlack
    driver: SlackDriver
    services: Services
    deps: SlackDeps
    base_url: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_app(tmp_path: Path, dovecot: DovecotServer, **settings: str | None) -> Iterator[SlackHarness]:
    """Start the fake Slack and the app (uvicorn in a thread); stop both afterwards.

    A setting given as None is left out (SLACK_BOT_TOKEN=None with SLACK_CLIENT_ID/SECRET: OAuth mode).
    """
    fake = FakeSlack()
    fake.start()
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "EMAILSYNC_SECRET_KEY": TEST_KEY,
        "EMAILSYNC_DATA_DIR": str(tmp_path / "data"),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": fake.api_url,
        "PUBLIC_BASE_URL": base_url,
        "PORT": str(port),
        "EMAILSYNC_IMAP_TIMEOUT": "10",
        **LOOPBACK_SETTINGS,
        **settings,
    }
    values = {name: value for name, value in values.items() if value is not None}
    services = build_services(Settings(**values))  # type: ignore[arg-type]
    deps = SlackDeps(
        services=services,
        client=make_web_client(services.settings),
        public_base_url=values.get("PUBLIC_BASE_URL") or base_url,  # as slack_deps_from does
        ssl_context=dovecot.ssl_context,
    )
    # The web process's own uvicorn settings (timeouts, header limits, redacted access log).
    server = uvicorn.Server(
        server_config(create_app(services, deps), services.settings, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.02)
    driver = SlackDriver(f"{base_url}/slack/events", SIGNING_SECRET, fake)
    try:
        yield SlackHarness(fake=fake, driver=driver, services=services, deps=deps, base_url=base_url)
    finally:
        driver.close()
        server.should_exit = True
        thread.join(timeout=10)
        services.db.dispose()
        fake.stop()


def connect_mailbox(harness: SlackHarness, mailbox: Any, *, user_id: str = "U0001") -> SetupState:
    """Start a setup for user_id and connect the test mailbox through the real flow (as the connect page does)."""
    _, token = setup_flow.start_setup(harness.services.db, team_id="T0001", user_id=user_id)
    form = setup_flow.ConnectForm(
        email=f"{mailbox.user}@example.net",
        password=mailbox.password,
        imap_host="127.0.0.1",
        imap_port=mailbox.server.imaps_port,
        imap_security="tls",
        username=mailbox.user,
    )
    return setup_flow.connect(
        harness.services.db,
        harness.services.secrets,
        token,
        form,
        timeout=10,
        ssl_context=mailbox.server.ssl_context,
        outbound=LOOPBACK_POLICY,
    )
