"""The connect page: every failure in plain words, links that expire, are used up or belong to no one, CSRF."""

from __future__ import annotations

import re
import socket
import threading
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import update

from flows import setup as setup_flow
from flows.providers import guess_servers
from models.clock import utcnow
from models.db import session_scope
from models.tables import EmailAccount, SetupSession
from sync.imap_session import default_ssl_context


def new_link(slack, user_id: str = "U0001") -> tuple[int, str]:
    state, token = setup_flow.start_setup(slack.services.db, team_id="T0001", user_id=user_id)
    return state.session_id, f"{slack.base_url}/connect/{token}"


def submit(link: str, **fields: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        page = client.get(link)
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        return client.post(link, data={"csrf": csrf, **fields})


def mailbox_fields(mailbox, **overrides: str) -> dict[str, str]:
    fields = {
        "email": f"{mailbox.user}@example.net",
        "password": mailbox.password,
        "imap_host": "127.0.0.1",
        "imap_port": str(mailbox.server.imaps_port),
        "imap_security": "tls",
        "username": mailbox.user,
    }
    fields.update(overrides)
    return fields


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def silent_port() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    threading.Thread(target=lambda: [listener.accept() for _ in range(5)], daemon=True).start()
    return listener.getsockname()[1]


@pytest.mark.parametrize(
    ("overrides", "title", "words"),
    [
        ({"password": "wrong"}, "did not accept the sign-in", "app password"),
        ({"imap_host": "mail.nonexistent.invalid"}, "could not reach the server", "was not found"),
        ({"imap_port": "closed"}, "could not reach the server", "Nothing answers on"),
        ({"imap_port": "plain", "imap_security": "tls"}, "secure connection failed", "port 993 uses TLS"),
    ],
)
def test_each_imap_failure_is_explained(slack, mailbox, overrides, title, words):
    if overrides.get("imap_port") == "closed":
        overrides = {"imap_port": str(closed_port())}
    if overrides.get("imap_port") == "plain":  # TLS spoken to the STARTTLS port
        overrides = {**overrides, "imap_port": str(mailbox.server.imap_port)}
    _, link = new_link(slack)
    response = submit(link, **mailbox_fields(mailbox, **overrides))
    assert response.status_code == 400
    assert title in response.text and words in response.text
    assert mailbox.password not in response.text
    # A failed attempt costs nothing: the link still works.
    assert httpx.get(link).status_code == 200


def test_timeout_is_explained(slack, mailbox):
    slack.services.settings.imap_timeout = 1
    _, link = new_link(slack)
    response = submit(link, **mailbox_fields(mailbox, imap_port=str(silent_port())))
    assert response.status_code == 400 and "did not answer" in response.text
    # STARTTLS spoken to the TLS port: the server waits for a handshake that never comes.
    response = submit(link, **mailbox_fields(mailbox, imap_security="starttls"))
    assert response.status_code == 400 and "993 uses TLS" in response.text


def test_untrusted_certificate_is_explained(slack, mailbox):
    slack.deps.ssl_context = default_ssl_context  # the system store does not trust the test CA
    _, link = new_link(slack)
    response = submit(link, **mailbox_fields(mailbox))
    assert response.status_code == 400
    assert "secure connection failed" in response.text and "not trusted" in response.text


def test_smtp_wrong_password_is_explained(slack, mailbox, smtp):
    smtp.users[mailbox.user] = "other"
    _, link = new_link(slack)
    fields = mailbox_fields(mailbox, smtp_host="127.0.0.1", smtp_port=str(smtp.port), smtp_security="starttls")
    response = submit(link, **fields)
    assert response.status_code == 400 and "outgoing (SMTP) server rejected" in response.text


def test_success_stores_the_secret_encrypted_and_uses_up_the_link(slack, mailbox):
    _, link = new_link(slack)
    response = submit(link, **mailbox_fields(mailbox))
    assert response.status_code == 200 and "is connected" in response.text
    with session_scope(slack.services.db) as session:
        account = session.get(EmailAccount, 1)
        assert account.state == "connecting" and mailbox.password not in account.secret_encrypted
        assert slack.services.secrets.decrypt(account.secret_encrypted) == mailbox.password
    again = httpx.get(link)
    assert again.status_code == 410 and "already used" in again.text and "/emailsync setup" in again.text
    # The modal had been closed (no view id): the person gets a DM with a button instead.
    assert "Continue setup" in str(slack.fake.wait_for("chat.postMessage")[0].args)


def test_expired_and_unknown_links(slack):
    session_id, link = new_link(slack)
    with session_scope(slack.services.db) as session:
        session.execute(
            update(SetupSession).where(SetupSession.id == session_id).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    expired = httpx.get(link)
    assert expired.status_code == 410 and "expired" in expired.text
    foreign = httpx.get(f"{slack.base_url}/connect/not-a-real-token")
    assert foreign.status_code == 404 and "not valid" in foreign.text


def test_a_post_without_the_csrf_cookie_is_refused(slack, mailbox):
    _, link = new_link(slack)
    response = httpx.post(link, data={"csrf": "guess", **mailbox_fields(mailbox)})
    assert response.status_code == 403
    with session_scope(slack.services.db) as session:
        assert session.get(EmailAccount, 1) is None


def test_the_page_is_plain_html_readable_on_a_phone(slack, page):
    _, link = new_link(slack)
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(link)
    assert page.get_attribute("#password", "type") == "password"
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 375


def test_provider_presets_and_the_fallback_guess():
    gmail = guess_servers("someone@gmail.com")
    assert (gmail.imap_host, gmail.imap_port, gmail.smtp_port) == ("imap.gmail.com", 993, 465)
    assert "app password" in gmail.note
    assert guess_servers("me@outlook.com").smtp_security == "starttls"
    fallback = guess_servers("me@nonexistent.invalid", dns_lifetime=0.5)
    assert (fallback.imap_host, fallback.source) == ("imap.nonexistent.invalid", "guess")
