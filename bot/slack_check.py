"""At start and in `doctor`: which Slack mode is configured, and whether Slack accepts the bot token (auth.test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.deps import make_web_client, oauth_enabled
from bot.settings import Settings

# auth.test errors that mean the token itself is bad (not Slack being down): the operator must fix it.
REJECTED = frozenset(
    {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive", "not_allowed_token_type"}
)
CHECK_TIMEOUT = 10.0  # seconds; a start-up check must not hang on an unreachable Slack


@dataclass(frozen=True)
class TokenCheck:
    """The answer of auth.test for SLACK_BOT_TOKEN: works, rejected by Slack, or Slack not reached."""

    ok: bool
    rejected: bool
    detail: str


def slack_mode(settings: Settings) -> str:
    """off, HTTP, Socket Mode or OAuth, as the settings make it (the same rule as `serve`)."""
    if not ((settings.slack_bot_token or oauth_enabled(settings)) and settings.slack_signing_secret):
        return "off"
    transport = "Socket Mode" if settings.slack_app_token else "HTTP"
    if oauth_enabled(settings):
        return f"OAuth ({transport}, installed per workspace through /slack/install)"
    return f"{transport} (one workspace, SLACK_BOT_TOKEN)"


def check_bot_token(settings: Settings) -> TokenCheck | None:
    """Ask Slack who SLACK_BOT_TOKEN is; None when there is no single bot token (Slack off, or OAuth)."""
    if not settings.slack_bot_token:
        return None
    client = make_web_client(settings)
    client.timeout = int(CHECK_TIMEOUT)
    try:
        answer: Any = client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown_error")
        if error in REJECTED:
            return TokenCheck(
                False,
                True,
                f"Slack rejected SLACK_BOT_TOKEN ({error}): copy the Bot User OAuth Token (xoxb-…) from the app's "
                "OAuth & Permissions page, or reinstall the app to the workspace",
            )
        return TokenCheck(False, False, f"Slack answered auth.test with {error}; the token was not checked")
    except OSError as exc:  # URLError, timeouts and refused connections are all OSErrors
        return TokenCheck(False, False, f"Slack did not answer at {settings.slack_api_url} ({exc}); not checked")
    return TokenCheck(
        True,
        False,
        f"token of bot @{answer.get('user')} ({answer.get('user_id')}) in workspace "
        f"{answer.get('team')} ({answer.get('team_id')})",
    )


def app_token_check(settings: Settings) -> dict[str, Any] | None:
    """Socket Mode's app-level token must be an xapp- token; None when Socket Mode is off."""
    token = settings.slack_app_token
    if not token:
        return None
    ok = token.startswith("xapp-")
    detail = "set (xapp-…)" if ok else "is not an app-level token (xapp-…): create one under Basic Information"
    return {"name": "Slack app token", "ok": ok, "detail": f"SLACK_APP_TOKEN {detail}"}


def slack_checks(settings: Settings) -> list[dict[str, Any]]:
    """doctor's Slack lines: the mode, then the bot token's auth.test (or the OAuth settings) and the app token."""
    mode = slack_mode(settings)
    if mode == "off":
        detail = (
            "off: set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
            "SLACK_CLIENT_SECRET (many), and SLACK_APP_TOKEN for Socket Mode"
        )
        partial = any((settings.slack_bot_token, settings.slack_signing_secret, settings.slack_client_id))
        # Nothing set is a choice; some of it set is a mistake.
        return [{"name": "Slack", "ok": not partial, "detail": detail}]
    checks: list[dict[str, Any]] = [{"name": "Slack", "ok": True, "detail": mode}]
    token = check_bot_token(settings)
    if token is not None:
        checks.append({"name": "Slack bot token", "ok": token.ok, "detail": token.detail})
    app_token = app_token_check(settings)
    if app_token is not None:
        checks.append(app_token)
    return checks
