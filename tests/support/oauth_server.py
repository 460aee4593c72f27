"""A local OAuth 2.0 / OpenID Connect provider for tests: "Sign in with Google / Microsoft" without the internet.

``start_oauth_server(flavour)`` serves, on ``127.0.0.1`` (uvicorn in a thread, Starlette as the HTTP layer), an
authorization server built from Authlib's server-side components:

* authorization code grant (``authlib.oauth2.rfc6749.grants.AuthorizationCodeGrant``) with PKCE
  (``rfc7636.CodeChallenge``; S256 only, and required unless ``require_pkce=False``) and ``state``;
* refresh token grant that *rotates* the refresh token on every use (``rotate_refresh_tokens``);
* OpenID Connect id tokens (``authlib.oidc.core.OpenIDCode``): RS256 JWTs signed with a key published at
  ``jwks_uri``, carrying ``iss``, ``aud`` (the client id), ``sub``, ``email``, ``email_verified``, ``nonce``,
  ``iat``, ``exp`` (and ``tid``/``oid``/``preferred_username`` for Microsoft);
* revocation (RFC 7009, ``rfc7009.RevocationEndpoint``) and introspection (RFC 7662,
  ``rfc7662.IntrospectionEndpoint``), the latter for the mail servers: Dovecot's ``oauth2`` passdb and the
  aiosmtpd in ``tests/support/smtp.py`` ask it whether a bearer token is good;
* a consent page (a real HTML form: email field prefilled from ``login_hint``, "Allow" and "Deny");
* discovery (``.well-known/openid-configuration``), JWKS and a userinfo endpoint.

Two flavours share the one class. ``GOOGLE`` mimics accounts.google.com: issuer = base URL, paths like
Google's, a refresh token only when the authorization request said ``access_type=offline``, and revoking an
access token revokes its whole grant (as Google does). ``MICROSOFT`` mimics the Microsoft identity platform
v2.0: endpoints below ``/{tenant}/`` (``common``, ``organizations``, ``consumers`` or the server's own
``tenant_id``), a discovery ``issuer`` holding the ``{tenantid}`` placeholder while id tokens carry the real
tenant in ``iss`` and ``tid``, a refresh token only for the ``offline_access`` scope, and long (~1.8 kB)
access tokens like Outlook's. Real Microsoft publishes no revocation or introspection endpoint; this server
does (pass ``omit_from_discovery=("revocation_endpoint",)`` to hide one from the discovery document).

Everything a test wants to steer or look at lives on the returned :class:`OAuthServer`::

    with start_oauth_server(GOOGLE, redirect_uris=["http://127.0.0.1:8000/oauth/callback"]) as idp:
        idp.discovery_url, idp.client_id, idp.client_secret      # what the app is configured with
        tokens = idp.issue_tokens("ann@example.com")               # no browser: the token endpoint's JSON
        location = idp.approve(authorize_url, email="ann@example.com")   # consent without a browser
        idp.access_token_ttl = 5                                   # later tokens expire in 5 s
        idp.expire_access_tokens("ann@example.com")                # or expire the current ones now
        idp.fail("token", 503)                                     # token endpoint down ...
        idp.recover()                                              # ... and back
        idp.revoke_user("ann@example.com")                         # every grant of that user is gone
        assert idp.token_calls["refresh_token"] == 1               # calls by grant_type
        idp.requests                                               # every request, with its status

``idp.reset()`` clears counters, records and failures and puts every switch back (tokens are kept), so one
server can serve a whole module. Tokens live in memory; the server is thread-safe (tests call it while the
app's threads hit HTTP).

Mail servers that take its access tokens (both ask the introspection endpoint with the "resource server"
credentials in ``idp.introspection``, and require the flavour's IMAP / SMTP scope)::

    dovecot = start_dovecot(tmp / "dovecot", oauth2=OAuth2Passdb.for_server(idp))   # tests/support/dovecot.py
    dovecot.add_mailbox("ann@example.com")
    dovecot.oauth2_client("ann@example.com", tokens["access_token"])                # XOAUTH2 over TLS
    smtp = start_smtp(cert, key, xoauth2=XOAuth2.for_server(idp))                   # tests/support/smtp.py

Dovecot takes at most 8 KiB of base64 in a SASL response, so access tokens longer than ~6 kB cannot log in
there ("Authentication response too large"); real Outlook tokens are 1.5-3 kB.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import hashlib
import hmac
import html
import ipaddress
import itertools
import json
import re
import secrets
import socket
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import httpx
import uvicorn
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Error,
    OAuth2Payload,
    OAuth2Request,
    ResourceProtector,
    TokenMixin,
    grants,
)
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oidc.core import AuthorizationCodeMixin, OpenIDCode, OpenIDToken
from joserfc.jwk import KeySet, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "ENDPOINTS",
    "GOOGLE",
    "MICROSOFT",
    "Flavour",
    "Introspection",
    "OAuthServer",
    "RecordedRequest",
    "start_oauth_server",
]

#: Endpoint names used by :meth:`OAuthServer.fail`, :attr:`OAuthServer.calls` and :class:`RecordedRequest`.
ENDPOINTS = ("discovery", "authorize", "token", "revocation", "introspection", "jwks", "userinfo")
EndpointName = Literal["discovery", "authorize", "token", "revocation", "introspection", "jwks", "userinfo"]

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_MS_TENANT_ALIASES = ("common", "organizations", "consumers")
_TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class Flavour:
    """What makes the server look like one provider rather than another."""

    name: str
    display_name: str
    #: The scope an IMAP login needs (Dovecot checks it); the scope SMTP AUTH needs (aiosmtpd checks it).
    imap_scope: str
    smtp_scope: str
    #: What the app asks for at sign-in.
    default_scope: str
    scopes_supported: tuple[str, ...]
    #: Path templates; ``{tenant}`` is only used by Microsoft.
    discovery_path: str
    authorize_path: str
    token_path: str
    revocation_path: str
    introspection_path: str
    jwks_path: str
    userinfo_path: str
    #: A refresh token is only issued when the authorization request asked for offline access the
    #: provider's way: Google ``access_type=offline``, Microsoft the ``offline_access`` scope.
    offline_rule: Literal["access_type", "scope"]
    #: Revoking an access token also revokes its refresh token (Google does; RFC 7009 allows it).
    revoke_access_revokes_grant: bool
    access_token_prefix: str
    access_token_length: int
    refresh_token_prefix: str
    refresh_token_length: int


GOOGLE = Flavour(
    name="google",
    display_name="Google",
    imap_scope="https://mail.google.com/",
    smtp_scope="https://mail.google.com/",
    default_scope="https://mail.google.com/ openid email",
    scopes_supported=(
        "https://mail.google.com/",
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    ),
    discovery_path="/.well-known/openid-configuration",
    authorize_path="/o/oauth2/v2/auth",
    token_path="/token",
    revocation_path="/revoke",
    introspection_path="/introspect",
    jwks_path="/oauth2/v3/certs",
    userinfo_path="/v1/userinfo",
    offline_rule="access_type",
    revoke_access_revokes_grant=True,
    access_token_prefix="ya29.a0",
    access_token_length=220,
    refresh_token_prefix="1//0",
    refresh_token_length=103,
)

MICROSOFT = Flavour(
    name="microsoft",
    display_name="Microsoft",
    imap_scope="https://outlook.office.com/IMAP.AccessAsUser.All",
    smtp_scope="https://outlook.office.com/SMTP.Send",
    default_scope=(
        "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send "
        "offline_access openid email"
    ),
    scopes_supported=(
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send",
        "offline_access",
        "openid",
        "email",
        "profile",
        "User.Read",
    ),
    discovery_path="/{tenant}/v2.0/.well-known/openid-configuration",
    authorize_path="/{tenant}/oauth2/v2.0/authorize",
    token_path="/{tenant}/oauth2/v2.0/token",
    revocation_path="/{tenant}/oauth2/v2.0/revoke",
    introspection_path="/{tenant}/oauth2/v2.0/introspect",
    jwks_path="/{tenant}/discovery/v2.0/keys",
    userinfo_path="/oidc/userinfo",
    offline_rule="scope",
    revoke_access_revokes_grant=False,
    access_token_prefix="EwBIA8l6BAAU",
    access_token_length=1800,
    refresh_token_prefix="M.C538_BAY.0.U.-",
    refresh_token_length=420,
)

FLAVOURS = {f.name: f for f in (GOOGLE, MICROSOFT)}

# Attributes of OAuthServer a test may change; reset() puts them back.
_SWITCHES = (
    "access_token_ttl",
    "id_token_ttl",
    "authorization_code_ttl",
    "rotate_refresh_tokens",
    "revoke_grant_on_refresh_reuse",
    "require_pkce",
    "require_offline_request",
    "revoke_access_revokes_grant",
    "users",
    "omit_from_discovery",
)


@dataclass(frozen=True)
class Introspection:
    """How a resource server (Dovecot, the SMTP server) reaches the introspection endpoint.

    The credentials are those of a separate "resource server" client that may only introspect.
    """

    url: str
    client_id: str
    client_secret: str

    def check(self, token: str, *, verify: Any = True, timeout: float = 10) -> dict[str, Any]:
        """POST the token to the introspection endpoint and return the JSON answer (raises on HTTP errors)."""
        resp = httpx.post(
            self.url, data={"token": token}, auth=(self.client_id, self.client_secret), verify=verify, timeout=timeout
        )
        resp.raise_for_status()
        return dict(resp.json())

    async def acheck(self, token: str, *, verify: Any = True, timeout: float = 10) -> dict[str, Any]:
        """Async :meth:`check` (for servers running on an event loop)."""
        async with httpx.AsyncClient(verify=verify, timeout=timeout) as client:
            resp = await client.post(self.url, data={"token": token}, auth=(self.client_id, self.client_secret))
        resp.raise_for_status()
        return dict(resp.json())


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the server answered (``form`` is the urlencoded body; secrets included, it is a test)."""

    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]
    status: int
    at: float

    @property
    def grant_type(self) -> str | None:
        """``grant_type`` of a token request."""
        return self.form.get("grant_type")


# --------------------------------------------------------------------------------------------- models
@dataclass(eq=False)
class _Client(ClientMixin):
    client_id: str
    client_secret: str
    name: str
    #: None: any http(s) redirect URI on a loopback host is accepted; else exact string match.
    redirect_uris: list[str] | None
    grant_types: tuple[str, ...]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        return scope  # the server already checked it against scopes_supported; missing -> invalid_scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        parts = urlsplit(redirect_uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        if parts.hostname == "localhost":
            return True
        try:
            return ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


@dataclass(frozen=True)
class _User:
    email: str

    def get_user_id(self) -> str:
        return self.email


@dataclass(eq=False)
class _Grant:
    """One sign-in of one user for one client: the family of all tokens refreshed from it."""

    id: int
    email: str
    client_id: str
    scope: str
    created_at: float
    revoked: bool = False


@dataclass(eq=False)
class _AccessToken(TokenMixin):
    token: str
    grant: _Grant
    scope: str
    issued_at: float
    expires_at: float
    revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return bool(client.get_client_id() == self.grant.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked or self.grant.revoked

    def get_user(self) -> _User:
        return _User(self.grant.email)


@dataclass(eq=False)
class _RefreshToken(TokenMixin):
    token: str
    grant: _Grant
    scope: str
    issued_at: float
    #: Set once the token was exchanged with rotation on: it stops working.
    used: bool = False
    revoked: bool = False

    def check_client(self, client: ClientMixin) -> bool:
        return bool(client.get_client_id() == self.grant.client_id)

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return 0

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return self.used or self.revoked or self.grant.revoked

    def get_user(self) -> _User:
        return _User(self.grant.email)


@dataclass(eq=False)
class _AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    email: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    offline: bool
    auth_time: int
    expires_at: float
    used: bool = False
    grant: _Grant | None = None

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time


# ------------------------------------------------------------------------- Authlib, framework glue
class _Payload(OAuth2Payload):
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._datalist: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {key: values[0] for key, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> collections.defaultdict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):
    """Authlib's view of one HTTP request (what its Flask/Django integrations build from theirs)."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._args = dict(query)
        self._form = dict(form)
        self.payload = _Payload([*query, *form])

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _AuthorizationServer(AuthorizationServer):
    """Authlib's server with the framework hooks filled in for Starlette and the store of :class:`OAuthServer`."""

    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(scopes_supported=list(owner.flavour.scopes_supported))
        self.owner = owner

    def query_client(self, client_id: str) -> _Client | None:
        return self.owner._clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.owner._save_token(token, request)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        if isinstance(request, OAuth2Request):
            return request
        raise TypeError(f"expected an OAuth2Request, got {type(request).__name__}")

    def handle_response(self, status: int, body: Any, headers: Any) -> Response:
        headers = dict(headers or [])
        if isinstance(body, dict | list):
            headers["Content-Type"] = "application/json"
            return Response(json.dumps(body), status_code=status, headers=headers)
        return Response(body or "", status_code=status, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


_CLIENT_AUTH = ["client_secret_basic", "client_secret_post"]


class _CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH

    @property
    def owner(self) -> OAuthServer:
        return self.server.owner

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self.owner._save_code(code, request)

    def query_authorization_code(self, code: str, client: _Client) -> _AuthorizationCode | None:
        return self.owner._query_code(code, client)

    def delete_authorization_code(self, authorization_code: _AuthorizationCode) -> None:
        authorization_code.used = True

    def authenticate_user(self, authorization_code: _AuthorizationCode) -> _User:
        return _User(authorization_code.email)

    def generate_token(
        self,
        user: Any = None,
        scope: Any = None,
        grant_type: Any = None,
        expires_in: Any = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        code: _AuthorizationCode = self.request.authorization_code
        return dict(
            super().generate_token(
                user=user,
                scope=scope,
                grant_type=grant_type,
                expires_in=expires_in,
                include_refresh_token=include_refresh_token and code.offline,
            )
        )


class _RefreshGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH

    @property
    def owner(self) -> OAuthServer:
        return self.server.owner

    def authenticate_refresh_token(self, refresh_token: str) -> _RefreshToken | None:
        return self.owner._query_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: _RefreshToken) -> _User:
        return _User(refresh_token.grant.email)

    def issue_token(self, user: _User, refresh_token: _RefreshToken) -> dict[str, Any]:
        scope = self.request.payload.scope or refresh_token.get_scope()
        return dict(self.generate_token(user=user, scope=scope, include_refresh_token=self.owner.rotate_refresh_tokens))

    def revoke_old_credential(self, refresh_token: _RefreshToken) -> None:
        if self.owner.rotate_refresh_tokens:
            refresh_token.used = True


class _S256Challenge(CodeChallenge):
    """PKCE with S256 only (``plain`` is refused); while ``OAuthServer.require_pkce`` is on, an authorization
    request without a challenge is refused too (Authlib's own ``required`` only concerns public clients)."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(required=True)
        self.owner = owner

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        if self.owner.require_pkce and not grant.request.payload.data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge' (PKCE with S256 is required).")
        if not grant.request.payload.data.get("code_challenge_method") and grant.request.payload.data.get(
            "code_challenge"
        ):
            raise InvalidRequestError("Missing 'code_challenge_method' (only S256 is supported).")
        super().validate_code_challenge(grant, redirect_uri)


class _IdTokenMixin:
    owner: OAuthServer

    def resolve_client_private_key(self, client: _Client) -> RSAKey:
        return self.owner._signing_key

    def get_client_algorithm(self, client: _Client) -> str:
        return "RS256"

    def get_encode_header(self, client: _Client) -> dict[str, str]:
        return {"alg": "RS256", "kid": self.owner._signing_key.kid or "", "typ": "JWT"}

    def get_client_claims(self, client: _Client) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": self.owner.issuer, "aud": client.client_id, "iat": now, "exp": now + self.owner.id_token_ttl}

    def generate_user_info(self, user: _User, scope: str) -> dict[str, Any]:
        return self.owner._user_claims(user.email)


class _OpenIDCode(_IdTokenMixin, OpenIDCode):
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__(require_nonce=False)
        self.owner = owner

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        return False


class _OpenIDRefresh(_IdTokenMixin, OpenIDToken):
    """id_token on refresh too (Google and Microsoft both send one when ``openid`` was granted)."""

    def __init__(self, owner: OAuthServer) -> None:
        self.owner = owner


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = _CLIENT_AUTH

    @property
    def owner(self) -> OAuthServer:
        return self.server.owner

    def query_token(self, token_string: str, token_type_hint: str | None) -> TokenMixin | None:
        return self.owner._find_token(token_string)

    def revoke_token(self, token: TokenMixin, request: OAuth2Request) -> None:
        self.owner._revoke(token)


class _Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = _CLIENT_AUTH

    @property
    def owner(self) -> OAuthServer:
        return self.server.owner

    def query_token(self, token_string: str, token_type_hint: str | None) -> _AccessToken | None:
        # Only access tokens are ever active here: a mail server must not take a refresh token as a bearer.
        return self.owner._access.get(token_string)

    def check_permission(self, token: TokenMixin, client: _Client, request: OAuth2Request) -> bool:
        return client.client_id in (self.owner.introspection.client_id, token.grant.client_id)

    def introspect_token(self, token: _AccessToken) -> dict[str, Any]:
        email = token.grant.email
        return {
            "active": True,
            "token_type": "Bearer",
            "scope": token.scope,
            "client_id": token.grant.client_id,
            "username": email,
            "email": email,
            "sub": self.owner._sub(email),
            "iss": self.owner.issuer,
            "aud": token.grant.client_id,
            "iat": int(token.issued_at),
            "exp": int(token.expires_at),
        }


class _BearerValidator(BearerTokenValidator):
    def __init__(self, owner: OAuthServer) -> None:
        super().__init__()
        self.owner = owner

    def authenticate_token(self, token_string: str) -> _AccessToken | None:
        return self.owner._access.get(token_string)


# ----------------------------------------------------------------------------------------- the server
@dataclass
class _Failure:
    status: int
    remaining: int | None
    retry_after: int | None


@dataclass(eq=False)
class OAuthServer:
    """A running authorization server; see the module docstring. Build it with :func:`start_oauth_server`."""

    flavour: Flavour
    base_url: str
    client_id: str
    client_secret: str
    #: The resource server's (Dovecot's, the SMTP server's) way into the introspection endpoint.
    introspection: Introspection
    #: Microsoft only: the tenant id id tokens carry (``tid`` and inside ``iss``).
    tenant_id: str
    #: Lifetime of access tokens issued from now on (seconds); change it at any time.
    access_token_ttl: int = 60
    id_token_ttl: int = 3600
    authorization_code_ttl: int = 600
    #: A refresh grant returns a new refresh token and the old one stops working (``invalid_grant``).
    #: Off: the response has no ``refresh_token`` and the old one keeps working (as Google does).
    rotate_refresh_tokens: bool = True
    #: Presenting an already rotated refresh token revokes its whole grant (OAuth 2.1 reuse detection).
    revoke_grant_on_refresh_reuse: bool = False
    #: Refuse authorization requests without an S256 ``code_challenge``.
    require_pkce: bool = True
    #: Only issue refresh tokens when offline access was asked for the provider's way (see :class:`Flavour`).
    require_offline_request: bool = True
    #: Revoking an access token revokes its grant (default from the flavour).
    revoke_access_revokes_grant: bool = False
    #: If set, only these addresses can sign in (others get an error on the consent page).
    users: set[str] | None = None
    #: Keys left out of the discovery document.
    omit_from_discovery: tuple[str, ...] = ()
    #: ``verify=`` for the server's own HTTP helpers (``approve``): an SSLContext when serving TLS.
    verify: Any = True
    #: The certificate to trust when serving TLS (``tls=`` of :func:`start_oauth_server`), else None.
    cafile: Path | None = None

    #: Token endpoint calls by ``grant_type`` (every POST, including the refused and the failed ones).
    token_calls: collections.Counter[str] = field(default_factory=collections.Counter, repr=False)
    #: Requests by endpoint name (see :data:`ENDPOINTS`).
    calls: collections.Counter[str] = field(default_factory=collections.Counter, repr=False)
    #: Every request answered, oldest first.
    requests: list[RecordedRequest] = field(default_factory=list, repr=False)

    _clients: dict[str, _Client] = field(default_factory=dict, repr=False)
    _codes: dict[str, _AuthorizationCode] = field(default_factory=dict, repr=False)
    _access: dict[str, _AccessToken] = field(default_factory=dict, repr=False)
    _refresh: dict[str, _RefreshToken] = field(default_factory=dict, repr=False)
    _grants: list[_Grant] = field(default_factory=list, repr=False)
    _failures: dict[str, _Failure] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _signing_key: RSAKey = field(default=None, repr=False)  # type: ignore[assignment]
    _authz: _AuthorizationServer = field(default=None, repr=False)  # type: ignore[assignment]
    _protector: ResourceProtector = field(default=None, repr=False)
    _uvicorn: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _initial: dict[str, Any] = field(default_factory=dict, repr=False)
    _grant_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1), repr=False)

    # ------------------------------------------------------------------------------------- URLs
    def _url(self, template: str, tenant: str = "common") -> str:
        return self.base_url + template.format(tenant=tenant)

    @property
    def discovery_url(self) -> str:
        """Where the app finds everything else (Microsoft: the ``common`` tenant's document)."""
        return self._url(self.flavour.discovery_path)

    @property
    def authorization_endpoint(self) -> str:
        return self._url(self.flavour.authorize_path)

    @property
    def token_endpoint(self) -> str:
        return self._url(self.flavour.token_path)

    @property
    def revocation_endpoint(self) -> str:
        return self._url(self.flavour.revocation_path)

    @property
    def introspection_endpoint(self) -> str:
        return self._url(self.flavour.introspection_path)

    @property
    def jwks_uri(self) -> str:
        return self._url(self.flavour.jwks_path)

    @property
    def userinfo_endpoint(self) -> str:
        return self._url(self.flavour.userinfo_path)

    @property
    def issuer(self) -> str:
        """The ``iss`` of id tokens (Microsoft: with the real tenant id)."""
        if self.flavour.name == "microsoft":
            return f"{self.base_url}/{self.tenant_id}/v2.0"
        return self.base_url

    @property
    def discovery_issuer(self) -> str:
        """The ``issuer`` of the discovery document (Microsoft ``common``: the ``{tenantid}`` template)."""
        if self.flavour.name == "microsoft":
            return f"{self.base_url}/{{tenantid}}/v2.0"
        return self.base_url

    @property
    def imap_scope(self) -> str:
        return self.flavour.imap_scope

    @property
    def smtp_scope(self) -> str:
        return self.flavour.smtp_scope

    @property
    def default_scope(self) -> str:
        return self.flavour.default_scope

    def jwks(self) -> dict[str, Any]:
        """The public key set published at ``jwks_uri``."""
        return {"keys": [self._signing_key.as_dict(private=False)]}

    def key_set(self) -> KeySet:
        """The public keys as a joserfc ``KeySet`` (to verify id tokens in a test)."""
        return KeySet.import_key_set(self.jwks())  # type: ignore[arg-type]

    def discovery(self, tenant: str = "common") -> dict[str, Any]:
        """The discovery document served for ``tenant`` (Microsoft; ignored for Google)."""
        if self.flavour.name == "microsoft":
            issuer = self.discovery_issuer if tenant in _MS_TENANT_ALIASES else f"{self.base_url}/{tenant}/v2.0"
        else:
            issuer = self.issuer
        doc: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": self._url(self.flavour.authorize_path, tenant),
            "token_endpoint": self._url(self.flavour.token_path, tenant),
            "revocation_endpoint": self._url(self.flavour.revocation_path, tenant),
            "introspection_endpoint": self._url(self.flavour.introspection_path, tenant),
            "userinfo_endpoint": self.userinfo_endpoint,
            "jwks_uri": self._url(self.flavour.jwks_path, tenant),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "subject_types_supported": ["public" if self.flavour.name == "google" else "pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": list(self.flavour.scopes_supported),
            "token_endpoint_auth_methods_supported": list(_CLIENT_AUTH),
            "revocation_endpoint_auth_methods_supported": list(_CLIENT_AUTH),
            "introspection_endpoint_auth_methods_supported": list(_CLIENT_AUTH),
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "nonce", "sub"]
            + (["tid", "oid", "preferred_username"] if self.flavour.name == "microsoft" else []),
        }
        if self.flavour.name == "microsoft":
            doc["tenant_region_scope"] = "EU"
        for key in self.omit_from_discovery:
            doc.pop(key, None)
        return doc

    # ------------------------------------------------------------------------------- switches
    def fail(
        self,
        endpoint: EndpointName = "token",
        status: int = 503,
        *,
        times: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        """Answer ``endpoint`` with ``status`` (e.g. 503, 429) -- the next ``times`` requests, or until :meth:`recover`.

        The body is JSON (``temporarily_unavailable`` / ``slow_down``); ``retry_after`` adds a Retry-After header.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; one of {ENDPOINTS}")
        with self._lock:
            self._failures[endpoint] = _Failure(status, times, retry_after)

    def recover(self, endpoint: EndpointName | None = None) -> None:
        """Undo :meth:`fail` for ``endpoint`` (all endpoints when None)."""
        with self._lock:
            if endpoint is None:
                self._failures.clear()
            else:
                self._failures.pop(endpoint, None)

    @contextlib.contextmanager
    def failing(self, endpoint: EndpointName = "token", status: int = 503, **kwargs: Any) -> Iterator[None]:
        """``with idp.failing("token", 429): ...`` -- :meth:`fail` for the block."""
        self.fail(endpoint, status, **kwargs)
        try:
            yield
        finally:
            self.recover(endpoint)

    def reset(self) -> None:
        """Forget counters, recorded requests and failures; put the switches (``access_token_ttl``,
        ``rotate_refresh_tokens``, ``users``, ...) back to how the server started. Tokens and grants are kept."""
        with self._lock:
            self.token_calls.clear()
            self.calls.clear()
            self.requests.clear()
            self._failures.clear()
            for name, value in self._initial.items():
                setattr(self, name, copy.copy(value))

    def token_requests(self, grant_type: str | None = None) -> list[RecordedRequest]:
        """Recorded token endpoint requests, optionally only those of one ``grant_type``."""
        with self._lock:
            return [
                r for r in self.requests if r.endpoint == "token" and (grant_type is None or r.grant_type == grant_type)
            ]

    # ----------------------------------------------------------------------------- test helpers
    def issue_tokens(
        self,
        email: str,
        scope: str | None = None,
        *,
        nonce: str | None = None,
        refresh_token: bool = True,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Sign ``email`` in without a browser: the JSON the token endpoint would return for a fresh grant.

        ``scope`` defaults to the flavour's ``default_scope``; an ``id_token`` is included when it holds ``openid``.
        """
        scope = scope or self.flavour.default_scope
        client = self._clients[client_id or self.client_id]
        with self._lock:
            token = self._new_token_dict(scope, include_refresh_token=refresh_token)
            grant = self._new_grant(email, client.client_id, scope)
            self._store_token(token, grant)
            if "openid" in scope.split():
                claims = {
                    **self._id_helper.get_client_claims(client),
                    "auth_time": int(time.time()),
                    **self._user_claims(email),
                }
                if nonce:
                    claims["nonce"] = nonce
                token["id_token"] = self.sign_jwt(claims)
        return token

    def sign_jwt(self, claims: Mapping[str, Any]) -> str:
        """An RS256 JWT over ``claims`` with the server's signing key (for hand-made id tokens)."""
        from joserfc import jwt

        return str(
            jwt.encode(
                {"alg": "RS256", "kid": self._signing_key.kid or "", "typ": "JWT"}, dict(claims), self._signing_key
            )
        )

    def approve(
        self,
        authorize_url: str,
        email: str | None = None,
        *,
        allow: bool = True,
        client: httpx.Client | None = None,
    ) -> str:
        """Act as the user's browser: open ``authorize_url``, submit the consent form, return the redirect target.

        The result is the ``Location`` the provider sends the browser to: the app's callback with ``code`` and
        ``state`` (or ``error=access_denied`` when ``allow=False``, or an error the provider raised before
        showing the page). ``email`` defaults to the ``login_hint`` the page was prefilled with.
        Raises ``AssertionError`` if the provider shows an error page instead.
        """
        own = client is None
        http = client or httpx.Client(verify=self.verify, timeout=10)
        try:
            page = http.get(authorize_url, follow_redirects=False)
            if page.status_code in (302, 303):
                return str(page.headers["location"])
            assert page.status_code == 200, f"authorize page answered {page.status_code}: {page.text[:500]}"
            form = _parse_form(page.text)
            assert form is not None, "no consent form on the page"
            action, fields = form
            if email is not None:
                fields["email"] = email
            fields["decision"] = "allow" if allow else "deny"
            resp = http.post(urljoin(str(page.url), action), data=fields, follow_redirects=False)
            assert resp.status_code in (302, 303), f"consent POST answered {resp.status_code}: {resp.text[:500]}"
            return str(resp.headers["location"])
        finally:
            if own:
                http.close()

    def revoke_user(self, email: str) -> int:
        """Revoke every grant of ``email`` (as a user removing the app's access); returns how many."""
        with self._lock:
            hits = [g for g in self._grants if g.email == email and not g.revoked]
            for grant in hits:
                grant.revoked = True
            return len(hits)

    def revoke_token(self, token: str) -> bool:
        """Revoke an access or refresh token as the revocation endpoint would; False if unknown."""
        with self._lock:
            found = self._find_token(token)
            if found is None:
                return False
            self._revoke(found)
            return True

    def expire_access_tokens(self, email: str | None = None) -> int:
        """Make the current access tokens (of ``email``, or everybody's) expired right now; returns how many."""
        now = time.time()
        with self._lock:
            hits = [
                t for t in self._access.values() if (email is None or t.grant.email == email) and t.expires_at > now
            ]
            for tok in hits:
                tok.expires_at = now - 1
            return len(hits)

    def token_info(self, token: str) -> dict[str, Any]:
        """What the introspection endpoint would answer for ``token`` (in-process, no HTTP)."""
        with self._lock:
            found = self._access.get(token)
            return dict(_Introspection(self._authz).create_introspection_payload(found))

    def active_grants(self, email: str | None = None) -> int:
        """How many unrevoked grants there are (of ``email``)."""
        with self._lock:
            return sum(1 for g in self._grants if not g.revoked and (email is None or g.email == email))

    def add_client(
        self, client_id: str, client_secret: str, redirect_uris: Iterable[str] | None = None, name: str = "Other app"
    ) -> None:
        """Register another confidential client (authorization code + refresh grants)."""
        with self._lock:
            self._clients[client_id] = _Client(
                client_id,
                client_secret,
                name,
                list(redirect_uris) if redirect_uris is not None else None,
                ("authorization_code", "refresh_token"),
            )

    def add_redirect_uri(self, uri: str) -> None:
        """Register one more exact redirect URI for the main client (once any is registered, only those work)."""
        with self._lock:
            client = self._clients[self.client_id]
            client.redirect_uris = [*(client.redirect_uris or []), uri]

    # --------------------------------------------------------------------------------- lifecycle
    def stop(self) -> None:
        """Stop serving. Idempotent."""
        server, thread = self._uvicorn, self._thread
        self._uvicorn = self._thread = None
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=10)

    def __enter__(self) -> OAuthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------ store
    @property
    def _id_helper(self) -> _OpenIDRefresh:
        return _OpenIDRefresh(self)

    def _sub(self, email: str) -> str:
        digest = hashlib.sha256(f"{self.flavour.name}:{email.lower()}".encode()).digest()
        if self.flavour.name == "google":
            return str(int.from_bytes(digest[:9], "big") % 10**21).rjust(21, "1")
        return base64.urlsafe_b64encode(digest[:32]).decode().rstrip("=")

    def _user_claims(self, email: str) -> dict[str, Any]:
        claims: dict[str, Any] = {"sub": self._sub(email), "email": email, "email_verified": True}
        if self.flavour.name == "microsoft":
            claims["tid"] = self.tenant_id
            claims["oid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{email.lower()}"))
            claims["preferred_username"] = email
            claims["ver"] = "2.0"
        return claims

    def _random(self, prefix: str, length: int) -> str:
        return prefix + "".join(secrets.choice(_TOKEN_CHARS) for _ in range(max(length - len(prefix), 32)))

    def _new_token_dict(self, scope: str, *, include_refresh_token: bool) -> dict[str, Any]:
        token: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": self._random(self.flavour.access_token_prefix, self.flavour.access_token_length),
            "expires_in": int(self.access_token_ttl),
            "scope": scope,
        }
        if include_refresh_token:
            token["refresh_token"] = self._random(self.flavour.refresh_token_prefix, self.flavour.refresh_token_length)
        return token

    def _new_grant(self, email: str, client_id: str, scope: str) -> _Grant:
        grant = _Grant(next(self._grant_ids), email, client_id, scope, time.time())
        self._grants.append(grant)
        return grant

    def _store_token(self, token: dict[str, Any], grant: _Grant) -> None:
        now = time.time()
        scope = token.get("scope") or grant.scope
        access = _AccessToken(token["access_token"], grant, scope, now, now + int(token["expires_in"]))
        self._access[access.token] = access
        if token.get("refresh_token"):
            refresh = _RefreshToken(token["refresh_token"], grant, scope, now)
            self._refresh[refresh.token] = refresh

    def _save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        with self._lock:
            if request.refresh_token is not None:
                grant = request.refresh_token.grant
            else:
                code: _AuthorizationCode = request.authorization_code
                grant = self._new_grant(code.email, code.client_id, code.scope)
                code.grant = grant
            self._store_token(token, grant)

    def _save_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        scope = request.scope or ""
        if not self.require_offline_request:
            offline = True
        elif self.flavour.offline_rule == "access_type":
            offline = data.get("access_type") == "offline"
        else:
            offline = "offline_access" in scope.split()
        with self._lock:
            self._codes[code] = _AuthorizationCode(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri or "",
                scope=scope,
                email=request.user.email,
                nonce=data.get("nonce"),
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                offline=offline,
                auth_time=int(time.time()),
                expires_at=time.time() + self.authorization_code_ttl,
            )

    def _query_code(self, code: str, client: _Client) -> _AuthorizationCode | None:
        with self._lock:
            found = self._codes.get(code)
            if found is None or found.client_id != client.client_id:
                return None
            if found.used:
                # RFC 6749 4.1.2: a code used twice SHOULD revoke the tokens issued from it.
                if found.grant is not None:
                    found.grant.revoked = True
                return None
            if time.time() >= found.expires_at:
                return None
            return found

    def _query_refresh_token(self, token: str) -> _RefreshToken | None:
        with self._lock:
            found = self._refresh.get(token)
            if found is None:
                return None
            if found.used and self.revoke_grant_on_refresh_reuse:
                found.grant.revoked = True
            return None if found.is_revoked() else found

    def _find_token(self, token: str) -> TokenMixin | None:
        return self._access.get(token) or self._refresh.get(token)

    def _revoke(self, token: TokenMixin) -> None:
        with self._lock:
            if isinstance(token, _RefreshToken) or self.revoke_access_revokes_grant:
                token.grant.revoked = True
            else:
                token.revoked = True

    # -------------------------------------------------------------------------------------- HTTP
    def _routes(self) -> list[Route]:
        f = self.flavour
        return [
            Route(f.discovery_path, self._endpoint("discovery", self._discovery), methods=["GET"]),
            Route(f.authorize_path, self._endpoint("authorize", self._authorize), methods=["GET", "POST"]),
            Route(f.token_path, self._endpoint("token", self._token), methods=["POST"]),
            Route(f.revocation_path, self._endpoint("revocation", self._revocation), methods=["POST"]),
            Route(f.introspection_path, self._endpoint("introspection", self._introspection), methods=["POST"]),
            Route(f.jwks_path, self._endpoint("jwks", self._jwks), methods=["GET"]),
            Route(f.userinfo_path, self._endpoint("userinfo", self._userinfo), methods=["GET", "POST"]),
        ]

    def _endpoint(self, name: str, handler: Callable[[Request, _Request], Response]) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            form: list[tuple[str, str]] = []
            if request.method == "POST" and request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"
            ):
                form = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
            query = parse_qsl(request.url.query, keep_blank_values=True)
            oauth_request = _Request(request.method, str(request.url), request.headers, query, form)
            with self._lock:
                self.calls[name] += 1
                if name == "token":
                    self.token_calls[dict(form).get("grant_type", "")] += 1
                failure = self._failures.get(name)
                if failure is not None and failure.remaining is not None:
                    failure.remaining -= 1
                    if failure.remaining <= 0:
                        self._failures.pop(name, None)
            tenant = request.path_params.get("tenant")
            if tenant is not None and tenant not in (*_MS_TENANT_ALIASES, self.tenant_id):
                response: Response = JSONResponse(
                    {"error": "invalid_tenant", "error_description": f"AADSTS90002: Tenant '{tenant}' not found."},
                    status_code=400,
                )
            elif failure is not None:
                response = _failure_response(failure)
            else:
                try:
                    response = handler(request, oauth_request)
                except OAuth2Error as error:
                    response = self._authz.handle_error_response(oauth_request, error)
            with self._lock:
                self.requests.append(
                    RecordedRequest(
                        endpoint=name,
                        method=request.method,
                        path=request.url.path,
                        query=dict(query),
                        form=dict(form),
                        headers=dict(request.headers),
                        status=response.status_code,
                        at=time.time(),
                    )
                )
            return response

        return endpoint

    def _discovery(self, request: Request, oauth_request: _Request) -> Response:
        return JSONResponse(self.discovery(request.path_params.get("tenant", "common")))

    def _jwks(self, request: Request, oauth_request: _Request) -> Response:
        return JSONResponse(self.jwks())

    def _token(self, request: Request, oauth_request: _Request) -> Response:
        with self._lock:
            return self._authz.create_token_response(oauth_request)

    def _revocation(self, request: Request, oauth_request: _Request) -> Response:
        with self._lock:
            return self._authz.create_endpoint_response("revocation", oauth_request)

    def _introspection(self, request: Request, oauth_request: _Request) -> Response:
        with self._lock:
            return self._authz.create_endpoint_response("introspection", oauth_request)

    def _userinfo(self, request: Request, oauth_request: _Request) -> Response:
        with self._lock:
            token = self._protector.validate_request(["openid"], oauth_request)
            return JSONResponse(self._user_claims(token.grant.email))

    def _authorize(self, request: Request, oauth_request: _Request) -> Response:
        # The OAuth parameters are the query string's (the consent form posts back to the same URL);
        # the form only carries the user's answer.
        query = parse_qsl(request.url.query, keep_blank_values=True)
        params = _Request(request.method, str(request.url), request.headers, query, [])
        decision = oauth_request.form.get("decision") if request.method == "POST" else None
        email = (oauth_request.form.get("email") or "").strip()
        user = _User(email) if decision == "allow" and email else None
        try:
            with self._lock:
                grant = self._authz.get_consent_grant(params, end_user=user)
        except OAuth2Error as error:
            if error.redirect_uri:
                return self._authz.handle_error_response(params, error)
            return _error_page(self.flavour, error, status=400)
        if decision == "deny":
            with self._lock:
                return self._authz.create_authorization_response(params, grant_user=None, grant=grant)
        problem = None
        if decision == "allow":
            if not _EMAIL_RE.fullmatch(email):
                problem = "Enter a valid email address."
            elif self.users is not None and email not in self.users:
                problem = f"Couldn't find your {self.flavour.display_name} Account."
            else:
                with self._lock:
                    return self._authz.create_authorization_response(params, grant_user=user, grant=grant)
        client = self._clients[params.payload.client_id]
        prefill = email or params.payload.data.get("login_hint", "")
        return _consent_page(self.flavour, client, params, prefill, problem)


# ---------------------------------------------------------------------------------------- HTML
_PAGE_STYLE = (
    "body{font-family:sans-serif;background:#f1f3f4;margin:0}"
    "main{max-width:420px;margin:48px auto;background:#fff;border-radius:8px;padding:32px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.2)}"
    "h1{font-size:22px;font-weight:400}ul{padding-left:20px}li{margin:4px 0;word-break:break-all}"
    "label{display:block;margin:16px 0 4px}input[type=email]{width:100%;box-sizing:border-box;padding:8px;"
    "font-size:16px}.error{color:#c5221f}"
    # Allow comes first in the form (Enter in the email field means Allow) but is shown on the right.
    ".buttons{display:flex;flex-direction:row-reverse;gap:12px;justify-content:flex-start;margin-top:24px}"
    "button{padding:8px 20px;font-size:15px;border-radius:4px;border:1px solid #dadce0;background:#fff}"
    "#allow{background:#1a73e8;color:#fff;border-color:#1a73e8}"
)


def _consent_page(flavour: Flavour, client: _Client, params: _Request, email: str, problem: str | None) -> Response:
    esc = html.escape
    scopes = "".join(f"<li>{esc(s)}</li>" for s in (params.scope or "").split())
    action = esc("?" + urlencode(parse_qsl(urlsplit(params.uri).query, keep_blank_values=True)))
    error = f'<p class="error" role="alert">{esc(problem)}</p>' if problem else ""
    who = f'<p id="signing-in-as">Signing in as <strong>{esc(email)}</strong></p>' if email else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - {esc(flavour.display_name)} (test)</title>
<style>{_PAGE_STYLE}</style></head>
<body><main>
<h1>Sign in with {esc(flavour.display_name)}</h1>
<p><strong id="client-name">{esc(client.name)}</strong> wants to access your {esc(flavour.display_name)} Account</p>
{who}
<p>This will allow {esc(client.name)} to:</p>
<ul id="scopes">{scopes}</ul>
<form method="post" action="{action}">
{error}
<label for="email">Email</label>
<input type="email" id="email" name="email" value="{esc(email)}" autocomplete="username" required autofocus>
<div class="buttons">
<button type="submit" id="allow" name="decision" value="allow">Allow</button>
<button type="submit" id="deny" name="decision" value="deny" formnovalidate>Deny</button>
</div>
</form>
</main></body></html>
"""
    return HTMLResponse(body, status_code=400 if problem else 200, headers={"Cache-Control": "no-store"})


def _error_page(flavour: Flavour, error: OAuth2Error, status: int) -> Response:
    esc = html.escape
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Error - {esc(flavour.display_name)} (test)</title>
<style>{_PAGE_STYLE}</style></head>
<body><main><h1>Access blocked: this request is invalid</h1>
<p class="error" id="error">Error: {esc(error.error or "")}</p>
<p id="error-description">{esc(error.description or "")}</p></main></body></html>
"""
    return HTMLResponse(body, status_code=status)


def _failure_response(failure: _Failure) -> Response:
    headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
    error = "slow_down" if failure.status == 429 else "temporarily_unavailable"
    return JSONResponse(
        {"error": error, "error_description": f"switched to fail with {failure.status} by the test"},
        status_code=failure.status,
        headers=headers,
    )


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action") or ""
        elif tag == "input" and a.get("name") and a.get("type") not in ("submit", "button"):
            self.fields[a["name"] or ""] = a.get("value") or ""


def _parse_form(page: str) -> tuple[str, dict[str, str]] | None:
    parser = _FormParser()
    parser.feed(page)
    return None if parser.action is None else (parser.action, parser.fields)


# ------------------------------------------------------------------------------------- starting
def start_oauth_server(
    flavour: Flavour | str = GOOGLE,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_name: str = "emailsync",
    redirect_uris: Iterable[str] | None = None,
    access_token_ttl: int = 60,
    rotate_refresh_tokens: bool = True,
    require_pkce: bool = True,
    require_offline_request: bool = True,
    users: Iterable[str] | None = None,
    tenant_id: str | None = None,
    omit_from_discovery: Iterable[str] = (),
    tls: tuple[Path, Path] | None = None,
    host: str = "127.0.0.1",
) -> OAuthServer:
    """Start an authorization server on a free port of ``host`` and return it once it answers.

    Use it as a context manager (``with start_oauth_server(MICROSOFT) as idp:``) or call ``stop()``.

    ``redirect_uris``: the exact callback URLs of the app; None accepts any http(s) URL on a loopback host
    (handy when the app's port is not known yet; :meth:`OAuthServer.add_redirect_uri` can pin it later).
    ``tls=(cert, key)`` serves HTTPS (``verify`` on the server is then an SSLContext trusting ``cert``).
    """
    flav = FLAVOURS[flavour] if isinstance(flavour, str) else flavour
    key = RSAKey.generate_key(
        2048, parameters={"kid": secrets.token_hex(8), "use": "sig", "alg": "RS256"}, private=True
    )
    scheme = "https" if tls else "http"
    verify: Any = True
    if tls:
        import ssl

        verify = ssl.create_default_context(cafile=str(tls[0]))
    cid = client_id or (
        f"{secrets.randbelow(10**12):012d}-{secrets.token_hex(16)}.apps.googleusercontent.com"
        if flav.name == "google"
        else str(uuid.uuid4())
    )
    server = OAuthServer(
        flavour=flav,
        base_url="",
        client_id=cid,
        client_secret=client_secret or ("GOCSPX-" if flav.name == "google" else "") + secrets.token_urlsafe(24),
        introspection=Introspection("", f"resource-server-{secrets.token_hex(4)}", secrets.token_urlsafe(24)),
        tenant_id=tenant_id or str(uuid.uuid4()),
        access_token_ttl=access_token_ttl,
        rotate_refresh_tokens=rotate_refresh_tokens,
        require_pkce=require_pkce,
        require_offline_request=require_offline_request,
        revoke_access_revokes_grant=flav.revoke_access_revokes_grant,
        users=set(users) if users is not None else None,
        omit_from_discovery=tuple(omit_from_discovery),
        verify=verify,
        cafile=Path(tls[0]) if tls else None,
    )
    server._signing_key = key
    server._initial = {name: copy.copy(getattr(server, name)) for name in _SWITCHES}
    server._clients[server.client_id] = _Client(
        server.client_id,
        server.client_secret,
        client_name,
        list(redirect_uris) if redirect_uris is not None else None,
        ("authorization_code", "refresh_token"),
    )
    server._clients[server.introspection.client_id] = _Client(
        server.introspection.client_id, server.introspection.client_secret, "resource server", [], ()
    )

    authz = _AuthorizationServer(server)
    authz.register_token_generator(
        "default",
        lambda grant_type, client, user=None, scope=None, expires_in=None, include_refresh_token=True: (
            server._new_token_dict(scope or "", include_refresh_token=include_refresh_token)
        ),
    )
    authz.register_grant(_CodeGrant, [_S256Challenge(server), _OpenIDCode(server)])
    authz.register_grant(_RefreshGrant, [_OpenIDRefresh(server)])
    authz.register_endpoint(_Revocation)
    authz.register_endpoint(_Introspection)
    protector = ResourceProtector()
    protector.register_token_validator(_BearerValidator(server))
    server._authz, server._protector = authz, protector

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server.base_url = f"{scheme}://{host}:{port}"
    server.introspection = replace(server.introspection, url=server.introspection_endpoint)

    app = Starlette(routes=server._routes())
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
        timeout_keep_alive=30,
    )
    userver = uvicorn.Server(config)
    thread = threading.Thread(target=userver.run, kwargs={"sockets": [sock]}, name=f"oauth-{flav.name}", daemon=True)
    server._uvicorn, server._thread = userver, thread
    thread.start()
    deadline = time.monotonic() + 10
    while not userver.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.stop()
            sock.close()
            raise RuntimeError("the OAuth server did not start")
        time.sleep(0.01)
    return server
