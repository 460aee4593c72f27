"""Listeners of the setup modal: open it, move between steps, update it, answer the folder search."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import ids
from bot.actions.replies import post_dm
from bot.actions.setup import open_setup, refresh_preview, start_and_open, update_view
from bot.deps import SlackDeps
from bot.view_state import caller, checked, picked, selected
from bot.views import setup as views
from flows import setup as setup_flow
from flows.accounts import FieldError
from flows.setup import NotYours, SetupState

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
        team_id, user_id = caller(body)
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
            post_dm(client, user_id, views.sync_started_message(state.draft.email or "", state.draft.start))
            return
        ack(response_action="update", view=views.view_for(nxt, preview=None))
        if nxt.step == "start":
            refresh_preview(deps, client, nxt, view["id"], None)

    def on_dispatch(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        view = body["view"]
        try:
            state = _load(deps, view, team_id, user_id)
            state = _save_values(
                deps, state, _with_action(view["state"]["values"], body["actions"][0]), step=state.step
            )
        except NotYours:
            update_view(client, view["id"], views.notice_view("Email sync", NOT_YOURS))
            return
        except FieldError:
            return  # half-made choices are fine while the person is still choosing
        new_hash = update_view(client, view["id"], views.view_for(state), view_hash=view.get("hash"))
        if state.step == "start" and new_hash is not None:
            refresh_preview(deps, client, state, view["id"], new_hash)

    for action_id in (ids.A_SYNC_MODE, ids.A_START, ids.A_SCOPE):
        app.action(action_id)(on_dispatch)

    @app.action(ids.A_BACK)
    def on_back(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
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
            update_view(client, view["id"], views.notice_view("Email sync", NOT_YOURS))
            return
        update_view(client, view["id"], views.view_for(state), view_hash=view.get("hash"))

    @app.options(ids.A_FOLDERS_SEARCH)
    def on_folder_search(ack: Ack, body: dict[str, Any]) -> None:
        team_id, user_id = caller(body)
        try:
            state = _load(deps, body.get("view") or {}, team_id, user_id)
        except NotYours:
            ack(options=[])
            return
        ack(options=views.folder_options(state, body.get("value", "")))

    @app.action(ids.A_CONTINUE_SETUP)
    def on_continue(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            session_id = int(body["actions"][0]["value"])
            state = setup_flow.load(deps.services.db, session_id, team_id=team_id, user_id=user_id)
        except (NotYours, ValueError):
            post_dm(client, user_id, {"text": NOT_YOURS})
            return
        open_setup(deps, client, body["trigger_id"], state)

    @app.action(ids.A_HOME_SETUP)
    def on_home_setup(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        start_and_open(deps, client, body["trigger_id"], team_id, user_id)


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
        ticked = checked(values, ids.B_TRACKING, ids.A_TRACKING)
        choices.update(
            track_opens="track_opens" in ticked,
            track_links="track_links" in ticked,
            notify_tracking="notify_tracking" in ticked,
        )
    for block, action, name in (
        (ids.B_VISIBILITY, ids.A_VISIBILITY, "visibility"),
        (ids.B_SYNC_MODE, ids.A_SYNC_MODE, "sync_mode"),
        (ids.B_START, ids.A_START, "start"),
        (ids.B_SCOPE, ids.A_SCOPE, "contact_scope"),
    ):
        value = selected(values, block, action)
        if value:
            choices[name] = value
    if ids.B_FOLDERS in values:
        # The folder list is a plain multi-select, or a searched one when the mailbox has many folders.
        action = ids.A_FOLDERS if ids.A_FOLDERS in values[ids.B_FOLDERS] else ids.A_FOLDERS_SEARCH
        choices["folders"] = views.names_from_values(state, picked(values, ids.B_FOLDERS, action))
    return choices


def _load(deps: SlackDeps, view: dict[str, Any], team_id: str, user_id: str) -> SetupState:
    try:
        session_id = int(view.get("private_metadata") or "")
    except ValueError:
        raise NotYours("no setup id in the view") from None
    return setup_flow.load(deps.services.db, session_id, team_id=team_id, user_id=user_id)
