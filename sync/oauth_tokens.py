"""Access tokens of accounts signed in with Google or Microsoft, refreshed only by the holder of the account's lease.

A refresh token that rotates works once: two processes refreshing one account at once would leave one of them
with a dead token (and some providers revoke the whole grant on reuse). So a refresh happens only under the
sync lease (the engine holds it for a slice; preview and doctor borrow it when it is free), the lease is checked
before the refresh token is spent, and the new tokens are committed, behind the same fence as every engine write,
before the new access token is used.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session

from models import accounts as account_queries
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox, SecretKeyError
from models.tables import EmailAccount
from sync.errors import LeaseLost, ProtocolError, Throttled
from sync.imap_session import ImapLogin, account_login
from sync.oauth import DISPLAY_NAMES, OAuthProvider, OAuthProviders, ProviderRefused

log = logging.getLogger(__name__)

Fence = Callable[[], AbstractContextManager[Session]]  # a write transaction that first checks the lease
OUTSIDE_MARGIN = 60.0  # seconds: preview and doctor use a stored token that lives at least this long
BORROW_WAIT = 10.0  # seconds preview and doctor wait for a running sync to refresh the token itself


@dataclass
class TokenKeeper:
    """Hands out usable access tokens for OAuth accounts."""

    db: Engine
    secrets: SecretBox
    oauth: OAuthProviders
    margin: float = 600.0  # refresh when the access token has less than this many seconds left

    # ---- for the holder of the lease (the engine) ---------------------------------------------------------

    def login(self, account: EmailAccount, fence: Fence) -> ImapLogin:
        """The IMAP login of an OAuth account for the lease holder: the stored access token, refreshed first
        when it expires within the margin, and renewed once more should the server refuse it."""
        assert account.id is not None
        account_id = account.id
        token = self.access_token(account_id, fence)
        return account_login(account, token, renew=lambda: self.access_token(account_id, fence, force=True))

    def access_token(self, account_id: int, fence: Fence, *, force: bool = False) -> str:
        """A usable access token; `fence` proves the caller holds the account's lease (LeaseLost otherwise)."""
        provider, access, refresh, expires_at, scope = self._stored(account_id)
        if (
            not force
            and access
            and expires_at is not None
            and expires_at - utcnow() > dt.timedelta(seconds=self.margin)
        ):
            return access
        with fence():
            pass  # the lease, checked (and renewed) before the refresh token is spent: a stale holder stops here
        tokens = self.oauth.refresh(provider, refresh)
        with fence() as session:
            # Committed before the new access token is used: a rotated refresh token must never be lost.
            account_queries.save_oauth_tokens(
                session,
                account_id=account_id,
                access_encrypted=self.secrets.encrypt(tokens.access_token),
                refresh_encrypted=self.secrets.encrypt(tokens.refresh_token or refresh),
                expires_at=tokens.expires_at,
                scope=tokens.scope or scope,
            )
        log.info(
            "account %s: %s access token refreshed%s, valid until %s",
            account_id,
            provider.name,
            " (refresh token rotated)" if tokens.refresh_token not in (None, refresh) else "",
            f"{tokens.expires_at:%H:%M:%S}",
        )
        return tokens.access_token

    # ---- for everyone else (preview, doctor) --------------------------------------------------------------

    def login_outside_sync(self, account: EmailAccount, *, owner: str) -> ImapLogin:
        """The IMAP login for a caller that does not hold the lease: the stored token while it lives; else a
        refresh under the lease borrowed for the purpose, or the refresh a running sync makes."""
        assert account.id is not None
        account_id = account.id

        def renew() -> str:
            return self._borrowed(account_id, owner, force=True)

        _, access, _, expires_at, _ = self._stored(account_id)
        if access and expires_at is not None and expires_at - utcnow() > dt.timedelta(seconds=OUTSIDE_MARGIN):
            return account_login(account, access, renew=renew)
        return account_login(account, self._borrowed(account_id, owner), renew=renew)

    def _borrowed(self, account_id: int, owner: str, *, force: bool = False) -> str:
        waited_until = time.monotonic() + BORROW_WAIT
        while True:
            with lease_of(self.db, account_id, owner) as fence:
                if fence is not None:
                    return self.access_token(account_id, fence, force=force)
            # A sync holds the lease and refreshes the token itself when it needs to: wait for that.
            _, access, _, expires_at, _ = self._stored(account_id)
            if not force and access and expires_at is not None and expires_at - utcnow() > dt.timedelta(seconds=5):
                return access
            if time.monotonic() >= waited_until:
                raise Throttled("The mailbox is syncing right now.", "Try again in a moment.", retry_after=30)
            time.sleep(0.5)

    # ---- plumbing ---------------------------------------------------------------------------------------

    def _stored(self, account_id: int) -> tuple[OAuthProvider, str, str, dt.datetime | None, str]:
        with session_scope(self.db, readonly=True) as session:
            account = account_queries.get_account(session, account_id)
            if account is None or account.auth_kind != "oauth":
                raise ProtocolError("This mailbox is not signed in with a provider.", "Reconnect it.")
            name = account.oauth_provider or ""
            sealed_access, sealed_refresh = account.oauth_access_encrypted, account.oauth_refresh_encrypted
            expires_at, scope = account.oauth_expires_at, account.oauth_scope or ""
        provider = self.oauth.get(name)
        if provider is None:
            display = DISPLAY_NAMES.get(name, name)
            raise ProviderRefused(
                f"Sign in with {display} is not configured on this server any more.",
                f"An operator must set {name.upper()}_CLIENT_ID and {name.upper()}_CLIENT_SECRET again.",
            )
        try:
            access = self.secrets.decrypt(sealed_access) if sealed_access else ""
            refresh = self.secrets.decrypt(sealed_refresh) if sealed_refresh else ""
        except SecretKeyError as exc:
            raise ProtocolError(str(exc), "An operator must restore the old key.") from None
        if not refresh:
            raise ProtocolError(
                "The mailbox's sign-in was removed.", f"Reconnect and sign in with {provider.display_name}."
            )
        return provider, access, refresh, expires_at, scope


@contextmanager
def lease_of(db: Engine, account_id: int, owner: str, ttl: float = 60.0) -> Iterator[Fence | None]:
    """Borrow the account's sync lease for a short job: yields its fence, or None when a sync holds it."""
    with session_scope(db) as session:
        token = account_queries.acquire_lease(session, account_id=account_id, owner=owner, ttl=ttl)
    if token is None:
        yield None
        return
    lease_token = token

    @contextmanager
    def fence() -> Iterator[Session]:
        with session_scope(db) as session:
            if not account_queries.renew_lease(session, account_id=account_id, owner=owner, token=lease_token, ttl=ttl):
                raise LeaseLost("Another process took over this account.")
            yield session

    try:
        yield fence
    finally:
        with session_scope(db) as session:
            account_queries.release_lease(session, account_id=account_id, owner=owner, token=lease_token)


@dataclass
class GrantRevoker:
    """Gives back the grants of accounts that go away (disconnect, "Delete my data", removal), where the provider
    offers revocation. Collect before the rows go, revoke after the commit: best effort, never in the way."""

    secrets: SecretBox
    oauth: OAuthProviders

    def collect(self, accounts: list[EmailAccount]) -> list[tuple[OAuthProvider, str]]:
        """The (provider, refresh token) of each OAuth account, decrypted now (the rows are about to lose them)."""
        grants: list[tuple[OAuthProvider, str]] = []
        for account in accounts:
            provider = self.oauth.get(account.oauth_provider or "") if account.auth_kind == "oauth" else None
            if provider is None or not account.oauth_refresh_encrypted:
                continue
            try:
                grants.append((provider, self.secrets.decrypt(account.oauth_refresh_encrypted)))
            except SecretKeyError:
                log.warning("account %s: its refresh token cannot be decrypted; not revoked", account.id)
        return grants

    def revoke(self, grants: list[tuple[OAuthProvider, str]]) -> int:
        """Revoke each grant (its refresh token); return how many the providers confirmed. Never raises."""
        return sum(1 for provider, token in grants if self.oauth.revoke(provider, token, hint="refresh_token"))
