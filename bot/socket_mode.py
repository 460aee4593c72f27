"""Socket Mode: Slack's requests arrive over a websocket the app opens, so a laptop needs no public URL."""

from __future__ import annotations

import logging
from urllib.error import URLError
from urllib.parse import urlsplit

from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError

log = logging.getLogger(__name__)
# The socket client's own logger: quiet while connecting (we report a failure ourselves, in one line).
_client_log = logging.getLogger("emailsync.socket_mode")

_WHERE = "Slack's app settings, Basic Information → App-Level Tokens (scope connections:write)"
_REJECTED = ("invalid_auth", "not_authed", "token_revoked", "account_inactive", "token_expired")


class SocketModeError(Exception):
    """Socket Mode could not start; the message says why and what to do."""


def start_socket_mode(bolt: App, app_token: str) -> SocketModeHandler:
    """Open the websocket for `bolt` (apps.connections.open with the app-level token, then connect)."""
    handler = SocketModeHandler(bolt, app_token, logger=_client_log)
    previous = _client_log.level
    _client_log.setLevel(logging.CRITICAL)
    try:
        handler.connect()
    except SlackApiError as exc:
        handler.close()
        raise SocketModeError(_refusal(str(exc.response.get("error") or "unknown error"))) from None
    except (URLError, OSError) as exc:
        handler.close()
        api = bolt.client.base_url
        raise SocketModeError(
            f"could not reach Slack at {api} to open Socket Mode ({_reason(exc)}); check the network, "
            "or SLACK_API_URL if you set it"
        ) from None
    finally:
        _client_log.setLevel(previous)
    if not handler.client.is_connected():  # the client logs a failed handshake and would retry forever
        host = urlsplit(handler.client.wss_uri or "").netloc or "Slack"  # never the URL: it holds a ticket
        handler.close()
        raise SocketModeError(
            f"Slack gave a Socket Mode address but the websocket to {host} did not open; "
            "check that a proxy or firewall lets websockets through"
        )
    log.info("Socket Mode connected: Slack's requests arrive over the websocket")
    return handler


def _refusal(error: str) -> str:
    if error == "not_allowed_token_type":
        return (
            "SLACK_APP_TOKEN is not an app-level token (Slack answered not_allowed_token_type): "
            f"it starts with xapp- and is created in {_WHERE}"
        )
    if error in _REJECTED:
        return f"Slack rejected SLACK_APP_TOKEN ({error}): create a new app-level token in {_WHERE} and set it"
    return (
        f"Slack refused to open a Socket Mode connection ({error}): check that Socket Mode is on in the app's settings"
    )


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
