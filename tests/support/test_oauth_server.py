"""The OAuth test infrastructure itself: the local provider, Dovecot's oauth2 passdb and aiosmtpd's XOAUTH2."""

from __future__ import annotations

import base64
import secrets
import smtplib
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from imapclient.exceptions import LoginError
from joserfc import jwt
from joserfc.jwk import KeySet

from .dovecot import DovecotServer, OAuth2Passdb, _make_cert, start_dovecot
from .oauth_server import GOOGLE, MICROSOFT, OAuthServer, start_oauth_server
from .smtp import SmtpServer, XOAuth2, start_smtp

CALLBACK = "http://127.0.0.1:8765/oauth/callback"
ANN = "ann@example.com"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def providers() -> Iterator[dict[str, OAuthServer]]:
    """One provider per flavour for the module (tests get them reset)."""
    servers = {
        "google": start_oauth_server(GOOGLE, redirect_uris=[CALLBACK]),
        "microsoft": start_oauth_server(MICROSOFT, redirect_uris=[CALLBACK]),
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(params=["google", "microsoft"])
def idp(request: pytest.FixtureRequest, providers: dict[str, OAuthServer]) -> OAuthServer:
    server = providers[request.param]
    server.reset()
    return server


@pytest.fixture(scope="module")
def mail_servers(
    providers: dict[str, OAuthServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, DovecotServer]]:
    """A Dovecot per provider whose oauth2 passdb asks that provider's introspection endpoint."""
    servers = {
        name: start_dovecot(tmp_path_factory.mktemp(f"dovecot-{name}"), oauth2=OAuth2Passdb.for_server(idp))
        for name, idp in providers.items()
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def dovecot_oauth(idp: OAuthServer, mail_servers: dict[str, DovecotServer]) -> DovecotServer:
    server = mail_servers[idp.flavour.name]
    server.add_mailbox(ANN)
    return server


@pytest.fixture
def smtp_oauth(idp: OAuthServer, dovecot_oauth: DovecotServer) -> Iterator[SmtpServer]:
    server = start_smtp(dovecot_oauth.cafile, dovecot_oauth.cafile.parent / "key.pem", xoauth2=XOAuth2.for_server(idp))
    yield server
    server.stop()


# ------------------------------------------------------------------------------------------- helpers
def _authorize_url(idp: OAuthServer, verifier: str | None, **params: str) -> str:
    query = {
        "response_type": "code",
        "client_id": idp.client_id,
        "redirect_uri": CALLBACK,
        "scope": idp.default_scope,
        "state": "state-" + secrets.token_hex(4),
        "nonce": "nonce-" + secrets.token_hex(4),
        "login_hint": ANN,
    }
    if idp.flavour is GOOGLE:
        query["access_type"] = "offline"
    if verifier is not None:
        query["code_challenge"] = create_s256_code_challenge(verifier)
        query["code_challenge_method"] = "S256"
    query.update(params)
    return idp.authorization_endpoint + "?" + urlencode({k: v for k, v in query.items() if v != ""})


def _callback_params(location: str) -> dict[str, str]:
    assert location.startswith(CALLBACK + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def _token_request(idp: OAuthServer, **form: str) -> httpx.Response:
    """A token request as the app would send it: Google with HTTP Basic, Microsoft with the secret in the form."""
    if idp.flavour is GOOGLE:
        return httpx.post(idp.token_endpoint, data=form, auth=(idp.client_id, idp.client_secret), timeout=10)
    return httpx.post(
        idp.token_endpoint, data={**form, "client_id": idp.client_id, "client_secret": idp.client_secret}, timeout=10
    )


def _exchange(idp: OAuthServer, code: str, verifier: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": verifier}
    return _token_request(idp, **form)


def _sign_in(idp: OAuthServer, email: str = ANN) -> dict[str, Any]:
    verifier = secrets.token_urlsafe(48)
    code = _callback_params(idp.approve(_authorize_url(idp, verifier), email=email))["code"]
    resp = _exchange(idp, code, verifier)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _introspect(idp: OAuthServer, token: str) -> dict[str, Any]:
    return idp.introspection.check(token)


def _verify_id_token(idp: OAuthServer, id_token: str, jwks: dict[str, Any], issuer: str) -> dict[str, Any]:
    decoded = jwt.decode(id_token, KeySet.import_key_set(jwks), algorithms=["RS256"])  # type: ignore[arg-type]
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": idp.client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(decoded.claims)
    assert decoded.header["alg"] == "RS256" and decoded.header["kid"] == jwks["keys"][0]["kid"]
    return dict(decoded.claims)


# --------------------------------------------------------------------------------- the provider: HTTP
def test_discovery_and_jwks(idp: OAuthServer) -> None:
    doc = httpx.get(idp.discovery_url, timeout=10).json()
    for key in (
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
    ):
        assert doc[key].startswith(idp.base_url + "/"), key
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(idp.imap_scope.split()) <= set(doc["scopes_supported"])
    jwks = httpx.get(doc["jwks_uri"], timeout=10).json()
    assert [k["kty"] for k in jwks["keys"]] == ["RSA"] and "d" not in jwks["keys"][0]
    if idp.flavour is GOOGLE:
        assert idp.discovery_url == idp.base_url + "/.well-known/openid-configuration"
        assert doc["issuer"] == idp.base_url == idp.issuer
    else:
        assert doc["issuer"] == f"{idp.base_url}/{{tenantid}}/v2.0"
        assert doc["token_endpoint"] == f"{idp.base_url}/common/oauth2/v2.0/token"
        # the tenant's own document names the real issuer; unknown tenants do not exist
        own = httpx.get(idp.discovery_url.replace("/common/", f"/{idp.tenant_id}/"), timeout=10).json()
        assert own["issuer"] == idp.issuer == f"{idp.base_url}/{idp.tenant_id}/v2.0"
        bad = httpx.get(idp.discovery_url.replace("/common/", "/not-a-tenant/"), timeout=10)
        assert bad.status_code == 400 and "AADSTS90002" in bad.json()["error_description"]
    assert idp.calls["discovery"] >= 1 and idp.calls["jwks"] == 1


def test_code_flow_with_pkce(idp: OAuthServer) -> None:
    doc = httpx.get(idp.discovery_url, timeout=10).json()
    jwks = httpx.get(doc["jwks_uri"], timeout=10).json()
    verifier = secrets.token_urlsafe(48)
    url = _authorize_url(idp, verifier, nonce="n-0S6_WzA2Mj")
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert f'value="{ANN}"' in page.text and "emailsync" in page.text and idp.imap_scope in page.text
    assert idp.token_calls == {}  # showing the page issues nothing

    location = idp.approve(url)
    params = _callback_params(location)
    assert params["state"] == parse_qs(urlsplit(url).query)["state"][0]
    code = params["code"]

    wrong = _token_request(
        idp, grant_type="authorization_code", code=code, redirect_uri=CALLBACK, code_verifier=secrets.token_urlsafe(48)
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    missing = _token_request(idp, grant_type="authorization_code", code=code, redirect_uri=CALLBACK)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"

    resp = _exchange(idp, code, verifier)
    assert resp.status_code == 200, resp.text
    assert resp.headers["cache-control"] == "no-store"
    tokens = resp.json()
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 60
    assert tokens["scope"] == idp.default_scope
    assert tokens["access_token"] and tokens["refresh_token"]
    if idp.flavour is MICROSOFT:
        assert len(tokens["access_token"]) >= 1500  # Outlook-sized tokens
    claims = _verify_id_token(idp, tokens["id_token"], jwks, idp.issuer)
    assert claims["email"] == ANN and claims["email_verified"] is True
    assert claims["nonce"] == "n-0S6_WzA2Mj" and claims["aud"] == idp.client_id
    assert claims["iat"] <= time.time() < claims["exp"]
    if idp.flavour is MICROSOFT:
        assert claims["tid"] == idp.tenant_id
        assert claims["iss"] == doc["issuer"].replace("{tenantid}", claims["tid"])
        assert claims["preferred_username"] == ANN
    assert _introspect(idp, tokens["access_token"])["username"] == ANN

    # a code works once; using it again is refused and revokes what it gave (RFC 6749 4.1.2)
    again = _exchange(idp, code, verifier)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert _introspect(idp, tokens["access_token"]) == {"active": False}
    assert idp.token_calls["authorization_code"] == 4
    assert [r.status for r in idp.token_requests("authorization_code")] == [400, 400, 200, 400]


def test_userinfo(idp: OAuthServer) -> None:
    tokens = idp.issue_tokens(ANN)
    info = httpx.get(idp.userinfo_endpoint, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10)
    assert info.status_code == 200 and info.json()["email"] == ANN
    assert info.json()["sub"] == jwt.decode(tokens["id_token"], idp.key_set()).claims["sub"]
    bad = httpx.get(idp.userinfo_endpoint, headers={"Authorization": "Bearer nope"}, timeout=10)
    assert bad.status_code == 401 and "invalid_token" in bad.headers["www-authenticate"]


def test_authorization_request_refusals(idp: OAuthServer) -> None:
    verifier = secrets.token_urlsafe(48)

    def error_of(url: str) -> dict[str, str]:
        resp = httpx.get(url, timeout=10)
        assert resp.status_code == 302, resp.text
        return _callback_params(resp.headers["location"])

    no_pkce = error_of(_authorize_url(idp, None, state="s1"))
    assert no_pkce["error"] == "invalid_request" and no_pkce["state"] == "s1"
    plain = _authorize_url(idp, None, code_challenge=verifier, code_challenge_method="plain")
    assert error_of(plain)["error"] == "invalid_request"
    assert error_of(_authorize_url(idp, verifier, scope="openid https://evil.example/all"))["error"] == "invalid_scope"
    assert error_of(_authorize_url(idp, verifier, prompt="none"))["error"] == "login_required"

    # an unregistered redirect URI or client gets an error page, never a redirect
    for url in (
        _authorize_url(idp, verifier, redirect_uri="http://127.0.0.1:8765/oauth/callback/"),
        _authorize_url(idp, verifier, client_id="someone-else"),
    ):
        resp = httpx.get(url, timeout=10)
        assert resp.status_code == 400 and "Access blocked" in resp.text and "location" not in resp.headers

    denied = _callback_params(idp.approve(_authorize_url(idp, verifier, state="s2"), allow=False))
    assert denied["error"] == "access_denied" and denied["state"] == "s2" and "code" not in denied

    # the consent form refuses a malformed address
    page = httpx.post(_authorize_url(idp, verifier), data={"email": "not-an-address", "decision": "allow"}, timeout=10)
    assert page.status_code == 400 and "Enter a valid email address" in page.text

    # client authentication at the token endpoint
    resp = httpx.post(
        idp.token_endpoint,
        data={"grant_type": "authorization_code", "code": "x", "redirect_uri": CALLBACK},
        auth=(idp.client_id, "wrong-secret"),
        timeout=10,
    )
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


def test_refresh_token_only_when_offline_access_was_asked(idp: OAuthServer) -> None:
    verifier = secrets.token_urlsafe(48)
    if idp.flavour is GOOGLE:
        url = _authorize_url(idp, verifier, access_type="")
    else:
        url = _authorize_url(idp, verifier, scope=idp.default_scope.replace(" offline_access", ""))
    code = _callback_params(idp.approve(url))["code"]
    resp = _exchange(idp, code, verifier)
    assert resp.status_code == 200 and "refresh_token" not in resp.json() and "access_token" in resp.json()


def test_refresh_rotates(idp: OAuthServer) -> None:
    first = _sign_in(idp)
    second = _token_request(idp, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["access_token"] != first["access_token"]
    assert rotated["scope"] == idp.default_scope
    claims = jwt.decode(rotated["id_token"], idp.key_set()).claims
    assert claims["email"] == ANN and "nonce" not in claims

    old = _token_request(idp, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
    third = _token_request(idp, grant_type="refresh_token", refresh_token=rotated["refresh_token"])
    assert third.status_code == 200
    # the access tokens of earlier refreshes stay valid until they expire
    assert _introspect(idp, first["access_token"])["active"] is True
    assert idp.token_calls == {"authorization_code": 1, "refresh_token": 3}
    assert [r.status for r in idp.token_requests("refresh_token")] == [200, 400, 200]

    # a narrower scope may be asked for on refresh, a wider one not
    narrow = _token_request(
        idp, grant_type="refresh_token", refresh_token=third.json()["refresh_token"], scope=idp.imap_scope
    )
    assert narrow.status_code == 200 and narrow.json()["scope"] == idp.imap_scope
    wider = _token_request(
        idp, grant_type="refresh_token", refresh_token=narrow.json()["refresh_token"], scope="openid profile"
    )
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_refresh_without_rotation() -> None:
    with start_oauth_server(GOOGLE, rotate_refresh_tokens=False) as idp:
        tokens = idp.issue_tokens(ANN)
        for _ in range(2):
            resp = _token_request(idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
            assert resp.status_code == 200 and "refresh_token" not in resp.json()
        assert idp.token_calls["refresh_token"] == 2


def test_refresh_reuse_detection(idp: OAuthServer) -> None:
    idp.revoke_grant_on_refresh_reuse = True
    try:
        first = idp.issue_tokens(ANN)
        rotated = _token_request(idp, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
        assert _token_request(idp, grant_type="refresh_token", refresh_token=first["refresh_token"]).status_code == 400
        # replaying the old one revoked the whole family
        assert _introspect(idp, rotated["access_token"]) == {"active": False}
        reuse = _token_request(idp, grant_type="refresh_token", refresh_token=rotated["refresh_token"])
        assert reuse.json()["error"] == "invalid_grant"
    finally:
        idp.revoke_grant_on_refresh_reuse = False


def test_revocation(idp: OAuthServer) -> None:
    auth = (idp.client_id, idp.client_secret)
    tokens = idp.issue_tokens(ANN)
    assert httpx.post(idp.revocation_endpoint, data={"token": tokens["access_token"]}, timeout=10).status_code == 401
    resp = httpx.post(
        idp.revocation_endpoint, data={"token": tokens["access_token"]}, auth=auth, timeout=10
    )  # RFC 7009: 200, empty JSON
    assert resp.status_code == 200 and resp.json() == {}
    assert _introspect(idp, tokens["access_token"]) == {"active": False}
    refreshed = _token_request(idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    # Google revokes the whole grant with its access token; Microsoft-like revocation only that token
    assert refreshed.status_code == (400 if idp.flavour is GOOGLE else 200)

    # revoking a refresh token revokes the grant: its access tokens too
    tokens = idp.issue_tokens(ANN)
    other = idp.issue_tokens(ANN)
    resp = httpx.post(
        idp.revocation_endpoint,
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
        auth=auth,
        timeout=10,
    )
    assert resp.status_code == 200
    assert _introspect(idp, tokens["access_token"]) == {"active": False}
    again = _token_request(idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert _introspect(idp, other["access_token"])["active"] is True  # another grant is untouched
    # unknown tokens are "revoked" fine (RFC 7009 2.2)
    assert httpx.post(idp.revocation_endpoint, data={"token": "nope"}, auth=auth, timeout=10).status_code == 200

    # the user removes the app's access everywhere
    assert idp.revoke_user(ANN) >= 1 and idp.active_grants(ANN) == 0
    assert _introspect(idp, other["access_token"]) == {"active": False}
    assert _token_request(idp, grant_type="refresh_token", refresh_token=other["refresh_token"]).status_code == 400


def test_introspection(idp: OAuthServer) -> None:
    tokens = idp.issue_tokens(ANN)
    info = _introspect(idp, tokens["access_token"])
    assert info["active"] is True and info["username"] == ANN and info["email"] == ANN
    assert info["scope"] == idp.default_scope and info["client_id"] == idp.client_id
    assert info["exp"] - info["iat"] == 60
    assert idp.token_info(tokens["access_token"]) == info
    # refresh tokens are never active bearer tokens; neither are unknown ones
    assert _introspect(idp, tokens["refresh_token"]) == {"active": False}
    assert _introspect(idp, "made-up") == {"active": False}
    # the client may introspect its own tokens; nobody unauthenticated may
    own = httpx.post(
        idp.introspection_endpoint,
        data={"token": tokens["access_token"]},
        auth=(idp.client_id, idp.client_secret),
        timeout=10,
    )
    assert own.json()["active"] is True
    anon = httpx.post(idp.introspection_endpoint, data={"token": tokens["access_token"]}, timeout=10)
    assert anon.status_code == 401
    # expiry: now, or by a short TTL
    assert idp.expire_access_tokens(ANN) >= 1
    assert _introspect(idp, tokens["access_token"]) == {"active": False}
    idp.access_token_ttl = 1
    short = idp.issue_tokens(ANN)
    assert short["expires_in"] == 1 and _introspect(idp, short["access_token"])["active"] is True
    time.sleep(1.1)
    assert _introspect(idp, short["access_token"]) == {"active": False}


def test_failure_switches(idp: OAuthServer) -> None:
    tokens = idp.issue_tokens(ANN)
    idp.fail("token", 503)
    for _ in range(2):
        resp = _token_request(idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert resp.status_code == 503 and resp.json()["error"] == "temporarily_unavailable"
    idp.recover()
    resp = _token_request(idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert resp.status_code == 200  # the failed calls did not use the refresh token up
    assert idp.token_calls["refresh_token"] == 3

    with idp.failing("token", 429, retry_after=7):
        resp = _token_request(idp, grant_type="refresh_token", refresh_token=resp.json()["refresh_token"])
        assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    idp.fail("introspection", 503, times=1)
    with pytest.raises(httpx.HTTPStatusError):
        _introspect(idp, tokens["access_token"])
    assert _introspect(idp, tokens["access_token"])["active"] is True
    with pytest.raises(ValueError):
        idp.fail("tokens")  # type: ignore[arg-type]
    assert [r.status for r in idp.requests if r.endpoint == "introspection"] == [503, 200]


def test_switches_and_reset(idp: OAuthServer) -> None:
    idp.require_pkce = False
    idp.access_token_ttl = 5
    idp.users = {"only@example.com"}
    url = _authorize_url(idp, None)
    page = httpx.post(url, data={"email": ANN, "decision": "allow"}, timeout=10)
    assert page.status_code == 400 and "find your" in page.text
    code = _callback_params(idp.approve(url, email="only@example.com"))["code"]
    resp = _token_request(idp, grant_type="authorization_code", code=code, redirect_uri=CALLBACK)
    assert resp.status_code == 200 and resp.json()["expires_in"] == 5
    idp.fail("token")
    idp.reset()
    assert (idp.require_pkce, idp.access_token_ttl, idp.users) == (True, 60, None)
    assert idp.token_calls == {} and idp.requests == [] and idp.calls == {}
    assert httpx.get(url, timeout=10).headers["location"].startswith(CALLBACK + "?error=invalid_request")
    assert _token_request(idp, grant_type="refresh_token", refresh_token="x").status_code == 400  # not 503


def test_https_provider(tmp_path: Path) -> None:
    cert, key = _make_cert(tmp_path)
    with start_oauth_server(GOOGLE, tls=(cert, key)) as idp:
        assert idp.base_url.startswith("https://127.0.0.1:")
        assert httpx.get(idp.discovery_url, verify=idp.verify, timeout=10).json()["issuer"] == idp.base_url
        with pytest.raises(httpx.ConnectError):  # not trusted by default
            httpx.get(idp.discovery_url, timeout=10)
        dovecot = start_dovecot(tmp_path / "dovecot", oauth2=OAuth2Passdb.for_server(idp))
        try:
            dovecot.oauth2_client(ANN, idp.issue_tokens(ANN)["access_token"]).logout()
        finally:
            dovecot.stop()


# ---------------------------------------------------------------------------------- Dovecot over IMAP
def test_imap_oauth2_login(idp: OAuthServer, dovecot_oauth: DovecotServer) -> None:
    tokens = _sign_in(idp)
    with dovecot_oauth.oauth2_client(ANN, tokens["access_token"]) as c:
        assert [name for _f, _s, name in c.list_folders()] == ["INBOX"]
        c.logout()
    with dovecot_oauth.oauth2_client(ANN, tokens["access_token"], mech="OAUTHBEARER") as c:
        c.logout()
    # password users of the same instance are unaffected
    dovecot_oauth.add_user(f"pw-{idp.flavour.name}", "pw")
    dovecot_oauth.client(f"pw-{idp.flavour.name}", "pw").logout()
    assert idp.calls["introspection"] == 2


def test_imap_refuses_bad_tokens(idp: OAuthServer, dovecot_oauth: DovecotServer) -> None:
    good = idp.issue_tokens(ANN)
    expired = idp.issue_tokens(ANN)
    idp.expire_access_tokens(ANN)
    revoked = idp.issue_tokens(ANN)
    assert idp.revoke_token(revoked["access_token"])
    bob = idp.issue_tokens("bob@example.com")
    t0 = time.monotonic()
    for user, token in [
        (ANN, expired["access_token"]),
        (ANN, revoked["access_token"]),
        (ANN, revoked["refresh_token"] if idp.flavour is MICROSOFT else good["refresh_token"]),  # not a bearer token
        (ANN, bob["access_token"]),  # someone else's token
        (ANN, "garbage"),
        (f"pw-{idp.flavour.name}", "pw"),  # a password is no token
    ]:
        with pytest.raises(LoginError):
            dovecot_oauth.oauth2_client(user, token)
    assert time.monotonic() - t0 < 1.5  # no failure delay, no auth penalty

    # the auth cache is off: a token revoked after a successful login stops working at once
    fresh = idp.issue_tokens(ANN)
    dovecot_oauth.oauth2_client(ANN, fresh["access_token"]).logout()
    idp.revoke_user(ANN)
    with pytest.raises(LoginError):
        dovecot_oauth.oauth2_client(ANN, fresh["access_token"])

    # a token without the mail scope (Dovecot answers "user disabled", after its 0.5 s failure delay)
    no_mail = idp.issue_tokens(ANN, scope="openid email")
    with pytest.raises(LoginError):
        dovecot_oauth.oauth2_client(ANN, no_mail["access_token"])


def test_imap_when_the_provider_is_down(idp: OAuthServer, dovecot_oauth: DovecotServer) -> None:
    tokens = idp.issue_tokens(ANN)
    with idp.failing("introspection", 503), pytest.raises(LoginError, match="UNAVAILABLE"):
        dovecot_oauth.oauth2_client(ANN, tokens["access_token"])
    dovecot_oauth.oauth2_client(ANN, tokens["access_token"]).logout()


# --------------------------------------------------------------------------------- aiosmtpd over SMTP
def _smtp_xoauth2(server: SmtpServer, ctx: ssl.SSLContext, user: str, token: str) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    client.starttls(context=ctx)
    client.ehlo()
    assert "XOAUTH2" in client.esmtp_features["auth"].split()
    raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    code, _ = client.docmd("AUTH", "XOAUTH2 " + base64.b64encode(raw.encode()).decode())
    if code == 334:  # the error challenge: acknowledge it with an empty line (RFC 7628 3.2.3)
        code, _ = client.docmd("")
    if code != 235:
        client.close()
        raise smtplib.SMTPAuthenticationError(code, b"")
    return client


def test_smtp_xoauth2(idp: OAuthServer, dovecot_oauth: DovecotServer, smtp_oauth: SmtpServer) -> None:
    ctx = dovecot_oauth.ssl_context()
    tokens = idp.issue_tokens(ANN)
    client = _smtp_xoauth2(smtp_oauth, ctx, ANN, tokens["access_token"])
    client.sendmail(ANN, ["bob@example.org"], b"Subject: hi\r\n\r\nsent with a token\r\n")
    client.quit()
    assert len(smtp_oauth.received) == 1

    # smtplib's own auth(): it answers the error challenge by resending the token, and still fails
    idp.revoke_token(tokens["access_token"])
    client = smtplib.SMTP("127.0.0.1", smtp_oauth.port, timeout=10)
    client.starttls(context=ctx)
    client.ehlo()  # auth() does not; without it aiosmtpd says 503 "send EHLO first", which smtplib takes as success
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        client.auth("XOAUTH2", lambda _challenge=None: f"user={ANN}\x01auth=Bearer {tokens['access_token']}\x01\x01")
    assert err.value.smtp_code == 535
    client.close()

    other = idp.issue_tokens(ANN)
    for user, token in [(ANN, other["refresh_token"]), ("bob@example.com", other["access_token"])]:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            _smtp_xoauth2(smtp_oauth, ctx, user, token)
    with idp.failing("introspection", 503), pytest.raises(smtplib.SMTPAuthenticationError) as err:
        _smtp_xoauth2(smtp_oauth, ctx, ANN, other["access_token"])
    assert err.value.smtp_code == 454
    assert [ok for _m, _u, ok in smtp_oauth.token_logins] == [True, False, False, False, False]


# --------------------------------------------------------------------------- the consent page, for real
def test_consent_page_in_chromium(idp: OAuthServer, page: Any, tmp_path: Path) -> None:
    verifier = secrets.token_urlsafe(48)
    url = _authorize_url(idp, verifier, state="browser-state")
    landed: list[str] = []

    def callback(route: Any) -> None:
        landed.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p id=done>signed in</p>")

    page.route(CALLBACK + "*", callback)
    page.goto(url)
    assert page.input_value("#email") == ANN
    assert idp.flavour.display_name in page.title()
    page.screenshot(path=str(tmp_path / f"consent-{idp.flavour.name}.png"))
    page.fill("#email", "carol@example.com")
    if idp.flavour is GOOGLE:
        page.click("#allow")
    else:
        page.press("#email", "Enter")  # the form's first button is Allow
    page.wait_for_selector("#done")
    params = _callback_params(landed[0])
    assert params["state"] == "browser-state"
    resp = _token_request(
        idp, grant_type="authorization_code", code=params["code"], redirect_uri=CALLBACK, code_verifier=verifier
    )
    assert jwt.decode(resp.json()["id_token"], idp.key_set()).claims["email"] == "carol@example.com"
