"""The sign-in stack of a test module: a local provider, a Dovecot that takes its tokens, an SMTP server too.

One stack per flavour per module (servers start in about a second each); tests reset the provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sync.oauth import OAuthProvider, OAuthProviders, google_provider, microsoft_provider
from tests.support.dovecot import DovecotServer, OAuth2Passdb, start_dovecot
from tests.support.oauth_server import GOOGLE, MICROSOFT, Flavour, OAuthServer, start_oauth_server
from tests.support.smtp import SmtpServer, XOAuth2, start_smtp


@dataclass
class SignInStack:
    """A provider with the mail servers that trust it."""

    idp: OAuthServer
    dovecot: DovecotServer
    smtp: SmtpServer

    @property
    def name(self) -> str:
        """google or microsoft."""
        return self.idp.flavour.name

    def settings(self) -> dict[str, str]:
        """The app's GOOGLE_* or MICROSOFT_* settings pointing at this stack."""
        prefix = self.name.upper()
        return {
            f"{prefix}_CLIENT_ID": self.idp.client_id,
            f"{prefix}_CLIENT_SECRET": self.idp.client_secret,
            f"{prefix}_OIDC_DISCOVERY_URL": self.idp.discovery_url,
            f"{prefix}_IMAP_SERVER": f"127.0.0.1:{self.dovecot.imaps_port}/tls",
            f"{prefix}_SMTP_SERVER": f"127.0.0.1:{self.smtp.port}/starttls",
        }

    def provider(self) -> OAuthProvider:
        """The app's provider object for this stack (what Settings would build from settings())."""
        imap, smtp = f"127.0.0.1:{self.dovecot.imaps_port}/tls", f"127.0.0.1:{self.smtp.port}/starttls"
        if self.idp.flavour is GOOGLE:
            return google_provider(self.idp.client_id, self.idp.client_secret, self.idp.discovery_url, imap, smtp)
        return microsoft_provider(
            self.idp.client_id, self.idp.client_secret, self.idp.discovery_url, "common", imap, smtp
        )

    def stop(self) -> None:
        """Stop the three servers."""
        self.smtp.stop()
        self.dovecot.stop()
        self.idp.stop()


def providers_of(*stacks: SignInStack) -> OAuthProviders:
    """The app's providers for these stacks."""
    return OAuthProviders({s.name: s.provider() for s in stacks})


def start_stack(flavour: Flavour, base: Path) -> SignInStack:
    """Start a provider (any loopback redirect URI accepted), its Dovecot and its SMTP server."""
    idp = start_oauth_server(flavour)
    dovecot = start_dovecot(base / f"dovecot-{flavour.name}", oauth2=OAuth2Passdb.for_server(idp))
    smtp = start_smtp(dovecot.cafile, dovecot.cafile.parent / "key.pem", xoauth2=XOAuth2.for_server(idp))
    return SignInStack(idp, dovecot, smtp)


@contextmanager
def stacks(base: Path) -> Iterator[dict[str, SignInStack]]:
    """A Google and a Microsoft stack, stopped afterwards."""
    started: dict[str, SignInStack] = {}
    try:
        for flavour in (GOOGLE, MICROSOFT):
            started[flavour.name] = start_stack(flavour, base)
        yield started
    finally:
        for stack in started.values():
            stack.stop()
