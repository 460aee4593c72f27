"""Listeners of the setup modal: open it, move between steps, update it, answer the folder search."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import ids
from bot.slack_app import SlackDeps
from bot.views import setup as views
from flows import setup as setup_flow
from flows.accounts import FieldError
from flows.setup import NotYours, SetupState
from sync.errors import SyncError

log = logging.getLogger(__name__)

# A domain field that failed validation -> the input block that shows the error inline.
FIELD_BLOCKS = {
    "visibility": ids.B_VISIBILITY,
    "sync_mode": ids.B_SYNC_MODE,
    "folders": ids.B_FOLDERS,
    "start": ids.B_START,
    "contact_scope": ids.B_SCOPE,
}
NOT_YOURS = "This setup belongs to someone else. Type `/emailsync setup` to start your own."
GONE = "This setup is no longer available. Type `/emailsync setup` to start again."


def register(app: App, deps: SlackDeps) -> None:
    """Register the setup modal's listeners."""

    @app.action(ids.A_CONNECT_LINK)
    def on_connect_link(ack: Ack) -> None:
        ack()  # a URL button still sends an action; the page itself does the work

    @app.view(ids.SETUP_VIEW)
    def on_submit(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        team_id, user_id = _caller(body)
        view = body["view"]
        try:
            state = _load(deps, view, team_id, user_id)
            nxt = _submit_step(deps, state, view["state"]["values"])
        except NotYours:
            ack(response_action="update", view=views.notice_view("Email sync", NOT_YOURS))
            return
        except FieldError as exc:
            ack(response_action="errors", errors={FIELD_BLOCKS.get(exc.field, ids.B_START): exc.message})
            return
        if nxt is None:  # "Sync": saved and due; the modal closes and a DM says where progress shows
            ack(response_action="clear")
            state = setup_flow.load(deps.services.db, state.session_id, team_id=team_id, user_id=user_id)
            _post_dm(client, user_id, views.sync_started_message(state.draft.email or "", state.draft.start))
            return
        ack(response_action="update", view=views.view_for(nxt, preview=None))
        if nxt.step == "start":
            _refresh_preview(deps, client, nxt, view["id"], None)

    def on_dispatch(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = _caller(body)
        view = body["view"]
        try:
            state = _load(deps, view, team_id, user_id)
            state = _save_values(
                deps, state, _with_action(view["state"]["values"], body["actions"][0]), step=state.step
            )
        except NotYours:
            _update(client, view["id"], views.notice_view("Email sync", NOT_YOURS))
            return
        except FieldError:
            return  # half-made choices are fine while the person is still choosing
        new_hash = _update(client, view["id"], views.view_for(state), view_hash=view.get("hash"))
        if state.step == "start" and new_hash is not None:
            _refresh_preview(deps, client, state, view["id"], new_hash)

    for action_id in (ids.A_SYNC_MODE, ids.A_START, ids.A_SCOPE):
        app.action(action_id)(on_dispatch)

    @app.action(ids.A_BACK)
    def on_back(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = _caller(body)
        view = body["view"]
        target = body["actions"][0].get("value", "")
        if target not in setup_flow.STEPS:
            return
        try:
            state = _load(deps, view, team_id, user_id)
            try:  # keep what was entered on this step, even half-done
                state = _save_values(deps, state, view["state"]["values"], step=target)
            except FieldError:
                state = setup_flow.save_step(
                    deps.services.db, state.session_id, team_id=team_id, user_id=user_id, step=target
                )
        except NotYours:
            _update(client, view["id"], views.notice_view("Email sync", NOT_YOURS))
            return
        _update(client, view["id"], views.view_for(state), view_hash=view.get("hash"))

    @app.options(ids.A_FOLDERS_SEARCH)
    def on_folder_search(ack: Ack, body: dict[str, Any]) -> None:
        team_id, user_id = _caller(body)
        try:
            state = _load(deps, body.get("view") or {}, team_id, user_id)
        except NotYours:
            ack(options=[])
            return
        ack(options=views.folder_options(state, body.get("value", "")))

    @app.action(ids.A_CONTINUE_SETUP)
    def on_continue(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = _caller(body)
        try:
            session_id = int(body["actions"][0]["value"])
            state = setup_flow.load(deps.services.db, session_id, team_id=team_id, user_id=user_id)
        except (NotYours, ValueError):
            _post_dm(client, user_id, {"text": NOT_YOURS})
            return
        open_setup(deps, client, body["trigger_id"], state)

    @app.action(ids.A_HOME_SETUP)
    def on_home_setup(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = _caller(body)
        start_and_open(deps, client, body["trigger_id"], team_id, user_id)


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
            _post_dm(
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
        _refresh_preview(deps, client, state, response["view"]["id"], response["view"].get("hash"))


def advance_after_connect(deps: SlackDeps, state: SetupState) -> str:
    """After the connect page succeeded: move the modal on, or DM a "Continue setup" button; return which."""
    from bot.tokens import client_for_team

    client = client_for_team(deps, state.team_id)  # outside a Slack request: the team's own (fresh) token
    if state.purpose == "reconnect":
        from bot.listeners.home import publish_home

        _post_dm(
            client, state.user_id, {"text": "Your mailbox is reconnected with every setting kept; it syncs again now."}
        )
        publish_home(deps.services.db, client, state.team_id, state.user_id)
        return "dm"
    if state.view_id:
        try:
            client.views_update(view_id=state.view_id, view=views.view_for(state))
            return "modal"
        except SlackApiError as exc:
            log.info("setup %s: modal not updatable (%s); sending a DM", state.session_id, exc.response.get("error"))
    _post_dm(client, state.user_id, views.continue_setup_message(state.session_id, "Your mailbox is connected."))
    return "dm"


def _submit_step(deps: SlackDeps, state: SetupState, values: dict[str, Any]) -> SetupState | None:
    """Save the submitted step and return the next state, or finish on the last step (None)."""
    order = setup_flow.STEPS
    if state.step == "connect":
        raise FieldError("start", "Connect your mailbox first, with the button above.")
    if state.step == "start":
        _save_values(deps, state, values, step="start")
        setup_flow.finish(deps.services.db, state.session_id, team_id=state.team_id, user_id=state.user_id)
        return None
    return _save_values(deps, state, values, step=order[order.index(state.step) + 1])


def _save_values(deps: SlackDeps, state: SetupState, values: dict[str, Any], *, step: str) -> SetupState:
    choices = _choices_from(state, values)
    return setup_flow.save_step(
        deps.services.db, state.session_id, team_id=state.team_id, user_id=state.user_id, step=step, **choices
    )


def _with_action(values: dict[str, Any], action: dict[str, Any]) -> dict[str, Any]:
    """The view's values with the action that fired applied (the state may predate it)."""
    merged = {block: dict(actions) for block, actions in values.items()}
    merged.setdefault(action["block_id"], {})[action["action_id"]] = action
    return merged


def _choices_from(state: SetupState, values: dict[str, Any]) -> dict[str, Any]:
    """Translate a view's state values into draft choices (only the blocks present on this step)."""
    choices: dict[str, Any] = {}
    if ids.B_TRACKING in values:
        picked = {o["value"] for o in values[ids.B_TRACKING][ids.A_TRACKING].get("selected_options") or []}
        choices.update(
            track_opens="track_opens" in picked,
            track_links="track_links" in picked,
            notify_tracking="notify_tracking" in picked,
        )
    for block, action, name in (
        (ids.B_VISIBILITY, ids.A_VISIBILITY, "visibility"),
        (ids.B_SYNC_MODE, ids.A_SYNC_MODE, "sync_mode"),
        (ids.B_START, ids.A_START, "start"),
        (ids.B_SCOPE, ids.A_SCOPE, "contact_scope"),
    ):
        selected = (values.get(block, {}).get(action) or {}).get("selected_option")
        if selected:
            choices[name] = selected["value"]
    if ids.B_FOLDERS in values:
        element = values[ids.B_FOLDERS].get(ids.A_FOLDERS) or values[ids.B_FOLDERS].get(ids.A_FOLDERS_SEARCH) or {}
        picked_values = [o["value"] for o in element.get("selected_options") or []]
        choices["folders"] = views.names_from_values(state, picked_values)
    return choices


def _refresh_preview(
    deps: SlackDeps, client: WebClient, state: SetupState, view_id: str, view_hash: str | None
) -> None:
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
    _update(client, view_id, views.start_view(latest, result), view_hash=view_hash)


def _update(client: WebClient, view_id: str, view: dict[str, Any], *, view_hash: str | None = None) -> str | None:
    """views.update with the hash when known; a hash conflict means a newer update won, which is fine."""
    try:
        response = client.views_update(view_id=view_id, view=view, hash=view_hash)
    except SlackApiError as exc:
        if exc.response.get("error") in ("hash_conflict", "not_found"):
            return None
        raise
    return str(response["view"].get("hash"))


def _load(deps: SlackDeps, view: dict[str, Any], team_id: str, user_id: str) -> SetupState:
    try:
        session_id = int(view.get("private_metadata") or "")
    except ValueError:
        raise NotYours("no setup id in the view") from None
    return setup_flow.load(deps.services.db, session_id, team_id=team_id, user_id=user_id)


def _caller(body: dict[str, Any]) -> tuple[str, str]:
    """The calling team and user, as Slack (signed request) says: the only ids we trust."""
    user = body.get("user") or {}
    team = (body.get("team") or {}).get("id") or user.get("team_id") or body.get("team_id")
    return str(team), str(user.get("id") or body.get("user_id"))


def _post_dm(client: WebClient, user_id: str, message: dict[str, Any]) -> None:
    client.chat_postMessage(channel=user_id, **message)
