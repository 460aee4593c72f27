"""The connect page: the one place a person types their mail password or starts a sign-in with Google or
Microsoft (plain HTML, works without JavaScript)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.actions.setup import tell_slack_connected
from bot.connect_attempts import AlreadyRunning, Busy, ConnectAttempts, Overdue
from bot.connect_form import (
    CSRF_COOKIE,
    FORM_LIMITS,
    blank_form,
    busy_error,
    done_page,
    echo,
    problem_page,
    render_form,
    sync_error,
)
from bot.deps import SlackDeps
from bot.signin_page import routes as sign_in_routes
from bot.slack_metrics import CountingRetryHandler
from bot.tokens import client_for_team
from flows import lifecycle
from flows import setup as setup_flow
from flows import team as team_flow
from flows.accounts import FieldError
from flows.connect_limits import TooManyAttempts
from flows.providers import guess_servers, mail_provider
from flows.setup import ConnectForm, LinkProblem, SetupState
from sync.errors import SyncError

log = logging.getLogger(__name__)
NAMES_TTL = 3600.0  # seconds a workspace/person name is reused before Slack is asked again
NAMES_RETRY = 60.0  # after Slack could not answer, the ids are shown for this long before asking again
SLACK_LOOKUP_TIMEOUT = 5  # seconds; the page must not hang on a slow Slack

# Why a password is the wrong way in at these two (shown above their sign-in button).
PASSWORD_WONT_WORK = {
    "google": "Google accepts only an app password for IMAP, not your normal password, and many workspaces turn "
    "app passwords off. Sign in with Google instead: no password is needed.",
    "microsoft": "Microsoft 365 does not accept passwords for IMAP. Sign in with Microsoft instead.",
}


@dataclass(frozen=True)
class ConnectingFor:
    """Whose mailbox a link connects and in which workspace: names, or the ids when Slack cannot say."""

    person: str
    workspace: str


class SlackNames:
    """Workspace and person names for the connect page, cached (a link is opened a few times at most)."""

    def __init__(self, deps: SlackDeps) -> None:
        self.deps = deps
        self._cache: dict[tuple[str, str], tuple[float, ConnectingFor]] = {}
        self._lock = threading.Lock()

    def lookup(self, team_id: str, user_id: str) -> ConnectingFor:
        """The names for a setup's team and user (blocking: call it from a thread)."""
        key = (team_id, user_id)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        names, complete = self._fetch(team_id, user_id)
        with self._lock:
            if len(self._cache) > 1000:  # bounded: stale entries go all at once
                self._cache.clear()
            self._cache[key] = (time.monotonic() + (NAMES_TTL if complete else NAMES_RETRY), names)
        return names

    def _fetch(self, team_id: str, user_id: str) -> tuple[ConnectingFor, bool]:
        workspace: str | None = None
        person: str | None = None
        workspace = team_flow.workspace_name(self.deps.services.db, team_id=team_id)
        try:
            client = client_for_team(self.deps, team_id)
            # A client of its own: a short timeout and no waiting out rate limits (the ids will do).
            quick = WebClient(
                token=client.token,
                base_url=client.base_url,
                timeout=SLACK_LOOKUP_TIMEOUT,
                retry_handlers=[CountingRetryHandler()],  # counted in /metrics, never retried
            )
            if not workspace:
                workspace = quick.auth_test().get("team") or None
            person = _person_name(quick.users_info(user=user_id).get("user") or {})
        except Exception as exc:  # Slack down, uninstalled, rate limited: the page still works with the ids
            log.info("connect page: no names for %s/%s from Slack (%s)", team_id, user_id, type(exc).__name__)
        return ConnectingFor(person=person or user_id, workspace=workspace or team_id), bool(workspace and person)


def _person_name(user: dict[str, Any]) -> str | None:
    """ "Real Name (@handle)", or whichever of the two Slack has."""
    profile = user.get("profile") or {}
    real = profile.get("real_name") or user.get("real_name")
    handle = profile.get("display_name") or user.get("name")
    if real and handle and handle != real:
        return f"{real} (@{handle})"
    return real or (f"@{handle}" if handle else None)


def routes(deps: SlackDeps) -> list[Route]:
    """The connect page's routes."""
    settings = deps.services.settings
    attempts = ConnectAttempts(
        workers=settings.connect_workers,
        queue=settings.connect_queue,
        wait_seconds=settings.connect_deadline + 5.0,
    )
    names = SlackNames(deps)
    secure_cookie = deps.public_base_url.lower().startswith("https://")
    sign_in = [{"name": p.name, "display": p.display_name} for p in deps.services.oauth.configured()]

    async def remember(request: Request, state: SetupState) -> None:
        # What render_form shows and sets, kept on the request (the POST handler renders through it too).
        request.state.connecting_for = await run_in_threadpool(names.lookup, state.team_id, state.user_id)
        request.state.secure_cookie = secure_cookie
        request.state.sign_in = sign_in

    async def lead_for(email: str) -> dict[str, str] | None:
        """The sign-in to lead with for this address (an MX lookup: in a thread), when it is offered."""
        if not sign_in or "@" not in email:
            return None
        return await run_in_threadpool(_lead, deps, email)

    async def page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            state = await run_in_threadpool(setup_flow.check_link, deps.services.db, token)
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        await remember(request, state)
        form = blank_form()
        lead = None
        if state.purpose == "reconnect" and state.account_id is not None:
            # A reconnect knows its address: prefill it, and lead with the way it signed in before.
            form["email"], lead = await run_in_threadpool(_reconnect_hint, deps, state.account_id)
        return render_form(request, token, form=form, lead=lead)

    async def submit(request: Request) -> Response:
        token = request.path_params["token"]
        try:  # the link first: an unknown token never gets its body read
            state = await run_in_threadpool(setup_flow.check_link, deps.services.db, token)
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        await remember(request, state)
        data = await request.form(**FORM_LIMITS)
        values = {k: str(v) for k, v in data.items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, values.get("csrf", "")):
            return render_form(
                request,
                token,
                form=echo(values),
                status=403,
                error={"title": "Please try again", "text": "The form expired or came from another page.", "fix": ""},
            )
        email = values.get("email", "").strip()
        if not values.get("password") and sign_in:
            # An address without a password: at Google or Microsoft, show the way that works there.
            lead = await lead_for(email)
            if lead is not None:
                return render_form(request, token, form=echo(values), lead=lead)
        guessed: dict[str, Any] = {}

        def attempt() -> SetupState:
            form, note = _connect_form(values)  # may look up SRV records: in the pool, never on the event loop
            guessed.update(form=form, note=note)
            return setup_flow.connect(
                deps.services.db,
                deps.services.secrets,
                token,
                form,
                timeout=settings.imap_timeout,
                ssl_context=deps.ssl_context,
                outbound=settings.outbound_policy,
                deadline_seconds=settings.connect_deadline,
                limits=settings.attempt_limits,
            )

        async def again(status: int, error: dict[str, str], **extra: Any) -> Response:
            """The form once more, with what was typed (or guessed) and what went wrong."""
            shown = echo(values, guessed.get("form"))
            extra.setdefault("lead", await lead_for(email))  # a failed password at Google/Microsoft: say why
            return render_form(
                request, token, form=shown, status=status, error=error, guess_note=guessed.get("note", ""), **extra
            )

        try:
            state = await attempts.run(setup_flow.hash_token(token), attempt)
        except ValueError as exc:
            error = {"title": "Check the server settings", "text": str(exc), "fix": ""}
            return await again(400, error, show_advanced=True)
        except (Busy, AlreadyRunning, Overdue) as exc:
            return await again(503, busy_error(exc), retry_after=5, lead=None)
        except TooManyAttempts as exc:
            return await again(429, {"title": "Too many failed attempts", "text": exc.message, "fix": ""})
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        except FieldError as exc:
            return await again(400, {"title": "Check your entry", "text": exc.message, "fix": ""})
        except SyncError as exc:
            return await again(400, sync_error(exc), show_advanced=True)
        moved = await run_in_threadpool(tell_slack_connected, deps, state)
        return done_page(request, email=state.draft.email or "", purpose=state.purpose, moved=moved)

    return [
        Route("/connect/{token}", page, methods=["GET"]),
        Route("/connect/{token}", submit, methods=["POST"]),
        *sign_in_routes(deps, attempts=attempts, remember=remember),
    ]


def _lead(deps: SlackDeps, email: str) -> dict[str, str] | None:
    if not deps.services.oauth.configured():
        return None  # no sign-in to lead with: no DNS lookup either
    name = mail_provider(email)
    provider = deps.services.oauth.get(name) if name else None
    if provider is None:
        return None
    return {"provider": provider.name, "display": provider.display_name, "why": PASSWORD_WONT_WORK[provider.name]}


def _reconnect_hint(deps: SlackDeps, account_id: int) -> tuple[str, dict[str, str] | None]:
    """A reconnect's address, and the sign-in to lead with (the one it used, else its domain's)."""
    identity = lifecycle.reconnect_identity(deps.services.db, account_id)
    if identity is None:
        return "", None
    email, provider_name = identity
    provider = deps.services.oauth.get(provider_name) if provider_name else None
    if provider is not None:
        return email, {
            "provider": provider.name,
            "display": provider.display_name,
            "why": f"This mailbox was connected by signing in with {provider.display_name}: sign in again.",
        }
    return email, _lead(deps, email)


def _connect_form(values: dict[str, str]) -> tuple[ConnectForm, str]:
    """The form as domain values, server settings guessed from the address where left empty."""
    email = values.get("email", "").strip()
    note = ""
    imap_host = values.get("imap_host", "").strip()
    smtp_host = values.get("smtp_host", "").strip()
    imap_security = values.get("imap_security") or "tls"
    smtp_security = values.get("smtp_security") or "starttls"
    imap_port = _port(values.get("imap_port", ""), "IMAP")
    smtp_port = _port(values.get("smtp_port", ""), "SMTP")
    if not imap_host and "@" in email:
        guess = guess_servers(email)
        imap_host, imap_security, imap_port = guess.imap_host, guess.imap_security, imap_port or guess.imap_port
        if not smtp_host:
            smtp_host, smtp_security, smtp_port = guess.smtp_host, guess.smtp_security, smtp_port or guess.smtp_port
        note = guess.note or f"Using {imap_host} (found from your address)."
    if imap_port is None:
        imap_port = 993 if imap_security == "tls" else 143
    form = ConnectForm(
        email=email,
        password=values.get("password", ""),
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        username=values.get("username", "").strip(),
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_security=smtp_security,
    )
    return form, note


def _port(value: str, what: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"The {what} port must be a number like 993, 143, 465 or 587.")
    return int(value)
