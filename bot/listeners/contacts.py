"""Contacts in Slack: App Home's Add contact and Import CSV (a file shared in a DM), and the weekly DM's buttons."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import ids
from bot.actions.home import publish_home
from bot.actions.replies import tell
from bot.deps import SlackDeps
from bot.slack_files import SlackFileError, download_private_file
from bot.view_state import caller, text
from bot.views import contacts as views
from flows import people
from flows.accounts import FieldError
from flows.contacts import MAX_CSV_BYTES, ImportRefused, add_contact, decode_csv, import_contacts_csv
from flows.people import DigestGone, NotSuggested, NotYourDigest

log = logging.getLogger(__name__)
STALE = "That suggestion is no longer yours to act on (the digest is gone or belongs to someone else)."
CSV_TYPES = {"csv", "text/csv", "application/csv", "text/comma-separated-values"}


def register(app: App, deps: SlackDeps) -> None:
    """Register the contact buttons and modals, the digest's buttons, and CSV files shared in a DM."""
    db = deps.services.db

    @app.action(ids.A_HOME_ADD_CONTACT)
    def on_add_contact(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        client.views_open(trigger_id=body["trigger_id"], view=views.add_contact_modal())

    @app.view(ids.ADD_CONTACT_VIEW)
    def on_add_contact_submit(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        team_id, user_id = caller(body)
        values = body["view"]["state"]["values"]
        email = text(values, ids.B_CONTACT_EMAIL, ids.A_CONTACT_EMAIL)
        name = text(values, ids.B_CONTACT_NAME, ids.A_CONTACT_NAME)
        try:
            address, linked = add_contact(db, team_id=team_id, email=email, name=name or None, source="slack")
        except ValueError:
            ack(response_action="errors", errors={ids.B_CONTACT_EMAIL: "This is not an email address."})
            return
        ack(response_action="update", view=views.contact_added_modal(address, linked))
        publish_home(db, client, team_id, user_id)

    @app.action(ids.A_HOME_IMPORT_CSV)
    def on_import_csv(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        _, user_id = caller(body)
        client.chat_postMessage(channel=user_id, **views.import_instructions())

    @app.event("file_shared")
    def on_file_shared(event: dict[str, Any], context: BoltContext, client: WebClient) -> None:
        team_id = context.team_id
        user_id = str(event.get("user_id") or "")
        channel = str(event.get("channel_id") or "")
        file_id = str(event.get("file_id") or (event.get("file") or {}).get("id") or "")
        # Only files a person shares in their direct conversation with the bot are imports.
        if not (team_id and user_id and file_id and channel.startswith("D")):
            return
        try:
            info = client.files_info(file=file_id)["file"]
        except SlackApiError as exc:
            log.warning("files.info for a shared file failed: %s", exc.response.get("error"))
            return
        if info.get("user") != user_id or channel not in (info.get("ims") or []):
            return  # not this person's file, or not in this DM: nothing to import
        name = str(info.get("name") or "file")
        if not _is_csv(info):
            client.chat_postMessage(
                channel=channel, **views.import_refused(f"{name} is not a CSV file; send a .csv to import contacts.")
            )
            return
        if int(info.get("size") or 0) > MAX_CSV_BYTES:
            refusal = f"{name} is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB; split it and send the parts."
            client.chat_postMessage(channel=channel, **views.import_refused(refusal))
            return
        url = info.get("url_private_download") or info.get("url_private")
        token = context.bot_token or client.token
        try:
            if not url or not token:
                raise SlackFileError("Slack gave no download address for the file.")
            data = download_private_file(
                str(url), token, api_url=deps.services.settings.slack_api_url, max_bytes=MAX_CSV_BYTES
            )
            report = import_contacts_csv(db, team_id=str(team_id), text=decode_csv(data))
        except (SlackFileError, ImportRefused) as exc:
            client.chat_postMessage(channel=channel, **views.import_refused(f"{name}: {exc}"))
            return
        client.chat_postMessage(channel=channel, **views.import_summary(name, report))
        publish_home(db, client, str(team_id), user_id)

    @app.action(ids.A_DIGEST_ADD)
    def on_digest_add(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            digest_id, email = views.parse_digest_value(body["actions"][0].get("value") or "")
            found = people.suggestion(db, digest_id, team_id=team_id, user_id=user_id, email=email)
        except (ValueError, DigestGone, NotYourDigest, NotSuggested):
            tell(client, body, user_id, STALE)
            return
        client.views_open(trigger_id=body["trigger_id"], view=views.digest_add_modal(digest_id, found))

    @app.view(ids.DIGEST_ADD_VIEW)
    def on_digest_add_submit(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        team_id, user_id = caller(body)
        view = body["view"]
        name = text(view["state"]["values"], ids.B_CONTACT_NAME, ids.A_CONTACT_NAME)
        try:
            digest_id, email = views.parse_digest_value(view.get("private_metadata") or "")
            digest, linked = people.add_suggested(
                db, digest_id, team_id=team_id, user_id=user_id, email=email, name=name or None
            )
        except (ValueError, DigestGone, NotYourDigest, NotSuggested, FieldError):
            ack(response_action="update", view=views.contact_added_modal_refused(STALE))
            return
        ack(response_action="update", view=views.contact_added_modal(email, linked))
        _edit_digest(client, digest)
        publish_home(db, client, team_id, user_id)  # the team's contact count changed

    @app.action(ids.A_DIGEST_IGNORE)
    def on_digest_ignore(ack: Ack, body: dict[str, Any], client: WebClient) -> None:
        ack()
        team_id, user_id = caller(body)
        try:
            digest_id, email = views.parse_digest_value(body["actions"][0].get("value") or "")
            digest = people.ignore_suggested(db, digest_id, team_id=team_id, user_id=user_id, email=email)
        except (ValueError, DigestGone, NotYourDigest, NotSuggested):
            tell(client, body, user_id, STALE)
            return
        _edit_digest(client, digest)


def _edit_digest(client: WebClient, digest: people.Digest) -> None:
    """Show in the DM what was done with each address (where the digest says it was posted)."""
    if digest.channel and digest.ts:
        client.chat_update(channel=digest.channel, ts=digest.ts, **views.digest_message(digest))


def _is_csv(info: dict[str, Any]) -> bool:
    kinds = {str(info.get("filetype") or "").lower(), str(info.get("mimetype") or "").lower().split(";")[0]}
    return bool(kinds & CSV_TYPES) or str(info.get("name") or "").lower().endswith(".csv")
