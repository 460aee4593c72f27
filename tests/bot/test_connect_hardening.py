"""The connect page under attack, served over HTTP: it is not a scanner, not a password-guessing service,
and a dripping server cannot freeze the web process."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlmodel import select

import flows.providers
from models.db import session_scope
from models.tables import EmailAccount
from tests.bot import test_connect_page as connect_page_tests
from tests.bot.test_connect_page import mailbox_fields, submit
from tests.support.drip import dripping_server
from tests.support.slack_app import running_app


def new_link(harness, user_id: str = "U0001") -> str:
    return connect_page_tests.new_link(harness, user_id)[1]


@pytest.fixture
def strict_app(tmp_path, dovecot):
    """The app with the production policy: no private networks, mail ports only."""
    with running_app(tmp_path, dovecot, EMAILSYNC_ALLOW_PRIVATE_HOSTS="", EMAILSYNC_ALLOW_PORTS="") as harness:
        yield harness


def test_loopback_in_any_spelling_is_refused_by_the_page(strict_app, mailbox):
    for host in ("127.0.0.1", "2130706433", "localhost", "[::1]", "169.254.169.254"):
        response = submit(new_link(strict_app), **mailbox_fields(mailbox, imap_host=host, imap_port="993"))
        assert response.status_code == 400, host
        assert "This server cannot be used" in response.text and "private or local network" in response.text
    response = submit(new_link(strict_app), **mailbox_fields(mailbox))  # Dovecot's real, non-mail port
    assert response.status_code == 400 and "is not a mail port" in response.text
    with session_scope(strict_app.services.db) as session:
        assert session.exec(select(EmailAccount)).all() == []


def test_an_srv_record_pointing_inward_is_refused(strict_app, mailbox, monkeypatch):
    # A domain someone owns publishes _imaps._tcp pointing at our own loopback.
    monkeypatch.setattr(
        flows.providers,
        "_srv",
        lambda name, _lifetime: ("127.0.0.1", 993) if name.startswith("_imaps.") else None,
    )
    response = submit(
        new_link(strict_app), email="me@attacker.example", password="x", imap_host="", smtp_host="", imap_port=""
    )
    assert response.status_code == 400 and "private or local network" in response.text


def opened(link: str) -> tuple[httpx.Client, str, str]:
    """A browser that has loaded the page: its client (with the CSRF cookie), the link and the CSRF value."""
    client = httpx.Client(timeout=60)
    page = client.get(link)
    assert page.status_code == 200, page.text
    return client, link, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_a_dripping_server_never_freezes_the_web_process(tmp_path, dovecot):
    settings = {"EMAILSYNC_CONNECT_DEADLINE": "5", "EMAILSYNC_CONNECT_WORKERS": "2", "EMAILSYNC_CONNECT_QUEUE": "2"}
    with dripping_server(interval=0.5) as port, running_app(tmp_path, dovecot, **settings) as app:
        fields = {"email": "a@example.net", "password": "x", "imap_host": "127.0.0.1", "imap_port": str(port)}
        fields["imap_security"] = "starttls"  # the drip is the greeting itself
        links = [new_link(app, user_id=f"U{n}") for n in range(10)]
        # Pages loaded first, so the POSTs (the same link twice among them) arrive together.
        browsers = [opened(link) for link in links] + [opened(links[0])]

        def post(browser: tuple[httpx.Client, str, str]) -> httpx.Response:
            client, link, csrf = browser
            try:
                return client.post(link, data={"csrf": csrf, **fields})
            finally:
                client.close()

        with ThreadPoolExecutor(12) as pool:
            started = time.monotonic()
            answers = [pool.submit(post, b) for b in browsers]
            health = []
            while not all(a.done() for a in answers):
                t0 = time.monotonic()
                health.append((httpx.get(f"{app.base_url}/healthz", timeout=10).status_code, time.monotonic() - t0))
                time.sleep(0.1)
            elapsed = time.monotonic() - started
        responses = [a.result() for a in answers]
        codes = [r.status_code for r in responses]
        # At most workers + queue attempts are taken; the rest are told at once to try again.
        busy = [r for r in responses if r.status_code == 503]
        assert busy and all("Busy, try again" in r.text for r in busy), codes
        assert busy[0].headers["retry-after"] == "5"
        assert {r.status_code for r in responses} == {400, 503}, codes
        for r in responses:
            if r.status_code == 400:
                assert "did not finish in time" in r.text
        # One link never has two attempts at once: its two POSTs did not both run.
        assert 503 in (codes[0], codes[-1]), codes
        # Every attempt ended (the drip never does on its own); /healthz kept answering. Generous functional
        # bounds: the latency figures themselves are measured by bench/hostile.py.
        assert elapsed < 40
        assert health and max(seconds for _, seconds in health) < 5


def test_password_guessing_uses_up_the_link(slack, mailbox):
    link = new_link(slack)
    for _ in range(4):
        response = submit(link, **mailbox_fields(mailbox, password="guess"))
        assert response.status_code == 400 and "did not accept the sign-in" in response.text
    response = submit(link, **mailbox_fields(mailbox, password="guess"))
    assert response.status_code == 410 and "This link is used up" in response.text
    locked = httpx.get(link)
    assert locked.status_code == 410 and "too many failed sign-in attempts" in locked.text


def test_a_person_over_the_limit_is_told_when_to_try_again(tmp_path, dovecot, mailbox):
    with running_app(tmp_path, dovecot, EMAILSYNC_CONNECT_FAILURES_PER_PERSON="2") as app:
        for _ in range(2):
            submit(new_link(app), **mailbox_fields(mailbox, password="guess"))
        response = submit(new_link(app), **mailbox_fields(mailbox))
        assert response.status_code == 429
        assert "Too many failed attempts" in response.text and "Try again in 15 minutes" in response.text
        assert mailbox.password not in response.text
