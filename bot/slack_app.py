"""Building the Bolt app and its Web API client, and turning HTTP requests into Bolt requests safely."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from slack_bolt import App, BoltContext, BoltRequest
from slack_bolt.request.internals import build_context
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.services import Services
from bot.settings import Settings
from sync.imap_session import SslContextFactory, default_ssl_context

log = logging.getLogger(__name__)


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
    """A Web API client at SLACK_API_URL that waits out 429s as Slack's Retry-After asks."""
    return WebClient(
        token=token or settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=3)],
        timeout=15,
    )


def build_bolt_app(deps: SlackDeps) -> App:
    """The Bolt app with every listener registered (HTTP mode; Socket Mode wraps the same app)."""
    from bot.listeners import register_all

    settings = deps.services.settings
    app = App(
        token=settings.slack_bot_token,
        signing_secret=settings.slack_signing_secret,
        client=deps.client,
        token_verification_enabled=False,  # no auth.test at start: the app must start while Slack is unreachable
        process_before_response=False,  # ack first; the listener goes on in Bolt's thread pool
    )
    register_all(app, deps)

    @app.error
    def _on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack listener failed for a %s request", body.get("type") or body.get("command"), exc_info=error)

    return app


class SlackHttpRequest(BoltRequest):
    """A BoltRequest that also parses a slash command whose text or channel name contains "payload".

    slack-bolt 1.30 treats any form body containing the word "payload" as an interaction and, finding
    no `payload` field, drops the request as unhandled.
    """

    def __init__(self, *, body: str, query: Any = None, headers: Any = None, context: Any = None, **kw: Any) -> None:
        super().__init__(body=body, query=query, headers=headers, context=context, **kw)
        if not self.body and body and not body.lstrip().startswith("{"):
            params = dict(parse_qsl(body, keep_blank_values=True))
            if "payload" not in params:
                self.body = params
                self.context = build_context(BoltContext(context or {}), self.body)

    def to_copyable(self) -> BoltRequest:
        """Copies keep the fix."""
        return SlackHttpRequest(
            body=self.raw_body, query=self.query, headers=self.headers, context=self.context.to_copyable()
        )
