"""The web process: /healthz, Slack's /slack/events, the connect page; and the worker as a child process."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import uvicorn
from slack_bolt import App, BoltRequest, BoltResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.services import Services
from bot.slack_app import SlackDeps, SlackHttpRequest, build_bolt_app, make_web_client, oauth_enabled
from models import accounts as account_queries
from models.clock import utcnow
from models.db import ping, session_scope
from sync.scheduler import HEARTBEAT_NAME

log = logging.getLogger(__name__)
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]


def create_app(
    services: Services, slack: SlackDeps | None = None, bolt: App | None = None, lifespan: Lifespan | None = None
) -> Starlette:
    """The ASGI app; handlers never block the event loop (Bolt and the database run in threads)."""
    max_age = dt.timedelta(seconds=max(30.0, services.settings.tick_seconds * 6))

    def _health() -> tuple[bool, dict[str, object]]:
        if not ping(services.db):
            return False, {"database": "down"}
        with session_scope(services.db, readonly=True) as session:
            ticked = account_queries.last_heartbeat(session, name=HEARTBEAT_NAME)
        fresh = ticked is not None and utcnow() - ticked <= max_age
        return fresh, {
            "database": "up",
            "last_tick": ticked.isoformat() if ticked else None,
            "clock": "ok" if fresh else "stale",
        }

    async def healthz(_request: Request) -> JSONResponse:
        ok, body = await run_in_threadpool(_health)
        return JSONResponse({"ok": ok, **body}, status_code=200 if ok else 503)

    routes = [Route("/healthz", healthz)]
    if slack is not None:
        from bot.connect_page import routes as connect_routes

        app = bolt or build_bolt_app(slack)

        async def slack_events(request: Request) -> Response:
            body = (await request.body()).decode("utf-8")
            bolt_request = SlackHttpRequest(body=body, query=request.url.query, headers=dict(request.headers))
            # Bolt's sync dispatch waits for the listener's ack(): run it off the event loop.
            result: BoltResponse = await run_in_threadpool(app.dispatch, bolt_request)
            return Response(
                content=result.body,
                status_code=result.status,
                headers={k: v[0] for k, v in result.headers.items() if v},
            )

        routes.append(Route("/slack/events", slack_events, methods=["POST"]))
        oauth = app.oauth_flow
        if oauth is not None:

            async def slack_install(request: Request) -> Response:
                bolt_request = BoltRequest(body="", query=request.url.query, headers=dict(request.headers))
                return _response(await run_in_threadpool(oauth.handle_installation, bolt_request))

            async def slack_oauth_redirect(request: Request) -> Response:
                bolt_request = BoltRequest(body="", query=request.url.query, headers=dict(request.headers))
                # The callback calls oauth.v2.access and writes the database: off the event loop too.
                return _response(await run_in_threadpool(oauth.handle_callback, bolt_request))

            routes.append(Route(oauth.install_path, slack_install, methods=["GET"]))
            routes.append(Route(oauth.redirect_uri_path, slack_oauth_redirect, methods=["GET"]))
        routes += connect_routes(slack)
    return Starlette(routes=routes, lifespan=lifespan)


def _response(result: BoltResponse) -> Response:
    """A Starlette response from Bolt's, every header value kept (the OAuth state cookie among them)."""
    response = Response(content=result.body, status_code=result.status)
    for name, values in result.headers.items():
        for value in values:
            response.headers.append(name, value)
    return response


def slack_deps_from(services: Services) -> SlackDeps | None:
    """The Slack side when its settings are there; None (and one line saying what to set) otherwise."""
    s = services.settings
    if not ((s.slack_bot_token or oauth_enabled(s)) and s.slack_signing_secret):
        print(
            "emailsync: Slack is off: set SLACK_SIGNING_SECRET and either SLACK_BOT_TOKEN (one workspace) or "
            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET (many, installed through /slack/install), and "
            "SLACK_APP_TOKEN for Socket Mode.",
            file=sys.stderr,
        )
        return None
    base = s.public_base_url or f"http://localhost:{s.port}"
    if not s.public_base_url:
        print(f"emailsync: PUBLIC_BASE_URL is not set; connect links will point at {base}.", file=sys.stderr)
    return SlackDeps(services=services, client=make_web_client(s), public_base_url=base)


def serve(services: Services) -> None:
    """Start the worker as a child process (syncs never run in web threads), then serve HTTP."""
    slack = slack_deps_from(services)
    bolt = build_bolt_app(slack) if slack is not None else None
    socket_handler = None
    if slack is not None and bolt is not None and services.settings.slack_app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        socket_handler = SocketModeHandler(bolt, services.settings.slack_app_token)
        socket_handler.connect()  # events arrive over the socket; the connect page still needs HTTP
        log.info("Socket Mode connected")

    @asynccontextmanager
    async def worker_process(_app: Starlette) -> AsyncIterator[None]:
        # Started and stopped by the ASGI lifespan: uvicorn re-raises SIGTERM after its shutdown, so a
        # `finally` after uvicorn.run() would never run and the worker would outlive serve.
        worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], env=os.environ.copy())
        log.info("started worker process %s", worker.pid)
        try:
            yield
        finally:
            if socket_handler is not None:
                socket_handler.close()
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()

    app = create_app(services, slack, bolt, lifespan=worker_process)
    uvicorn.run(app, host="0.0.0.0", port=services.settings.port, log_level="info")
