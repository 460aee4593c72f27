"""App Home: publish the tab, and every button on it (each reloads the account and checks the owner)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient
from sqlalchemy import Engine

from bot import ids
from bot.actions.home import publish_home
from bot.actions.replies import tell
from bot.deps import SlackDeps
from bot.view_state import caller, checked, picked, selected, text
from bot.views import home as views
from bot.views.setup import notice_view
from flows import lifecycle, people
from flows.accounts import FieldError
from flows.lifecycle import AccountGone, AccountSummary
from flows.setup import NotYours
from sync.oauth_tokens import GrantRevoker

log = logging.getLogger(__name__)
GONE = "This mailbox is no longer connected: the button was stale. Your Home tab is up to date again."
NOT_YOURS = "That button belongs to someone else's mailbox. Nothing was changed."
FIELD_BLOCKS = {
    "sync_mode": ids.B_SYNC_MODE,
    "folders": ids.B_FOLDERS,
    "visibility": ids.B_VISIBILITY,
    "start": ids.B_START,
    "contact_scope": ids.B_SCOPE,
    "blocked": ids.B_BLOCKED,
    "notification_level": ids.B_NOTIFY_LEVEL,
    "default_visibility": ids.B_VISIBILITY,
    "digest_day": ids.B_DIGEST_DAY,
    "digest_hour": ids.B_DIGEST_HOUR,
}


def register(app: App, deps: SlackDeps) -> None:
    """Register the Home tab and its buttons and modals."""
    db = deps.services.db
    revoker = GrantRevoker(deps.services.secrets, deps.services.oauth)  # sign-in grants end with their mailbox

    @app.event("app_home_opened")
    def on_home_opened(event: dict[str, Any], context: Any, client: WebClient) -> None:
        if event.get("tab", "home") == "home":
            publish_home(db, client, str(context.get("team_id")), event["user"])

    def account_action(act: Callable[[int, str, str, dict[str, Any], WebClient], str | None]) -> Callable[..., None]:
        """Wrap a button handler: ack, resolve the owner-checked account id, report refusals politely."""

        def handler(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            ack()
            team_id, user_id = caller(body)
            try:
                account_id = int(body["actions"][0]["value"])
                notice = act(account_id, team_id, user_id, body, client)
            except (AccountGone, ValueError):
                notice = GONE
            except NotYours:
                notice = NOT_YOURS
            except FieldError as exc:
                notice = exc.message
            if notice:
                tell(client, body, user_id, notice)
            publish_home(db, client, team_id, user_id)

        return handler

    def sync_now(account_id: int, team_id: str, user_id: str, body: dict[str, Any], client: WebClient) -> str | None:
        queued = lifecycle.sync_now(db, account_id, team_id=team_id, user_id=user_id)
        return "A sync is running; I'll run another right after it." if queued else None

    def pause(account_id: int, team_id: str, user_id: str, body: dict[str, Any], client: WebClient) -> str | None:
        lifecycle.pause(db, account_id, team_id=team_id, user_id=user_id)
        return None

    def resume(account_id: int, team_id: str, user_id: str, body: dict[str, Any], client: WebClient) -> str | None:
        lifecycle.resume(db, account_id, team_id=team_id, user_id=user_id)
        return None

    def open_modal(build: Callable[[AccountSummary], dict[str, Any]]) -> Callable[..., str | None]:
        def act(account_id: int, team_id: str, user_id: str, body: dict[str, Any], client: WebClient) -> str | None:
            summary = _summary(db, account_id, team_id, user_id)
            client.views_open(trigger_id=body["trigger_id"], view=build(summary))
            return None

        return act

    def reconnect(account_id: int, team_id: str, user_id: str, body: dict[str, Any], client: WebClient) -> str | None:
        summary = _summary(db, account_id, team_id, user_id)
        _, token = lifecycle.reconnect(db, account_id, team_id=team_id, user_id=user_id)
        client.views_open(
            trigger_id=body["trigger_id"], view=views.reconnect_view(summary.email, deps.connect_link(token))
        )
        return None

    for action_id, act in (
        (ids.A_HOME_SYNC, sync_now),
        (ids.A_HOME_PAUSE, pause),
        (ids.A_HOME_RESUME, resume),
        (ids.A_HOME_EDIT, open_modal(views.edit_view)),
        (ids.A_HOME_WIDEN, open_modal(views.widen_view)),
        (ids.A_HOME_DISCONNECT, open_modal(views.disconnect_view)),
        (ids.A_HOME_RECONNECT, reconnect),
    ):
        app.action(action_id)(account_action(act))

    @app.action(ids.A_HOME_GENERAL)
    def on_general(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        prefs, blocked = lifecycle.general_settings(db, team_id=team_id, user_id=user_id)
        client.views_open(trigger_id=body["trigger_id"], view=views.general_view(prefs, blocked))

    @app.action(ids.A_HOME_DELETE_DATA)
    def on_delete_data(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()  # the button carries Slack's confirm dialog: reaching here means confirmed
        team_id, user_id = caller(body)
        count = lifecycle.delete_my_data(db, team_id=team_id, user_id=user_id, revoker=revoker)
        client.chat_postMessage(
            channel=user_id,
            text=f"Done: {count} mailbox(es), their passwords and every synced email of yours are deleted.",
        )
        publish_home(db, client, team_id, user_id)

    def account_submission(apply: Callable[[int, str, str, dict[str, Any]], None]) -> Callable[..., None]:
        """Wrap a modal submission: owner check, inline field errors, then republish Home."""

        def handler(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
            team_id, user_id = caller(body)
            view = body["view"]
            try:
                account_id = int(view.get("private_metadata") or "")
                apply(account_id, team_id, user_id, view["state"]["values"])
            except FieldError as exc:
                ack(response_action="errors", errors={FIELD_BLOCKS.get(exc.field, ids.B_START): exc.message})
                return
            except (AccountGone, ValueError):
                ack(response_action="update", view=notice_view("Email sync", GONE))
                return
            except NotYours:
                ack(response_action="update", view=notice_view("Email sync", NOT_YOURS))
                return
            ack()
            publish_home(db, client, team_id, user_id)

        return handler

    def save_edit(account_id: int, team_id: str, user_id: str, values: dict[str, Any]) -> None:
        summary = _summary(db, account_id, team_id, user_id)
        mode = selected(values, ids.B_SYNC_MODE, ids.A_SYNC_MODE)
        lifecycle.edit_settings(
            db,
            account_id,
            team_id=team_id,
            user_id=user_id,
            sync_mode=mode,
            folders=views.folder_names(summary, picked(values, ids.B_FOLDERS, ids.A_FOLDERS)),
            visibility=selected(values, ids.B_VISIBILITY, ids.A_VISIBILITY),
        )

    def save_widen(account_id: int, team_id: str, user_id: str, values: dict[str, Any]) -> None:
        lifecycle.widen_window(
            db,
            account_id,
            team_id=team_id,
            user_id=user_id,
            start=selected(values, ids.B_START, ids.A_START) or "",
            contact_scope=selected(values, ids.B_SCOPE, ids.A_SCOPE) or "all",
        )

    def save_disconnect(account_id: int, team_id: str, user_id: str, values: dict[str, Any]) -> None:
        delete = selected(values, ids.B_KEEP_MAIL, ids.A_KEEP_MAIL) == "delete"
        lifecycle.disconnect(db, account_id, team_id=team_id, user_id=user_id, delete_mail=delete, revoker=revoker)

    app.view(ids.EDIT_VIEW)(account_submission(save_edit))
    app.view(ids.WIDEN_VIEW)(account_submission(save_widen))
    app.view(ids.DISCONNECT_VIEW)(account_submission(save_disconnect))

    @app.view(ids.GENERAL_VIEW)
    def on_general_submit(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        team_id, user_id = caller(body)
        values = body["view"]["state"]["values"]
        tracking = checked(values, ids.B_TRACKING, ids.A_TRACKING)
        blocked_text = text(values, ids.B_BLOCKED, ids.A_BLOCKED)
        digest_day = selected(values, ids.B_DIGEST_DAY, ids.A_DIGEST_DAY) or "off"
        digest_hour = selected(values, ids.B_DIGEST_HOUR, ids.A_DIGEST_HOUR) or "9"
        try:
            lifecycle.save_general_settings(
                db,
                team_id=team_id,
                user_id=user_id,
                blocked=blocked_text.replace(",", "\n").splitlines(),
                default_visibility=selected(values, ids.B_VISIBILITY, ids.A_VISIBILITY) or "private",
                notification_level=selected(values, ids.B_NOTIFY_LEVEL, ids.A_NOTIFY_LEVEL) or "everything",
                track_opens="track_opens" in tracking,
                track_links="track_links" in tracking,
                notify_tracking="notify_tracking" in tracking,
            )
            people.save_digest_schedule(
                db,
                team_id=team_id,
                user_id=user_id,
                day=None if digest_day == "off" else int(digest_day),
                hour=int(digest_hour),
            )
        except FieldError as exc:
            ack(response_action="errors", errors={FIELD_BLOCKS.get(exc.field, ids.B_BLOCKED): exc.message})
            return
        except ValueError:
            ack(response_action="errors", errors={ids.B_DIGEST_DAY: "Choose a day of the week, or off."})
            return
        ack()
        _remember_timezone(db, client, team_id, user_id)  # the digest hour is the person's own
        publish_home(db, client, team_id, user_id)


def _remember_timezone(db: Engine, client: WebClient, team_id: str, user_id: str) -> None:
    try:
        timezone = client.users_info(user=user_id)["user"].get("tz")
    except Exception:  # the digest then keeps the zone it knew (or UTC): not worth failing the save
        log.warning("could not read the time zone of %s", user_id, exc_info=True)
        return
    people.save_timezone(db, team_id=team_id, user_id=user_id, timezone=timezone or None)


def _summary(db: Engine, account_id: int, team_id: str, user_id: str) -> AccountSummary:
    owner = lifecycle.owner_of(db, account_id)
    if owner is None:
        raise AccountGone(str(account_id))
    if owner != (team_id, user_id):
        raise NotYours(str(account_id))
    return next(s for s in lifecycle.summaries(db, team_id=team_id, user_id=user_id) if s.id == account_id)
