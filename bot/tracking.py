"""The tracking endpoints of the web process (/t/o/{token}.gif, /t/c/{token}/{n}) and the sender's DM."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from bot.services import Services
from bot.views.send import tracking_dm
from flows import tracking
from models import sending
from models.db import session_scope

log = logging.getLogger(__name__)

# The smallest transparent GIF (1x1), answered to every open, known token or not.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, no-cache, must-revalidate, max-age=0", "Pragma": "no-cache"}


def routes(services: Services, public_base_url: str, client_for: Any) -> list[Route]:
    """The two tracking routes; `client_for(team_id)` gives a Slack client for the sender's DM."""
    settings = services.settings
    own_origin = public_base_url.rstrip("/")

    def record(request: Request, kind: str, token: str, link: int | None) -> tracking.Recorded:
        hit = tracking.Hit(
            token=token,
            kind=kind,
            link=link,
            method=request.method,
            user_agent=request.headers.get("user-agent", ""),
            referer=request.headers.get("referer", ""),
        )
        return tracking.record(
            services.db, services.secrets, hit, quiet=settings.tracking_quiet_seconds, own_origin=own_origin
        )

    def later(recorded: tracking.Recorded) -> BackgroundTask | None:
        # The Slack DM after the answer: the GIF or the redirect never waits on Slack.
        if not recorded.notify or recorded.sent_email_id is None:
            return None
        return BackgroundTask(run_in_threadpool, notify_sender, services, client_for, recorded)

    async def open_pixel(request: Request) -> Response:
        recorded = await run_in_threadpool(record, request, "open", request.path_params["token"], None)
        return Response(PIXEL, media_type="image/gif", headers=NO_STORE, background=later(recorded))

    async def click(request: Request) -> Response:
        try:
            n = int(request.path_params["n"])
        except ValueError:
            return PlainTextResponse("Not found", status_code=404, headers=NO_STORE)
        recorded = await run_in_threadpool(record, request, "click", request.path_params["token"], n)
        if recorded.target is None:
            return PlainTextResponse("Not found", status_code=404, headers=NO_STORE)
        return RedirectResponse(recorded.target, status_code=302, headers=NO_STORE, background=later(recorded))

    return [
        Route("/t/o/{token}.gif", open_pixel, methods=["GET", "HEAD"]),
        Route("/t/c/{token}/{n}", click, methods=["GET", "HEAD"]),
    ]


def notify_sender(services: Services, client_for: Any, recorded: tracking.Recorded) -> None:
    """Post the email's tracking DM, or edit it when it exists; a Slack failure is logged, never raised."""
    assert recorded.sent_email_id is not None
    db = services.db
    with session_scope(db) as session:
        sent = sending.get_sent(session, recorded.sent_email_id)
        if sent is None:
            return
        claimed = sent.slack_ts is None and sending.claim_dm(session, sent_email_id=recorded.sent_email_id)
        session.expunge(sent)
        events = sending.events_of(session, sent_email_id=recorded.sent_email_id)
        links = json.loads(sent.links or "[]")
        clicked = [
            links[e.link]
            for e in events
            if e.human and e.kind == "click" and e.link is not None and e.link < len(links)
        ]
    who = tracking.who_opened(db, team_id=sent.team_id, recipient=recorded.recipient)
    message = tracking_dm(sent, who=who, clicked=list(dict.fromkeys(clicked)))
    try:
        client = client_for(sent.team_id)
        if claimed:
            response = client.chat_postMessage(channel=sent.user_id, **message)
            with session_scope(db) as session:
                sending.save_dm(
                    session, sent_email_id=recorded.sent_email_id, channel=response["channel"], ts=response["ts"]
                )
        elif sent.slack_ts and sent.slack_ts != "pending" and sent.slack_channel:
            client.chat_update(channel=sent.slack_channel, ts=sent.slack_ts, **message)
    except (SlackApiError, Exception):
        log.warning("tracking DM for sent email %s failed", recorded.sent_email_id, exc_info=True)
        if claimed:
            with session_scope(db) as session:
                sending.save_dm(session, sent_email_id=recorded.sent_email_id, channel=None, ts=None)
