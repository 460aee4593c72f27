"""The connect page's hygiene: whose mailbox and which workspace, Secure cookies, links checked before bodies, CSP."""

from __future__ import annotations

import re
import socket
import time
from urllib.parse import urlsplit

import httpx

from flows import setup as setup_flow
from tests.support.slack_app import running_app


def new_link(app, user_id: str = "U0001") -> str:
    _, token = setup_flow.start_setup(app.services.db, team_id="T0001", user_id=user_id)
    return f"{app.base_url}/connect/{token}"


def connecting_for(page: str) -> str:
    match = re.search(r'<p id="connecting-for">(.*?)</p>', page, re.DOTALL)
    assert match is not None, page
    return match.group(1)


def test_the_page_says_whose_mailbox_it_connects_and_in_which_workspace(slack):
    name = "Ada <b>Lovelace</b> & Co"
    slack.fake.users["U0001"] = {"real_name": name, "profile": {"real_name": name, "display_name": "ada"}}
    link = new_link(slack)
    with httpx.Client() as browser:
        shown = connecting_for(browser.get(link).text)
        assert "<strong>Ada &lt;b&gt;Lovelace&lt;/b&gt; &amp; Co (@ada)</strong>" in shown  # escaped
        assert "<strong>Fake Team</strong>" in shown  # auth.test's team name
        # The form shown again after a refused POST says it too.
        again = browser.post(link, data={"csrf": "stale", "email": "a@example.com", "password": "x"})
        assert again.status_code == 403 and connecting_for(again.text) == shown
        browser.get(link)
    assert len(slack.fake.calls_to("users.info")) == 1  # cached: Slack is asked once per person
    assert len(slack.fake.calls_to("auth.test")) == 1


def test_the_ids_are_shown_when_slack_cannot_name_the_person(slack):
    slack.fake.users["U0404"] = None  # users.info answers user_not_found
    response = httpx.get(new_link(slack, user_id="U0404"))
    assert response.status_code == 200
    shown = connecting_for(response.text)
    assert "<strong>U0404</strong>" in shown and "<strong>Fake Team</strong>" in shown


def test_the_csrf_cookie_is_secure_when_the_public_address_is_https(slack, tmp_path, dovecot):
    # Reached over plain http on loopback (as behind a TLS-terminating proxy): Secure follows PUBLIC_BASE_URL.
    with running_app(tmp_path / "https", dovecot, PUBLIC_BASE_URL="https://emailsync.example.com") as app:
        cookie = httpx.get(new_link(app)).headers["set-cookie"]
        assert "emailsync_csrf=" in cookie and "secure" in cookie.lower()
    cookie = httpx.get(new_link(slack)).headers["set-cookie"]  # an http PUBLIC_BASE_URL: no Secure
    assert "emailsync_csrf=" in cookie and "secure" not in cookie.lower()


def test_an_unknown_link_is_refused_before_its_body_is_read(slack):
    port = urlsplit(slack.base_url).port
    for content_type in ("multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded"):
        head = (
            b"POST /connect/not-a-real-token HTTP/1.1\r\nHost: app\r\nContent-Type: "
            + content_type.encode()
            + b"\r\nContent-Length: 1000000\r\n\r\n"
        )
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(head + b"a=" + b"b" * 1000)  # a thousandth of the announced body, the rest never comes
            sock.settimeout(5)
            answer = b""
            while chunk := sock.recv(65536):  # the server closes after answering: it wants no more
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
        assert b"not valid" in answer and b"connection: close" in answer.lower()
        assert time.monotonic() - started < 3


def test_a_form_beyond_the_limits_is_refused_while_it_is_parsed(slack):
    link = new_link(slack)
    many = httpx.post(link, data={f"field{i}": "x" for i in range(200)})
    assert many.status_code == 400 and "Too many fields" in many.text
    upload = httpx.post(link, data={"email": "a@example.com"}, files={"password": ("pw.txt", b"secret")})
    assert upload.status_code == 400
    long_field = httpx.post(link, data={"email": "a" * 100_000})
    assert long_field.status_code == 400
    assert httpx.get(link).status_code == 200  # none of it used up the link


def test_the_content_security_policy_lets_the_page_style_itself(slack, page):
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    response = page.goto(new_link(slack))
    assert response is not None
    assert "default-src 'none'" in response.headers["content-security-policy"]
    # The inline stylesheet is allowed by its hash: the button has its colour, nothing was refused.
    assert page.evaluate("getComputedStyle(document.querySelector('#connect')).backgroundColor") == "rgb(0, 122, 90)"
    assert page.is_visible("#connecting-for")
    assert not [v for v in violations if "Content Security Policy" in v], violations
