"""The web process: /healthz, Slack's /slack/events, the connect page, tracking; and the worker as a child process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from slack_bolt import App, BoltRequest, BoltResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.connect_page import routes as connect_routes
from bot.deps import SlackDeps, make_web_client, oauth_enabled
from bot.health import clock_max_age, health_report
from bot.metrics_server import CONTENT_TYPE_LATEST, listening_socket, render_merged
from bot.services import Services, log_sign_in_providers
from bot.settings import Settings
from bot.slack_app import SlackHttpRequest, build_bolt_app
from bot.tokens import client_for_team
from bot.tracking import routes as tracking_routes
from bot.web_limits import (
    WebLimits,
    content_security_policy,
    h11_with_header_deadline,
    redact_access_log,
    slack_body_well_formed,
    slack_signature_ok,
    style_hashes,
)

log = logging.getLogger(__name__)
Lifespan = Callable[[Starlette], AbstractAsyncContextManager[None]]
TEMPLATES_DIR = Path(__file__).parent / "templates"
SLACK_BUTTON_IMAGES = "https://platform.slack-edge.com"  # the "Add to Slack" button of Bolt's install page
# Connections at once (idle keep-alives and slow clients count): far above what Slack and a few
# connect pages need, low enough that a flood of slow clients cannot exhaust the process.
LIMIT_CONCURRENCY = 128
LOOPBACK = "127.0.0.1"


def create_app(
    services: Services,
    slack: SlackDeps | None = None,
    bolt: App | None = None,
    lifespan: Lifespan | None = None,
    *,
    worker_metrics_url: str | None = None,
) -> Starlette:
    """The ASGI app; handlers never block the event loop (Bolt and the database run in threads).

    /metrics shows this process's metrics and, with ``worker_metrics_url``, the worker child's.
    """
    max_age = clock_max_age(services.settings.tick_seconds)

    def _health() -> tuple[bool, dict[str, object]]:
        return health_report(services.db, max_age)

    async def healthz(_request: Request) -> JSONResponse:
        ok, body = await run_in_threadpool(_health)
        return JSONResponse({"ok": ok, **body}, status_code=200 if ok else 503)

    async def metrics(_request: Request) -> Response:
        # The worker child's page is fetched over loopback: a blocking call, so off the event loop.
        body = await run_in_threadpool(render_merged, worker_metrics_url)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    routes = [Route("/healthz", healthz), Route("/metrics", metrics)]
    pages = [path.read_text(encoding="utf-8") for path in sorted(TEMPLATES_DIR.glob("*.html"))]
    images: list[str] = []
    if slack is not None:
        app = bolt or build_bolt_app(slack)
        signing_secret = services.settings.slack_signing_secret or ""

        async def slack_events(request: Request) -> Response:
            raw = await request.body()  # capped and timed by WebLimits
            # The signature is checked on the raw bytes before anything decodes or parses them.
            if not slack_signature_ok(signing_secret, raw, request.headers):
                return JSONResponse({"error": "invalid request"}, status_code=401)
            try:
                bolt_request = SlackHttpRequest(
                    body=raw.decode("utf-8"), query=request.url.query, headers=dict(request.headers)
                )
                if not slack_body_well_formed(bolt_request.body):
                    raise ValueError("not the shape of a Slack request")
            except Exception as exc:  # signed, but not UTF-8, not JSON, not a form: a bad request, never a 500
                log.warning("malformed Slack request (%s)", type(exc).__name__)
                return JSONResponse({"error": "malformed request"}, status_code=400)
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
            # Bolt's install and redirect pages have inline styles and Slack's button image of their own.
            renderer = oauth.settings.redirect_uri_page_renderer
            pages += [
                oauth.build_install_page_html("https://slack.com/", BoltRequest(body="")),
                renderer.render_success_page(app_id="A", team_id="T"),
                renderer.render_failure_page("reason"),
            ]
            images.append(SLACK_BUTTON_IMAGES)
        routes += connect_routes(slack)
        routes += tracking_routes(services, slack.public_base_url, lambda team_id: client_for_team(slack, team_id))
    settings = services.settings
    # The sign-in buttons' POST is redirected to the provider: its origin must be a form target too.
    providers = [_origin(p.discovery_url) for p in services.oauth.configured()] if slack is not None else []
    limits = Middleware(
        WebLimits,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.client_timeout,
        content_security_policy=content_security_policy(style_hashes(*pages), images, providers),
    )
    return Starlette(routes=routes, middleware=[limits], lifespan=lifespan)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def server_config(
    app: Starlette, settings: Settings, *, host: str | None = None, port: int | None = None, log_level: str = "info"
) -> uvicorn.Config:
    """uvicorn's settings for the web process: slow clients time out, headers are small, the access log is redacted."""
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level=log_level,
        # Always h11 (even where httptools is installed), with a deadline on each request's headers.
        http=h11_with_header_deadline(settings.client_timeout),
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,  # request line and headers; Slack's are well under 4 KB
        limit_concurrency=LIMIT_CONCURRENCY,
        # X-Forwarded-For/-Proto count only from these peers (the reverse proxy that terminates TLS).
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    redact_access_log()  # after Config(), which (re)configures uvicorn's loggers
    return config


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
    log_sign_in_providers(services.oauth)
    bolt = build_bolt_app(slack) if slack is not None else None
    socket_handler = None
    if slack is not None and bolt is not None and services.settings.slack_app_token:
        from bot.socket_mode import start_socket_mode

        # Slack's requests arrive over the socket; the connect page still needs HTTP. Raises SocketModeError.
        socket_handler = start_socket_mode(bolt, services.settings.slack_app_token)

    # The worker child's sync metrics reach serve's /metrics through its own metrics page on loopback
    # (merged with a process label), not through prometheus_client's multiprocess files. serve binds the
    # socket and the child inherits it, so no other process can take the port in between.
    local = services.settings.backend == "local"
    metrics_socket = listening_socket(LOOPBACK) if local else None
    worker_metrics = f"http://{LOOPBACK}:{metrics_socket.getsockname()[1]}/metrics" if metrics_socket else None

    @asynccontextmanager
    async def worker_process(_app: Starlette) -> AsyncIterator[None]:
        # Started and stopped by the ASGI lifespan: uvicorn re-raises SIGTERM after its shutdown, so a
        # `finally` after uvicorn.run() would never run and the worker would outlive serve.
        if not local:
            # Many machines: workers (and the elected clock) are `emailsync worker` processes; serve never ticks.
            log.info("backend %s: serve runs no worker and no tick", services.settings.backend)
            yield
            if socket_handler is not None:
                socket_handler.close()
            return
        assert metrics_socket is not None  # made for the local backend's worker child
        fd = metrics_socket.fileno()
        worker = subprocess.Popen(
            [sys.executable, "-m", "bot", "worker", "--metrics-fd", str(fd)], env=os.environ.copy(), pass_fds=(fd,)
        )
        metrics_socket.close()  # the child serves it now
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

    app = create_app(services, slack, bolt, lifespan=worker_process, worker_metrics_url=worker_metrics)
    server = uvicorn.Server(server_config(app, services.settings))
    server.run()
    if not server.started:  # as uvicorn.run: the port was taken or start-up failed
        sys.exit(3)
