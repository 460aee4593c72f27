"""A browser without JavaScript for the connect page's sign-in: cookies kept, redirects looked at, not followed."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.oauth_server import OAuthServer


class SignInBrowser:
    """One person's browser (its own cookie jar) talking to the app and, through `idp.approve`, the provider."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(timeout=60, follow_redirects=False)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def __enter__(self) -> SignInBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self, link: str) -> tuple[httpx.Response, str]:
        """GET the connect page; return it and its CSRF value."""
        page = self.http.get(link)
        found = re.search(r'name="csrf" value="([^"]+)"', page.text)
        return page, found.group(1) if found else ""

    def press_sign_in(self, link: str, provider: str, *, email: str = "", csrf: str | None = None) -> httpx.Response:
        """Press "Sign in with ..." on the connect page (typing `email` first); the answer is not followed."""
        if csrf is None:
            _, csrf = self.open(link)
        return self.http.post(f"{link}/oauth/{provider}", data={"csrf": csrf, "email": email, "password": ""})

    def sign_in(self, link: str, idp: OAuthServer, *, typed: str = "", as_email: str) -> str:
        """Press the button and consent at the provider as `as_email`; return the callback URL to open."""
        pressed = self.press_sign_in(link, idp.flavour.name, email=typed)
        assert pressed.status_code == 302, pressed.text
        return idp.approve(pressed.headers["location"], email=as_email)

    def get(self, url: str) -> httpx.Response:
        """GET a URL of the app (a callback URL from the provider, say)."""
        return self.http.get(url)

    def choose(self, page: httpx.Response, decision: str) -> httpx.Response:
        """Answer the "which mailbox?" page."""
        key = re.search(r'name="key" value="([^"]+)"', page.text)
        assert key is not None, page.text
        return self.http.post(f"{self.base_url}/oauth/choose", data={"key": key.group(1), "decision": decision})


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL (first value of each)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
