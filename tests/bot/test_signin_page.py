"""The connect page's "Sign in with Google / Microsoft", over HTTP without JavaScript."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import select

import flows.providers
from flows import setup as setup_flow
from models.db import session_scope
from models.tables import EmailAccount
from tests.support.signin import SignInStack
from tests.support.signin_browser import SignInBrowser, query_of
from tests.support.slack_app import SlackHarness, running_app


@pytest.fixture
def both(tmp_path, all_stacks: dict[str, SignInStack]) -> Iterator[SlackHarness]:
    """The app with Google and Microsoft configured."""
    settings = {**all_stacks["google"].settings(), **all_stacks["microsoft"].settings()}
    for stack in all_stacks.values():
        stack.idp.reset()
    with running_app(tmp_path, all_stacks["google"].dovecot, **settings) as harness:
        yield harness


def new_link(app: SlackHarness, user_id: str = "U0001") -> str:
    _, token = setup_flow.start_setup(app.services.db, team_id="T0001", user_id=user_id)
    return f"{app.base_url}/connect/{token}"


def accounts(app: SlackHarness) -> list[EmailAccount]:
    with session_scope(app.services.db) as session:
        return list(session.exec(select(EmailAccount)).all())


def test_buttons_only_for_configured_providers(slack, both) -> None:
    with SignInBrowser(slack.base_url) as browser:
        page, _ = browser.open(new_link(slack))
    assert page.status_code == 200 and "Sign in with" not in page.text and 'id="password"' in page.text
    with SignInBrowser(both.base_url) as browser:
        page, _ = browser.open(new_link(both))
    assert 'id="sign-in-google"' in page.text and 'id="sign-in-microsoft"' in page.text
    assert 'id="password"' in page.text and "or use a password" in page.text  # beside the password form
    # The form's first submit button (Enter) is the password test, never a sign-in.
    first_button = page.text.index("<button")
    assert page.text.index('id="sign-in-google"') > first_button and "formaction" not in page.text[first_button:][:80]


def test_google_and_microsoft_addresses_lead_with_their_sign_in(both, monkeypatch: pytest.MonkeyPatch) -> None:
    mx = {"workspace.example": ["aspmx.l.google.com"], "contoso.example": ["contoso.mail.protection.outlook.com"]}
    monkeypatch.setattr(flows.providers, "_mx_hosts", lambda domain, _lifetime: mx.get(domain, []))
    link = new_link(both)
    with SignInBrowser(both.base_url) as browser:
        for address, shown, hidden, why in (
            ("ann@gmail.com", "google", "microsoft", "Google accepts only an app password"),
            ("bob@hotmail.com", "microsoft", "google", "Microsoft 365 does not accept passwords for IMAP"),
            ("cat@workspace.example", "google", "microsoft", "app password"),
            ("dan@contoso.example", "microsoft", "google", "does not accept passwords"),
        ):
            _, csrf = browser.open(link)
            page = browser.http.post(link, data={"csrf": csrf, "email": address, "password": ""})
            assert page.status_code == 200, address
            assert 'id="lead"' in page.text and why in page.text, address
            assert f'id="sign-in-{shown}"' in page.text and f'id="sign-in-{hidden}"' not in page.text
            assert f'value="{address}"' in page.text and "instead</summary>" in page.text
        # Anyone else still needs the password.
        _, csrf = browser.open(link)
        page = browser.http.post(link, data={"csrf": csrf, "email": "eve@elsewhere.example", "password": ""})
        assert page.status_code == 400 and "Enter the password" in page.text and 'id="lead"' not in page.text
    assert accounts(both) == []


def test_the_button_sends_the_browser_to_the_provider(both, all_stacks) -> None:
    google, microsoft = all_stacks["google"].idp, all_stacks["microsoft"].idp
    link = new_link(both)
    with SignInBrowser(both.base_url) as browser:
        refused = browser.press_sign_in(link, "google", csrf="forged")
        assert refused.status_code == 403 and "location" not in refused.headers
        assert browser.press_sign_in(link, "yahoo").status_code == 404
        for idp in (google, microsoft):
            pressed = browser.press_sign_in(link, idp.flavour.name, email="Ann@Example.com")
            assert pressed.status_code == 302
            location = pressed.headers["location"]
            assert location.startswith(idp.authorization_endpoint + "?")
            query = query_of(location)
            assert query["client_id"] == idp.client_id and query["response_type"] == "code"
            assert query["redirect_uri"] == f"{both.base_url}/oauth/callback"
            assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
            assert query["state"] and query["nonce"] and query["login_hint"] == "ann@example.com"
            assert set(query["scope"].split()) >= set(idp.default_scope.split())
            if idp is google:
                assert query["access_type"] == "offline"
            cookie = pressed.headers["set-cookie"]
            assert "emailsync_signin=" in cookie and "Path=/oauth" in cookie and "HttpOnly" in cookie
            assert "SameSite=lax" in cookie
        page, _ = browser.open(link)
    # The pages may be redirected to the providers after a form post (browsers check form-action on redirects).
    policy = page.headers["content-security-policy"]
    assert f"form-action 'self' {google.base_url} {microsoft.base_url};" in policy
    assert google.token_calls == {} and accounts(both) == []
