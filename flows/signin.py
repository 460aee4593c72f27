"""Sign in with Google or Microsoft for a connect link, without Slack or a web framework.

start: a one-time `state` (stored hashed) bound to the link, and so to its team and person, and to the
browser that began (a key the page puts in a cookie, stored hashed); the PKCE verifier and nonce are stored
encrypted with the setup session and end with it. resume: the provider sent the browser back; the state is
used up whatever happens next. authenticate: the code is exchanged (Authlib), the id token checked, the
address taken from it. Then either the addresses agree and the mailbox is tested (IMAP XOAUTH2 + LIST, SMTP
XOAUTH2, under the connect page's deadline, limits and outbound policy) and stored exactly as a password is
(setup.store_connection), or the person typed another address and chooses: nothing is stored until then.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets as pysecrets
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from flows.accounts import CONNECT_DEADLINE_SECONDS
from flows.connect_limits import AttemptLimits
from flows.setup import LinkProblem, LinkRef, SetupState, check_with_limits, link_of, store_connection
from models import accounts as account_queries
from models import setup_sessions as setup_queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox, SecretKeyError
from sync.imap_session import STRICT_POLICY, ImapLogin, SslContextFactory, default_ssl_context
from sync.oauth import IdTokenInvalid, OAuthProvider, OAuthProviders, TokenSet
from sync.outbound import OutboundPolicy
from sync.smtp_check import SmtpLogin

log = logging.getLogger(__name__)

CALLBACK_PATH = "/oauth/callback"
REFUSALS = {
    "unknown": (
        "This sign-in is not valid",
        "It was used already, it expired, or it did not start on this page. Open your connect link again.",
    ),
    "browser": (
        "This sign-in started somewhere else",
        "It began in another browser or for another person's link, so nothing was connected. "
        "Open your own connect link from Slack and sign in from there.",
    ),
    "denied": ("Sign-in cancelled", "Nothing was connected. You can sign in again or use a password."),
    "failed": ("The sign-in could not be checked", "Nothing was connected. Sign in again."),
    "scope": (
        "Access to your mail was not allowed",
        "Nothing was connected. Sign in again and allow access to your email (keep every box ticked).",
    ),
    "no_refresh": (
        "The sign-in gave no lasting access",
        "Nothing was connected. Sign in again; if it repeats, an operator must check the app's registration.",
    ),
}


class SignInRefused(Exception):
    """A sign-in that cannot go on; `reason` is a key of REFUSALS. `token` is the connect token when known
    (so the page can offer to try again)."""

    def __init__(self, reason: str, token: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.token = token


@dataclass(frozen=True)
class SignInStart:
    """Where to send the browser, and the key the browser keeps (in a cookie) to come back with."""

    authorize_url: str
    browser_key: str = field(repr=False)


@dataclass(frozen=True)
class Flow:
    """A sign-in in progress, decrypted (never logged: it holds the PKCE verifier and maybe tokens)."""

    session_id: int
    team_id: str
    user_id: str
    token: str = field(repr=False)  # the connect token, to render the connect page again
    token_hash: str = field(repr=False)
    provider: str
    verifier: str = field(repr=False)
    nonce: str = field(repr=False)
    typed: str  # the address typed on the page ("" if none)
    expected: str  # a reconnect's address ("" for a new setup)
    redirect_uri: str
    browser: str = field(repr=False)
    stage: str = "authorize"  # authorize | choose
    email: str = ""  # the signed-in address (stage choose)
    tokens: dict[str, Any] = field(default_factory=dict, repr=False)  # held while the person chooses

    @property
    def link(self) -> LinkRef:
        """The connect link this sign-in belongs to."""
        return LinkRef(self.session_id, self.team_id, self.user_id, self.token_hash)

    def held_tokens(self) -> TokenSet:
        """The tokens held while the person chooses."""
        t = self.tokens
        return TokenSet(
            access_token=t["access_token"],
            refresh_token=t.get("refresh_token"),
            expires_at=dt.datetime.fromisoformat(t["expires_at"]),
            scope=t.get("scope", ""),
        )


@dataclass(frozen=True)
class SignedIn:
    """A checked sign-in: the verified address and the tokens."""

    email: str
    tokens: TokenSet


@dataclass(frozen=True)
class Choice:
    """The typed and the signed-in address differ: the person chooses (`choice_key` answers once)."""

    typed: str
    signed_in: str
    choice_key: str = field(repr=False)
    can_connect: bool  # False for a reconnect: it may only reconnect its own address
    token: str = field(repr=False)
    provider: str = ""


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def start(
    db: Engine,
    box: SecretBox,
    oauth: OAuthProviders,
    token: str,
    provider_name: str,
    *,
    redirect_uri: str,
    typed_email: str = "",
    select_account: bool = False,
) -> SignInStart:
    """Begin a sign-in for a connect link (LinkProblem for a bad link, KeyError for an unknown provider).

    The discovery document is read here (HTTP, cached): call it off any event loop.
    """
    provider = oauth.get(provider_name)
    if provider is None:
        raise KeyError(provider_name)
    link = link_of(db, token)
    typed = typed_email.strip().lower()
    with session_scope(db, readonly=True) as session:
        row = setup_queries.get_session(session, link.session_id)
        account = account_queries.get_account(session, row.account_id) if row and row.account_id else None
        expected = account.email if row is not None and row.purpose == "reconnect" and account is not None else ""
    state, browser = pysecrets.token_urlsafe(32), pysecrets.token_urlsafe(32)
    verifier, nonce = pysecrets.token_urlsafe(64), pysecrets.token_urlsafe(24)
    url = oauth.authorization_url(
        provider,
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=verifier,
        nonce=nonce,
        login_hint=expected or typed or None,
        select_account=select_account,
    )
    flow = {
        "stage": "authorize",
        "provider": provider.name,
        "token": token,
        "token_hash": link.token_hash,
        "verifier": verifier,
        "nonce": nonce,
        "typed": typed,
        "expected": expected,
        "redirect_uri": redirect_uri,
        "browser": _hash(browser),
    }
    with session_scope(db) as session:
        setup_queries.arm_sign_in(
            session, link.session_id, state_hash=_hash(state), flow_encrypted=box.encrypt(json.dumps(flow))
        )
    return SignInStart(authorize_url=url, browser_key=browser)


def resume(db: Engine, box: SecretBox, key: str, browser_key: str, *, stage: str = "authorize") -> Flow:
    """The sign-in a `state` (or a choice key) belongs to; the key is used up here, whatever follows.

    SignInRefused: "unknown" (tampered, replayed, or the link moved on), "browser" (not the browser that
    began: another person's link, or a forwarded callback). LinkProblem when the link expired or was used.
    """
    refusal: str | None = None
    flow: Flow | None = None
    problem: str | None = None
    with session_scope(db) as session:
        row = setup_queries.consume_sign_in(session, _hash(key)) if key else None
        if row is None or not row.oauth_flow_encrypted or row.id is None:
            refusal = "unknown"
        else:
            try:
                data = json.loads(box.decrypt(row.oauth_flow_encrypted))
            except (SecretKeyError, ValueError):
                data = {}
            if data.get("stage") != stage or data.get("token_hash") != row.token_hash:
                refusal = "unknown"
            elif not browser_key or not hmac.compare_digest(_hash(browser_key), str(data.get("browser", ""))):
                refusal = "browser"
            else:
                flow = _flow_of(row.id, row.team_id, row.user_id, data)
                if row.locked_reason is not None:
                    problem = "locked"
                elif row.used_at is not None:
                    problem = "used"
                elif row.expires_at <= utcnow():
                    problem = "expired"
            if refusal is not None or problem is not None:
                setup_queries.end_sign_in(session, row.id)  # its verifier and any held tokens go now
    # Raised only now, after the commit: a refused key stays used up.
    if problem is not None:
        raise LinkProblem(problem)
    if refusal is not None or flow is None:
        log.warning("sign-in refused: %s", refusal)
        raise SignInRefused(refusal or "unknown")
    return flow


def _flow_of(session_id: int, team_id: str, user_id: str, data: dict[str, Any]) -> Flow:
    return Flow(
        session_id=session_id,
        team_id=team_id,
        user_id=user_id,
        token=str(data["token"]),
        token_hash=str(data["token_hash"]),
        provider=str(data["provider"]),
        verifier=str(data["verifier"]),
        nonce=str(data["nonce"]),
        typed=str(data.get("typed", "")),
        expected=str(data.get("expected", "")),
        redirect_uri=str(data["redirect_uri"]),
        browser=str(data["browser"]),
        stage=str(data.get("stage", "authorize")),
        email=str(data.get("email", "")),
        tokens=dict(data.get("tokens") or {}),
    )


def provider_of(oauth: OAuthProviders, flow: Flow) -> OAuthProvider:
    """The flow's provider (refused when the operator turned it off meanwhile)."""
    provider = oauth.get(flow.provider)
    if provider is None:
        raise SignInRefused("failed", flow.token)
    return provider


def authenticate(oauth: OAuthProviders, flow: Flow, *, code: str) -> SignedIn:
    """Exchange the code (with the PKCE verifier) and check the id token; the address is the token's.

    SignInRefused when the answer cannot be trusted or lacks what the mailbox needs; a SyncError
    (ProviderUnavailable, ProviderRefused) when the provider did not answer properly. HTTP: off the event loop.
    """
    provider = provider_of(oauth, flow)
    tokens = oauth.exchange_code(provider, code=code, code_verifier=flow.verifier, redirect_uri=flow.redirect_uri)
    if not tokens.id_token:
        raise SignInRefused("failed", flow.token)
    try:
        identity = oauth.verify_id_token(provider, tokens.id_token, nonce=flow.nonce)
    except IdTokenInvalid as exc:
        log.warning("sign-in with %s refused: id token check failed (%s)", provider.name, exc)
        _discard(oauth, provider, tokens)
        raise SignInRefused("failed", flow.token) from None
    if not tokens.grants(provider.mail_scopes):
        _discard(oauth, provider, tokens)
        raise SignInRefused("scope", flow.token)
    if not tokens.refresh_token:
        _discard(oauth, provider, tokens)
        raise SignInRefused("no_refresh", flow.token)
    return SignedIn(email=identity.email, tokens=tokens)


def needs_choice(flow: Flow, signed_in: SignedIn) -> bool:
    """True when the person typed (or reconnects) another address than the one signed in."""
    wanted = flow.expected or flow.typed
    return bool(wanted) and wanted != signed_in.email


def hold_for_choice(db: Engine, box: SecretBox, flow: Flow, signed_in: SignedIn) -> Choice:
    """Keep the tokens (encrypted, with the link) while the person chooses; nothing else is stored."""
    key = pysecrets.token_urlsafe(32)
    t = signed_in.tokens
    data = {
        **_flow_data(flow),
        "stage": "choose",
        "email": signed_in.email,
        "tokens": {
            "access_token": t.access_token,
            "refresh_token": t.refresh_token,
            "expires_at": t.expires_at.isoformat(),
            "scope": t.scope,
        },
    }
    with session_scope(db) as session:
        setup_queries.arm_sign_in(
            session, flow.session_id, state_hash=_hash(key), flow_encrypted=box.encrypt(json.dumps(data))
        )
    return Choice(
        typed=flow.expected or flow.typed,
        signed_in=signed_in.email,
        choice_key=key,
        can_connect=not flow.expected,
        token=flow.token,
        provider=flow.provider,
    )


def _flow_data(flow: Flow) -> dict[str, Any]:
    return {
        "stage": flow.stage,
        "provider": flow.provider,
        "token": flow.token,
        "token_hash": flow.token_hash,
        "verifier": flow.verifier,
        "nonce": flow.nonce,
        "typed": flow.typed,
        "expected": flow.expected,
        "redirect_uri": flow.redirect_uri,
        "browser": flow.browser,
    }


def chosen(flow: Flow) -> SignedIn:
    """The sign-in held while the person chose."""
    if flow.stage != "choose" or not flow.email or not flow.tokens:
        raise SignInRefused("unknown", flow.token)
    return SignedIn(email=flow.email, tokens=flow.held_tokens())


def connect(
    db: Engine,
    box: SecretBox,
    oauth: OAuthProviders,
    flow: Flow,
    signed_in: SignedIn,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    deadline_seconds: float = CONNECT_DEADLINE_SECONDS,
    limits: AttemptLimits = AttemptLimits(),
) -> SetupState:
    """Test the provider's IMAP (XOAUTH2 + LIST) and SMTP (XOAUTH2) with the new token, then store the account
    exactly as a password connection is stored (same link rules). A failure discards the tokens."""
    provider = provider_of(oauth, flow)
    email, tokens = signed_in.email, signed_in.tokens
    access = tokens.access_token
    imap = ImapLogin(provider.imap.host, provider.imap.port, provider.imap.security, email, access, mechanism="xoauth2")
    smtp = SmtpLogin(provider.smtp.host, provider.smtp.port, provider.smtp.security, email, access, mechanism="xoauth2")
    try:
        remote = check_with_limits(
            db,
            flow.link,
            imap,
            smtp,
            timeout=timeout,
            ssl_context=ssl_context,
            outbound=outbound,
            deadline_seconds=deadline_seconds,
            limits=limits,
        )
        fields: dict[str, Any] = {
            "imap_host": provider.imap.host,
            "imap_port": provider.imap.port,
            "imap_security": provider.imap.security,
            "username": email,
            "secret_encrypted": "",
            "smtp_host": provider.smtp.host,
            "smtp_port": provider.smtp.port,
            "smtp_security": provider.smtp.security,
            "auth_kind": "oauth",
            "oauth_provider": provider.name,
            "oauth_access_encrypted": box.encrypt(access),
            "oauth_refresh_encrypted": box.encrypt(tokens.refresh_token or ""),
            "oauth_expires_at": tokens.expires_at,
            "oauth_scope": tokens.scope,
        }
        return store_connection(db, flow.link, email, fields, remote)
    except BaseException:
        end(db, flow)
        _discard(oauth, provider, tokens)
        raise


def end(db: Engine, flow: Flow) -> None:
    """Forget a sign-in (its verifier and any tokens held) without storing anything."""
    with session_scope(db) as session:
        setup_queries.end_sign_in(session, flow.session_id)


def discard(oauth: OAuthProviders, flow: Flow, signed_in: SignedIn) -> None:
    """Give back tokens that will not be used (the person signs in again instead); best effort."""
    provider = oauth.get(flow.provider)
    if provider is not None:
        _discard(oauth, provider, signed_in.tokens)


def _discard(oauth: OAuthProviders, provider: OAuthProvider, tokens: TokenSet) -> None:
    # A grant nobody will use should not linger in the person's "apps with access" list.
    if tokens.refresh_token:
        oauth.revoke(provider, tokens.refresh_token, hint="refresh_token")
    else:
        oauth.revoke(provider, tokens.access_token, hint="access_token")
