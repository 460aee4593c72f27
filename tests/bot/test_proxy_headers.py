"""Behind a reverse proxy: X-Forwarded-For counts only from the peers in FORWARDED_ALLOW_IPS; a typo stops start-up."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn

from bot.services import build_services
from bot.settings import ConfigError, Settings, load_settings
from bot.web import create_app, server_config

TEST_KEY = "yNk0zlX9u1z4Qy3QwXZC7bYV8m2dQdH7f1v6sY0kE2c="
CLIENT_BEHIND_PROXY = "203.0.113.7"  # TEST-NET-3: the address a proxy would say the browser has


class Clients(logging.Handler):
    """Collects the client address of each access log line (uvicorn's first argument)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and record.args:
            self.seen.append(str(record.args[0]))


@contextmanager
def web_process(tmp_path: Path, **settings: str) -> Iterator[str]:
    """The web app with its own uvicorn settings (server_config), on loopback; yields its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    values = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "EMAILSYNC_SECRET_KEY": TEST_KEY,
        "EMAILSYNC_DATA_DIR": str(tmp_path / "data"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        **settings,
    }
    services = build_services(Settings(**values))  # type: ignore[arg-type]
    server = uvicorn.Server(server_config(create_app(services), services.settings, log_level="info"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the web app did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        services.db.dispose()


def client_seen(tmp_path: Path, **settings: str) -> str:
    """The client address the web process logs for a request a proxy on 127.0.0.1 forwards."""
    clients = Clients()
    access = logging.getLogger("uvicorn.access")
    try:
        with web_process(tmp_path, **settings) as base:
            access.addHandler(clients)  # now: uvicorn's Config replaced the logger's handlers
            headers = {"X-Forwarded-For": CLIENT_BEHIND_PROXY, "X-Forwarded-Proto": "https"}
            httpx.get(f"{base}/healthz", headers=headers, timeout=10)
            deadline = time.monotonic() + 10
            while not clients.seen:  # the access line is written right after the response
                assert time.monotonic() < deadline, "no access log line"
                time.sleep(0.02)
    finally:
        access.removeHandler(clients)
    return clients.seen[0]


def test_a_local_proxy_is_trusted_by_default(tmp_path: Path) -> None:
    assert client_seen(tmp_path).startswith(CLIENT_BEHIND_PROXY + ":")


def test_forwarded_headers_from_a_peer_not_listed_are_ignored(tmp_path: Path) -> None:
    # The proxy is said to be elsewhere: the loopback peer's X-Forwarded-For is a claim, not a fact.
    seen = client_seen(tmp_path, FORWARDED_ALLOW_IPS="10.1.2.3,192.0.2.0/24")
    assert seen.startswith("127.0.0.1:"), seen


@pytest.mark.parametrize("value", ["10.0.0.1/8", "proxy.internal", "127.0.0.1, 10.0.0.300"])
def test_a_malformed_proxy_list_stops_start_up_naming_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(FORWARDED_ALLOW_IPS=value)
    assert str(err.value).startswith("FORWARDED_ALLOW_IPS:"), err.value


def test_the_proxy_list_is_normalised() -> None:
    assert load_settings(FORWARDED_ALLOW_IPS=" 10.0.0.0/8 , ::1 ").forwarded_allow_ips == "10.0.0.0/8,::1"
    assert load_settings(FORWARDED_ALLOW_IPS="*").forwarded_allow_ips == "*"
