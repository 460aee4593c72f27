"""A Web API client for one workspace outside a Slack request, its token refreshed first when it rotates.

Bolt refreshes rotating tokens only while it handles a request from Slack; the notifier, App Home
publishing and the connect page post on their own, so they get their client here.
"""

from __future__ import annotations

from slack_sdk import WebClient
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.token_rotation import TokenRotator

from bot.deps import SlackDeps, make_web_client, oauth_enabled
from bot.installation_store import DbInstallationStore
from bot.services import Services
from bot.settings import Settings

REFRESH_MINUTES_BEFORE_EXPIRY = 10  # a refreshed token outlives any post made with it


class NotInstalled(Exception):
    """The workspace has no usable installation: never installed, uninstalled, or its tokens were revoked."""


class TokenRefreshFailed(Exception):
    """Slack refused to refresh the workspace's expiring token (revoked, or the app's credentials changed)."""


def installation_store(services: Services) -> DbInstallationStore:
    """The installation store over the project's database."""
    return DbInstallationStore(services.db, services.secrets)


def client_for_team(source: Services | SlackDeps, team_id: str) -> WebClient:
    """A client at SLACK_API_URL with the team's bot token, refreshed first when it expires soon.

    With a single-workspace SLACK_BOT_TOKEN this is the plain client of that token.
    """
    services = source.services if isinstance(source, SlackDeps) else source
    settings = services.settings
    if not oauth_enabled(settings):
        return source.client if isinstance(source, SlackDeps) else make_web_client(settings)
    store = installation_store(services)
    installation = store.find_installation(enterprise_id=None, team_id=team_id)
    if installation is None or not installation.bot_token:
        raise NotInstalled(f"emailsync is not installed in Slack workspace {team_id}")
    try:
        rotated = _rotator(settings).perform_token_rotation(
            installation=installation, minutes_before_expiration=REFRESH_MINUTES_BEFORE_EXPIRY
        )
    except SlackTokenRotationError as exc:
        error = exc.api_error.response.get("error")
        raise TokenRefreshFailed(f"Slack refused to refresh the token of workspace {team_id} ({error})") from None
    if rotated is not None:
        store.save(rotated)
        installation = rotated
    return make_web_client(settings, token=installation.bot_token)


def _rotator(settings: Settings) -> TokenRotator:
    assert settings.slack_client_id and settings.slack_client_secret  # oauth_enabled() checked both
    # oauth.v2.access must go to SLACK_API_URL too (GovSlack, tests), so the rotator gets our client.
    return TokenRotator(
        client_id=settings.slack_client_id,
        client_secret=settings.slack_client_secret,
        client=make_web_client(settings, token=None),
    )
