"""What every Slack-facing module shares: the dependencies bundle and the Web API client factory (a leaf)."""

from __future__ import annotations

from dataclasses import dataclass, field

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.services import Services
from bot.settings import Settings
from bot.slack_metrics import CountingRetryHandler
from sync.imap_session import SslContextFactory, default_ssl_context


@dataclass
class SlackDeps:
    """What the Slack listeners and the connect page share."""

    services: Services
    client: WebClient
    public_base_url: str
    ssl_context: SslContextFactory = field(default=default_ssl_context)

    def connect_link(self, token: str) -> str:
        """The one-time connect page address for a token."""
        return f"{self.public_base_url.rstrip('/')}/connect/{token}"


def make_web_client(settings: Settings, token: str | None = None) -> WebClient:
    """A Web API client at SLACK_API_URL that waits out 429s as Slack's Retry-After asks, its calls counted."""
    return WebClient(
        token=token or settings.slack_bot_token or None,
        base_url=settings.slack_api_url,
        # The counter first: slack_sdk asks the handlers in order after every answer and stops at the
        # first that retries, so a handler placed after the retrying one would miss the 429s.
        retry_handlers=[CountingRetryHandler(), RateLimitErrorRetryHandler(max_retry_count=3)],
        timeout=15,
    )


def oauth_enabled(settings: Settings) -> bool:
    """True when the app is installed per workspace through OAuth (SLACK_CLIENT_ID and SLACK_CLIENT_SECRET)."""
    return bool(settings.slack_client_id and settings.slack_client_secret)
