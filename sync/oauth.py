"""Sign-in with Google and Microsoft, the protocol side: provider settings, discovery, the code exchange with
PKCE, id token checks, refreshing and revoking tokens.

Every HTTP exchange goes through Authlib's requests client (Authlib's httpx integration warns that it is
deprecated); there is no Slack and no web framework here. Endpoints and the issuer come from each provider's
discovery document, so tests (and sovereign clouds) point one URL elsewhere.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.clock import utcnow
from sync.errors import AuthFailed, SyncError, Throttled
from sync.imap_session import Security

# requests, Authlib and joserfc (a quarter of a second at start) are imported where a sign-in needs them:
# every command reads the providers from the settings, few of them talk to a provider.
if TYPE_CHECKING:
    import requests
    from authlib.integrations.requests_client import OAuth2Session
    from joserfc.jwk import KeySet

log = logging.getLogger(__name__)

GOOGLE = "google"
MICROSOFT = "microsoft"
PROVIDER_NAMES = (GOOGLE, MICROSOFT)
DISPLAY_NAMES = {GOOGLE: "Google", MICROSOFT: "Microsoft"}
GOOGLE_MAIL_SCOPE = "https://mail.google.com/"
MICROSOFT_IMAP_SCOPE = "https://outlook.office.com/IMAP.AccessAsUser.All"
MICROSOFT_SMTP_SCOPE = "https://outlook.office.com/SMTP.Send"
HTTP_TIMEOUT = 10.0  # seconds per request to a provider
METADATA_TTL = 3600.0  # seconds a discovery document or key set is reused
ID_TOKEN_LEEWAY = 120  # seconds of clock skew allowed on exp/iat
_SERVER = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\s]+):(?P<port>\d{1,5})(?:/(?P<security>tls|starttls))?$")


class ProviderUnavailable(SyncError):
    """The provider's token endpoint is down, unreachable or answered 5xx: transient, nobody needs to act."""

    code = "provider_unavailable"


class ProviderThrottled(Throttled):
    """The provider answered 429: wait as it asks (Retry-After), nobody needs to act."""

    code = "provider_unavailable"


class GrantRevoked(AuthFailed):
    """The provider no longer honours the refresh token (invalid_grant): the person must sign in again."""


class ProviderRefused(SyncError):
    """The provider refused the app itself (invalid_client, unauthorized_client, ...): an operator must look."""

    code = "provider_refused"


class IdTokenInvalid(Exception):
    """The id token of a sign-in failed a check (signature, issuer, audience, expiry, nonce, email)."""


@dataclass(frozen=True)
class MailServer:
    """A provider's IMAP or SMTP server as configured: host, port and security."""

    host: str
    port: int
    security: Security

    @classmethod
    def parse(cls, text: str, *, starttls_ports: tuple[int, ...]) -> MailServer:
        """`host:port`, optionally `/tls` or `/starttls`; without it the port decides (587 and 143 mean STARTTLS)."""
        found = _SERVER.match(text.strip())
        if not found or not 0 < int(found["port"]) < 65536:
            example = "imap.gmail.com:993 or smtp.example.com:587/starttls"
            raise ValueError(f"{text!r} is not host:port (for example {example})")
        port = int(found["port"])
        security: Security = "starttls" if port in starttls_ports else "tls"
        if found["security"]:
            security = "starttls" if found["security"] == "starttls" else "tls"
        return cls(found["host"].strip("[]"), port, security)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}/{self.security}"


@dataclass(frozen=True)
class OAuthProvider:
    """One provider the app signs people in with (a confidential client; the secret never shows in repr)."""

    name: str
    client_id: str
    client_secret: str = field(repr=False)
    discovery_url: str
    imap: MailServer
    smtp: MailServer
    scopes: tuple[str, ...]
    mail_scopes: tuple[str, ...]  # what the granted scope must hold for IMAP and SMTP to work
    authorize_params: tuple[tuple[str, str], ...] = ()
    token_auth_method: str = "client_secret_basic"

    @property
    def display_name(self) -> str:
        """Google or Microsoft."""
        return DISPLAY_NAMES.get(self.name, self.name)


def google_provider(client_id: str, client_secret: str, discovery_url: str, imap: str, smtp: str) -> OAuthProvider:
    """Google: https://mail.google.com/ covers IMAP and SMTP; access_type=offline brings the refresh token and
    prompt=consent brings it again for someone who signed in before (Google sends it on first consent only)."""
    return OAuthProvider(
        name=GOOGLE,
        client_id=client_id,
        client_secret=client_secret,
        discovery_url=discovery_url,
        imap=MailServer.parse(imap, starttls_ports=(143,)),
        smtp=MailServer.parse(smtp, starttls_ports=(25, 587, 2525)),
        scopes=(GOOGLE_MAIL_SCOPE, "openid", "email"),
        mail_scopes=(GOOGLE_MAIL_SCOPE,),
        authorize_params=(("access_type", "offline"), ("prompt", "consent")),
        token_auth_method="client_secret_basic",
    )


def microsoft_provider(
    client_id: str, client_secret: str, discovery_url: str, tenant: str, imap: str, smtp: str
) -> OAuthProvider:
    """Microsoft (Entra ID, v2.0 endpoints): delegated IMAP and SMTP scopes, offline_access for a refresh token."""
    return OAuthProvider(
        name=MICROSOFT,
        client_id=client_id,
        client_secret=client_secret,
        discovery_url=discovery_url.replace("{tenant}", tenant),
        imap=MailServer.parse(imap, starttls_ports=(143,)),
        smtp=MailServer.parse(smtp, starttls_ports=(25, 587, 2525)),
        scopes=(MICROSOFT_IMAP_SCOPE, MICROSOFT_SMTP_SCOPE, "offline_access", "openid", "email"),
        mail_scopes=(MICROSOFT_IMAP_SCOPE, MICROSOFT_SMTP_SCOPE),
        token_auth_method="client_secret_post",
    )


@dataclass(frozen=True)
class ProviderMetadata:
    """What the discovery document says (only the parts used here)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    revocation_endpoint: str | None


@dataclass(frozen=True)
class TokenSet:
    """Tokens from the token endpoint; none of them ever shows in repr."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: dt.datetime
    scope: str
    id_token: str | None = field(default=None, repr=False)

    def grants(self, scopes: tuple[str, ...]) -> bool:
        """True when every one of `scopes` was granted."""
        granted = set(self.scope.split())
        return all(s in granted for s in scopes)


@dataclass(frozen=True)
class Identity:
    """Who signed in, from a verified id token."""

    email: str
    subject: str
    tenant: str | None = None


@dataclass
class _Cached:
    value: Any
    until: float


class OAuthProviders:
    """The configured providers, with their discovery documents and key sets cached (thread-safe)."""

    def __init__(
        self,
        providers: Mapping[str, OAuthProvider] | None = None,
        *,
        missing: Mapping[str, str] | None = None,
        verify: bool | str | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> None:
        self.providers = dict(providers or {})
        self.missing = dict(missing or {})  # provider name -> why it is off, for the log and doctor
        # requests trusts certifi by default; SSL_CERT_FILE (the app's documented private-CA setting) wins.
        self.verify: bool | str = verify if verify is not None else (os.environ.get("SSL_CERT_FILE") or True)
        self.timeout = timeout
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OAuthProviders({sorted(self.providers)})"

    def get(self, name: str) -> OAuthProvider | None:
        """A configured provider by name, or None."""
        return self.providers.get(name)

    def configured(self) -> list[OAuthProvider]:
        """The providers people can sign in with, Google first."""
        return [self.providers[n] for n in PROVIDER_NAMES if n in self.providers]

    # ---- discovery and keys --------------------------------------------------------------------------

    def metadata(self, provider: OAuthProvider) -> ProviderMetadata:
        """The provider's endpoints and issuer from its discovery document (cached for an hour)."""
        from authlib.common.security import is_secure_transport

        doc = self._get_json(f"discovery:{provider.name}", provider.discovery_url)
        try:
            meta = ProviderMetadata(
                issuer=str(doc["issuer"]),
                authorization_endpoint=str(doc["authorization_endpoint"]),
                token_endpoint=str(doc["token_endpoint"]),
                jwks_uri=str(doc["jwks_uri"]),
                revocation_endpoint=str(doc["revocation_endpoint"]) if doc.get("revocation_endpoint") else None,
            )
        except (KeyError, TypeError):
            self._forget(f"discovery:{provider.name}")
            raise ProviderRefused(
                f"The {provider.display_name} discovery document lacks an endpoint.",
                f"An operator must check the {provider.name.upper()}_OIDC_DISCOVERY_URL setting.",
            ) from None
        for url in (meta.authorization_endpoint, meta.token_endpoint, meta.jwks_uri, meta.revocation_endpoint):
            # Tokens and codes travel to these: HTTPS only (plain http on loopback is for tests and laptops).
            if url is not None and not is_secure_transport(url):
                raise ProviderRefused(
                    f"The {provider.display_name} discovery document names a plain-http endpoint.",
                    "An operator must point the discovery URL at the provider's HTTPS document.",
                )
        return meta

    def _keys(self, provider: OAuthProvider, *, refetch: bool = False) -> KeySet:
        from joserfc.jwk import KeySet

        meta = self.metadata(provider)
        key = f"jwks:{provider.name}"
        if refetch:
            self._forget(key)
        return KeySet.import_key_set(self._get_json(key, meta.jwks_uri))  # type: ignore[arg-type]

    def _get_json(self, key: str, url: str) -> dict[str, Any]:
        import requests
        from authlib.common.security import is_secure_transport

        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached.until > time.monotonic():
            return dict(cached.value)
        if not is_secure_transport(url):
            raise ProviderRefused(f"{url} is not HTTPS.", "An operator must use the provider's HTTPS address.")
        try:
            resp = requests.get(url, timeout=self.timeout, verify=self.verify)
        except requests.RequestException as exc:
            raise ProviderUnavailable(
                f"The sign-in service did not answer ({type(exc).__name__}).", "It is tried again automatically."
            ) from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise ProviderUnavailable(f"The sign-in service answered {resp.status_code}.", "It is tried again later.")
        try:
            value = resp.json()
            resp.raise_for_status()
        except (ValueError, requests.HTTPError):
            raise ProviderRefused(
                f"{url} did not answer with a JSON document (HTTP {resp.status_code}).",
                "An operator must check the discovery URL setting.",
            ) from None
        if not isinstance(value, dict):
            raise ProviderRefused(f"{url} did not answer with a JSON object.", "An operator must check the setting.")
        with self._lock:
            self._cache[key] = _Cached(value, time.monotonic() + METADATA_TTL)
        return value

    def _forget(self, key: str) -> None:
        with self._lock:
            self._cache.pop(key, None)

    # ---- the authorization code flow ---------------------------------------------------------------------

    def authorization_url(
        self,
        provider: OAuthProvider,
        *,
        redirect_uri: str,
        state: str,
        code_verifier: str,
        nonce: str,
        login_hint: str | None = None,
        select_account: bool = False,
    ) -> str:
        """Where to send the browser: code flow, PKCE S256, state, nonce, the provider's offline-access way."""
        meta = self.metadata(provider)
        params: dict[str, str] = dict(provider.authorize_params)
        params["nonce"] = nonce
        if login_hint:
            params["login_hint"] = login_hint
        if select_account:  # "sign in again": let the person pick another account
            params["prompt"] = " ".join(filter(None, (params.get("prompt"), "select_account")))
        with self._session(provider, redirect_uri=redirect_uri) as session:
            url, _ = session.create_authorization_url(
                meta.authorization_endpoint, state=state, code_verifier=code_verifier, **params
            )
        return str(url)

    def exchange_code(self, provider: OAuthProvider, *, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        """The token endpoint's answer for an authorization code (raises ProviderUnavailable, ProviderRefused)."""
        meta = self.metadata(provider)
        with self._session(provider, redirect_uri=redirect_uri) as session:
            raw = self._call(
                provider,
                lambda: session.fetch_token(
                    meta.token_endpoint, grant_type="authorization_code", code=code, code_verifier=code_verifier
                ),
            )
        # RFC 6749 5.1: a response without `scope` granted what was asked.
        return _token_set(raw, previous_refresh=None, default_scope=" ".join(provider.scopes))

    def verify_id_token(self, provider: OAuthProvider, id_token: str, *, nonce: str) -> Identity:
        """Check the id token (signature by the provider's published keys, issuer, audience, expiry, nonce) and
        return the verified address; IdTokenInvalid says what failed."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        meta = self.metadata(provider)
        try:
            try:
                token = jwt.decode(id_token, self._keys(provider), algorithms=["RS256"])
            except JoseError:
                # Keys rotate: a key id we do not know yet may have been published since we cached the set.
                token = jwt.decode(id_token, self._keys(provider, refetch=True), algorithms=["RS256"])
        except (JoseError, ValueError) as exc:
            raise IdTokenInvalid(f"signature ({type(exc).__name__})") from None
        claims = dict(token.claims)
        issuer = meta.issuer
        if "{tenantid}" in issuer:
            # Microsoft's common/organizations/consumers documents name the issuer with a placeholder; each
            # token carries its tenant in `tid`, and `iss` must be the template filled with it.
            tenant = claims.get("tid")
            if not isinstance(tenant, str) or not re.fullmatch(r"[0-9a-fA-F-]{8,64}", tenant):
                raise IdTokenInvalid("tenant")
            issuer = issuer.replace("{tenantid}", tenant)
        issuers = [issuer]
        if issuer == "https://accounts.google.com":
            issuers.append("accounts.google.com")  # Google documents both spellings of its `iss`
        registry = jwt.JWTClaimsRegistry(
            leeway=ID_TOKEN_LEEWAY,
            iss={"essential": True, "values": issuers},
            aud={"essential": True, "value": provider.client_id},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise IdTokenInvalid(getattr(exc, "claim", None) or type(exc).__name__) from None
        email = _verified_email(provider, claims)
        return Identity(email=email, subject=str(claims["sub"]), tenant=claims.get("tid"))

    # ---- living with the tokens --------------------------------------------------------------------------

    def refresh(self, provider: OAuthProvider, refresh_token: str) -> TokenSet:
        """New tokens for a refresh token; a provider that rotates refresh tokens sends a new one too.

        Raises GrantRevoked (invalid_grant: sign in again), ProviderUnavailable/ProviderThrottled (transient)
        or ProviderRefused (the app's own registration is at fault).
        """
        meta = self.metadata(provider)
        with self._session(provider) as session:
            raw = self._call(provider, lambda: session.refresh_token(meta.token_endpoint, refresh_token=refresh_token))
        return _token_set(raw, previous_refresh=refresh_token)

    def revoke(self, provider: OAuthProvider, token: str, *, hint: str = "refresh_token") -> bool:
        """Revoke a token where the provider offers revocation (Google does, Microsoft does not); never raises."""
        try:
            meta = self.metadata(provider)
            if meta.revocation_endpoint is None:
                log.info("%s offers no token revocation; the grant ends when the person removes the app", provider.name)
                return False
            with self._session(provider) as session:
                resp = session.revoke_token(meta.revocation_endpoint, token=token, token_type_hint=hint)
            if resp.status_code >= 400:
                log.warning("%s token revocation answered %s", provider.name, resp.status_code)
                return False
            return True
        except Exception as exc:  # best effort: a disconnect never waits on, or fails by, the provider
            log.warning("%s token revocation failed (%s)", provider.name, type(exc).__name__)
            return False

    # ---- plumbing ---------------------------------------------------------------------------------------

    def _session(self, provider: OAuthProvider, *, redirect_uri: str | None = None) -> OAuth2Session:
        from authlib.integrations.requests_client import OAuth2Session

        session = OAuth2Session(
            client_id=provider.client_id,
            client_secret=provider.client_secret,
            token_endpoint_auth_method=provider.token_auth_method,
            revocation_endpoint_auth_method=provider.token_auth_method,
            scope=" ".join(provider.scopes) if redirect_uri else None,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            default_timeout=self.timeout,
        )
        session.verify = self.verify
        for hook in ("access_token_response", "refresh_token_response"):
            session.register_compliance_hook(hook, _raise_when_unavailable)
        return session

    def _call(self, provider: OAuthProvider, call: Any) -> dict[str, Any]:
        import requests
        from authlib.integrations.base_client import OAuthError

        try:
            return dict(call())
        except OAuthError as exc:
            if exc.error == "invalid_grant":
                raise GrantRevoked(
                    f"{provider.display_name} no longer accepts this app's access to the mailbox "
                    "(the sign-in was revoked, expired or its password changed).",
                    f"Reconnect and sign in with {provider.display_name} again.",
                ) from None
            log.warning("%s token endpoint refused the app: %s", provider.name, exc.error)
            raise ProviderRefused(
                f"{provider.display_name} refused the app's sign-in request ({exc.error}).",
                f"An operator must check the {provider.name.upper()}_CLIENT_ID and _CLIENT_SECRET settings.",
            ) from None
        except (ProviderUnavailable, ProviderThrottled):
            raise
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(
                f"{provider.display_name}'s sign-in service did not answer ({type(exc).__name__}).",
                "It is tried again automatically.",
            ) from None


def _raise_when_unavailable(resp: requests.Response) -> requests.Response:
    """A compliance hook: 429 and 5xx are the provider's trouble, never a verdict on the grant."""
    if resp.status_code == 429:
        raise ProviderThrottled(
            "The sign-in service asked us to slow down.",
            "It is tried again automatically.",
            retry_after=_retry_after(resp.headers.get("retry-after")),
        )
    if resp.status_code >= 500:
        raise ProviderUnavailable(
            f"The sign-in service is unavailable (HTTP {resp.status_code}).", "It is tried again automatically."
        )
    return resp


def _retry_after(value: str | None) -> float:
    if value and value.strip().isdigit():
        return float(min(int(value), 3600))
    return 60.0


def _token_set(raw: Mapping[str, Any], *, previous_refresh: str | None, default_scope: str = "") -> TokenSet:
    access = raw.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProviderRefused("The sign-in service sent no access token.", "Try again.")
    try:
        lifetime = float(raw.get("expires_in") or 3600)
    except (TypeError, ValueError):
        lifetime = 3600.0
    refresh = raw.get("refresh_token") or previous_refresh
    return TokenSet(
        access_token=access,
        refresh_token=str(refresh) if refresh else None,
        expires_at=utcnow() + dt.timedelta(seconds=max(0.0, lifetime)),
        scope=str(raw.get("scope") or default_scope),
        id_token=str(raw["id_token"]) if raw.get("id_token") else None,
    )


def _verified_email(provider: OAuthProvider, claims: Mapping[str, Any]) -> str:
    """The address the provider vouches for: `email` (Google: only with email_verified), else Microsoft's
    `preferred_username` when it is an address."""
    email = claims.get("email")
    verified = claims.get("email_verified")
    if provider.name == GOOGLE and verified is not True:
        raise IdTokenInvalid("email_verified")
    if verified is False:
        raise IdTokenInvalid("email_verified")
    if not isinstance(email, str) and provider.name == MICROSOFT:
        email = claims.get("preferred_username")
    if not isinstance(email, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        raise IdTokenInvalid("email")
    return email.strip().lower()
