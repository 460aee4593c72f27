"""A real SMTP server for tests: aiosmtpd with STARTTLS and AUTH, in the test process."""

from __future__ import annotations

import base64
import binascii
import collections
import json
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword


@dataclass
class SmtpServer:
    """A running aiosmtpd on loopback; `users` maps usernames to passwords."""

    port: int
    controller: Controller
    users: dict[str, str] = field(default_factory=dict)
    received: list[Any] = field(default_factory=list)
    #: Bearer-token logins (``start_smtp(..., xoauth2=...)``) in order: ``(mechanism, user, accepted)``.
    token_logins: list[tuple[str, str, bool]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop the server."""
        self.controller.stop()


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.server.received.append(envelope)
        return "250 OK"


def start_smtp(cert: Path, key: Path, *, xoauth2: XOAuth2 | None = None) -> SmtpServer:
    """STARTTLS required before AUTH (PLAIN/LOGIN), as real submission servers do on port 587.

    ``xoauth2=XOAuth2.for_server(oauth_server)`` also offers ``AUTH XOAUTH2`` and ``AUTH OAUTHBEARER``, with
    bearer tokens checked at the provider's introspection endpoint (see :class:`XOAuth2`).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    server = SmtpServer(port=port, controller=None)  # type: ignore[arg-type]

    def authenticate(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            return AuthResult(success=server.users.get(user) == password, handled=False)
        return AuthResult(success=False, handled=False)

    controller = (Controller if xoauth2 is None else _LongLineController)(
        _Handler(server) if xoauth2 is None else _OAuth2Handler(server, xoauth2),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_require_tls=True,
        ready_timeout=10,
    )
    controller.start()
    server.controller = controller
    return server


# ------------------------------------------------------------------- OAuth 2.0 (XOAUTH2 / OAUTHBEARER)
class _IntrospectionSource(Protocol):
    """What :meth:`XOAuth2.for_server` reads from ``tests.support.oauth_server.OAuthServer``."""

    @property
    def introspection(self) -> Any: ...  # .url, .client_id, .client_secret

    @property
    def smtp_scope(self) -> str: ...

    @property
    def discovery_url(self) -> str: ...

    @property
    def verify(self) -> Any: ...


@dataclass(frozen=True)
class XOAuth2:
    """How the SMTP server checks bearer tokens: RFC 7662 introspection, like Dovecot's oauth2 passdb.

    A login succeeds when the provider answers ``"active": true``, its ``username`` equals the ``user=`` of
    the SASL message and its ``scope`` holds ``scope`` (if set). A bad token gets Gmail's answer: a ``334``
    challenge with a base64 JSON error (``{"status":"400","schemes":"Bearer","scope":...}``), then, after
    the client's reply, ``535 5.7.8``. An unreachable or failing introspection endpoint gives ``454 4.7.0``
    (temporary failure).
    """

    introspection_url: str
    client_id: str
    client_secret: str
    scope: str | None = None
    username_attribute: str = "username"
    openid_configuration_url: str | None = None
    #: ``verify=`` for httpx (an SSLContext for an https provider).
    verify: Any = True

    @classmethod
    def for_server(cls, server: _IntrospectionSource, **overrides: Any) -> XOAuth2:
        """Settings for a running ``tests.support.oauth_server.OAuthServer`` (SMTP scope required)."""
        settings: dict[str, Any] = {
            "introspection_url": server.introspection.url,
            "client_id": server.introspection.client_id,
            "client_secret": server.introspection.client_secret,
            "scope": server.smtp_scope,
            "openid_configuration_url": server.discovery_url,
            "verify": server.verify,
        }
        settings.update(overrides)
        return cls(**settings)


class TokenLogin(NamedTuple):
    """``session.auth_data`` after a bearer-token login (``login`` like aiosmtpd's ``LoginPassword``)."""

    login: bytes
    mechanism: str


class _LongLineSMTP(SMTP):
    """aiosmtpd with room for bearer tokens: an ``AUTH XOAUTH2 <base64>`` line carrying a Microsoft access
    token is several kB, over RFC 5321's 512-octet command and 1000-octet line limits aiosmtpd enforces."""

    line_length_limit = 32 * 1024
    command_size_limit = 32 * 1024
    # The base class's defaultdict falls back to SMTP.command_size_limit, not the subclass's.
    command_size_limits: dict[str, int] = collections.defaultdict(lambda: _LongLineSMTP.command_size_limit)


class _LongLineController(Controller):
    def factory(self) -> SMTP:
        return _LongLineSMTP(self.handler, **self.SMTP_kwargs)


class _OAuth2Handler(_Handler):
    def __init__(self, server: SmtpServer, settings: XOAuth2) -> None:
        super().__init__(server)
        self.settings = settings

    async def auth_XOAUTH2(self, smtp: SMTP, args: list[str]) -> AuthResult:
        # user=<user>^Aauth=Bearer <token>^A^A
        message = await self._initial_response(smtp, args)
        if message is None:
            return AuthResult(success=False, handled=True)
        fields = dict(part.split("=", 1) for part in message.split("\x01") if "=" in part)
        return await self._check(smtp, "XOAUTH2", fields.get("user", ""), fields.get("auth", ""))

    async def auth_OAUTHBEARER(self, smtp: SMTP, args: list[str]) -> AuthResult:
        # n,a=<user>,^Aauth=Bearer <token>^A^A  (RFC 7628)
        message = await self._initial_response(smtp, args)
        if message is None:
            return AuthResult(success=False, handled=True)
        gs2, _, rest = message.partition("\x01")
        user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), "")
        user = user.replace("=2C", ",").replace("=3D", "=")
        fields = dict(part.split("=", 1) for part in rest.split("\x01") if "=" in part)
        return await self._check(smtp, "OAUTHBEARER", user, fields.get("auth", ""))

    async def _initial_response(self, smtp: SMTP, args: list[str]) -> str | None:
        if len(args) > 1:
            try:
                raw = base64.b64decode(args[1], validate=True)
            except (binascii.Error, ValueError):
                await smtp.push("501 5.5.2 Can't decode base64")
                return None
        else:
            answer = await smtp.challenge_auth("")
            if answer is MISSING:
                return None
            raw = bytes(answer)
        return raw.decode("utf-8", errors="replace")

    async def _check(self, smtp: SMTP, mechanism: str, user: str, authorization: str) -> AuthResult:
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        settings = self.settings
        try:
            async with httpx.AsyncClient(verify=settings.verify, timeout=10) as http:
                resp = await http.post(
                    settings.introspection_url,
                    data={"token": token},
                    auth=(settings.client_id, settings.client_secret),
                )
            resp.raise_for_status()
            info = resp.json()
        except (httpx.HTTPError, ValueError):
            self.server.token_logins.append((mechanism, user, False))
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        ok = (
            bool(token and user)
            and info.get("active") is True
            and info.get(settings.username_attribute) == user
            and (not settings.scope or settings.scope in str(info.get("scope", "")).split())
        )
        self.server.token_logins.append((mechanism, user, ok))
        if ok:
            return AuthResult(success=True, auth_data=TokenLogin(user.encode(), mechanism))
        error: dict[str, str] = {"status": "400" if mechanism == "XOAUTH2" else "invalid_token", "schemes": "Bearer"}
        if settings.scope:
            error["scope"] = settings.scope
        if settings.openid_configuration_url and mechanism == "OAUTHBEARER":
            error["openid-configuration"] = settings.openid_configuration_url
        # The client answers the error challenge (an empty line per RFC 7628; smtplib resends its token).
        if await smtp.challenge_auth(json.dumps(error, separators=(",", ":"))) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted. (test server)"
        )
