"""Opening the setup modal, keeping its preview fresh, and telling Slack when the connect page succeeded."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.actions.home import publish_home
from bot.actions.replies import post_dm
from bot.deps import SlackDeps
from bot.tokens import client_for_team
from bot.views import setup as views
from flows import setup as setup_flow
from flows.setup import NotYours, SetupState
from sync.errors import SyncError

log = logging.getLogger(__name__)


def start_and_open(deps: SlackDeps, client: WebClient, trigger_id: str, team_id: str, user_id: str) -> None:
    """Start a new setup and open its first step."""
    state, token = setup_flow.start_setup(deps.services.db, team_id=team_id, user_id=user_id)
    open_setup(deps, client, trigger_id, state, token=token)


def open_setup(
    deps: SlackDeps, client: WebClient, trigger_id: str, state: SetupState, *, token: str | None = None
) -> None:
    """Open the setup modal at its current step; an expired trigger falls back to a DM with a button."""
    if state.step == "connect" and token is None:
        state, token = setup_flow.renew_link(
            deps.services.db, state.session_id, team_id=state.team_id, user_id=state.user_id
        )
    link = deps.connect_link(token) if token else None
    try:
        response = client.views_open(trigger_id=trigger_id, view=views.view_for(state, link))
    except SlackApiError as exc:
        if exc.response.get("error") in ("expired_trigger_id", "invalid_trigger_id"):
            post_dm(
                client,
                state.user_id,
                views.continue_setup_message(state.session_id, "Slack took too long to open the setup window."),
            )
            return
        raise
    setup_flow.bind_view(
        deps.services.db, state.session_id, team_id=state.team_id, user_id=state.user_id, view_id=response["view"]["id"]
    )
    if state.step == "start":
        refresh_preview(deps, client, state, response["view"]["id"], response["view"].get("hash"))


def tell_slack_connected(deps: SlackDeps, state: SetupState) -> str:
    """After the connect page succeeded: move the modal on, or DM; return which ("modal", "dm", or "none").

    Slack being down must not turn a good connection into an error page: failures are logged, "none" returned.
    """
    try:
        return _advance_after_connect(deps, state)
    except Exception:
        log.exception("setup %s: could not tell Slack about the connection", state.session_id)
        return "none"


def _advance_after_connect(deps: SlackDeps, state: SetupState) -> str:
    client = client_for_team(deps, state.team_id)  # outside a Slack request: the team's own (fresh) token
    if state.purpose == "reconnect":
        post_dm(client, state.user_id, views.reconnected_message(state.draft.email or "Your mailbox"))
        publish_home(deps.services.db, client, state.team_id, state.user_id)
        return "dm"
    if state.view_id:
        try:
            client.views_update(view_id=state.view_id, view=views.view_for(state))
            return "modal"
        except SlackApiError as exc:
            log.info("setup %s: modal not updatable (%s); sending a DM", state.session_id, exc.response.get("error"))
    post_dm(client, state.user_id, views.continue_setup_message(state.session_id, "Your mailbox is connected."))
    return "dm"


def refresh_preview(deps: SlackDeps, client: WebClient, state: SetupState, view_id: str, view_hash: str | None) -> None:
    """Count the window on the server (after the ack) and show it in the modal."""
    settings = deps.services.settings
    try:
        result = setup_flow.preview(
            deps.services.db,
            deps.services.secrets,
            state.session_id,
            team_id=state.team_id,
            user_id=state.user_id,
            timeout=settings.imap_timeout,
            ssl_context=deps.ssl_context,
            outbound=settings.outbound_policy,
            oauth=deps.services.oauth,
        )
    except (SyncError, NotYours) as exc:
        log.info("setup %s: preview failed: %s", state.session_id, exc)
        return
    latest = setup_flow.load(deps.services.db, state.session_id, team_id=state.team_id, user_id=state.user_id)
    if latest.step != "start" or latest.draft != state.draft:
        return  # the person changed something meanwhile; that change brings its own preview
    update_view(client, view_id, views.start_view(latest, result), view_hash=view_hash)


def update_view(client: WebClient, view_id: str, view: dict[str, Any], *, view_hash: str | None = None) -> str | None:
    """views.update with the hash when known; a hash conflict means a newer update won, which is fine."""
    try:
        response = client.views_update(view_id=view_id, view=view, hash=view_hash)
    except SlackApiError as exc:
        if exc.response.get("error") in ("hash_conflict", "not_found"):
            return None
        raise
    return str(response["view"].get("hash"))
