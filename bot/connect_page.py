"""The connect page: the one place a person types their mail password or starts a sign-in with Google or
Microsoft (plain HTML, works without JavaScript)."""

from __future__ import annotations

import hmac
import logging
import secrets as pysecrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bot.connect_attempts import AlreadyRunning, Busy, ConnectAttempts, Overdue
from bot.slack_app import SlackDeps
from bot.slack_metrics import CountingRetryHandler
from flows import setup as setup_flow
from flows.accounts import FieldError
from flows.connect_limits import TooManyAttempts
from flows.providers import guess_servers, mail_provider
from flows.setup import ConnectForm, LinkProblem, SetupState
from models import accounts as account_queries
from models import installations as installation_queries
from models.db import session_scope
from sync.errors import AuthFailed, SyncError, Timeout, TlsFailed, Unreachable
from sync.outbound import HostRefused

log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "emailsync_csrf"
# The form has ten short fields and no file: anything much bigger is refused while it is parsed.
FORM_LIMITS: dict[str, int] = {"max_files": 0, "max_fields": 40, "max_part_size": 16 * 1024}
NAMES_TTL = 3600.0  # seconds a workspace/person name is reused before Slack is asked again
NAMES_RETRY = 60.0  # after Slack could not answer, the ids are shown for this long before asking again
SLACK_LOOKUP_TIMEOUT = 5  # seconds; the page must not hang on a slow Slack

LINK_PROBLEMS = {
    "expired": ("This link has expired", "Connect links work for 15 minutes, to keep your mailbox safe."),
    "used": ("This link was already used", "Each connect link works once. Your mailbox may already be connected."),
    "unknown": ("This link is not valid", "It may be mistyped or belong to someone else."),
    "locked": (
        "This link is used up",
        "It had too many failed sign-in attempts, so it was locked to protect the mailbox. Start again with "
        "/emailsync in Slack; if the password keeps failing, create an app password at your mail provider.",
    ),
}
# Why a password is the wrong way in at these two (shown above their sign-in button).
PASSWORD_WONT_WORK = {
    "google": "Google accepts only an app password for IMAP, not your normal password, and many workspaces turn "
    "app passwords off. Sign in with Google instead: no password is needed.",
    "microsoft": "Microsoft 365 does not accept passwords for IMAP. Sign in with Microsoft instead.",
}
ERROR_TITLES = {
    AuthFailed: "The server did not accept the sign-in",
    Unreachable: "We could not reach the server",
    Timeout: "The server did not answer",
    TlsFailed: "The secure connection failed",
    HostRefused: "This server cannot be used",
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
        from bot.tokens import client_for_team

        workspace: str | None = None
        person: str | None = None
        with session_scope(self.deps.services.db, readonly=True) as session:
            installed = installation_queries.find_latest(session, enterprise_id=None, team_id=team_id)
            workspace = installed.team_name if installed is not None else None
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
        # What _form shows and sets, kept on the request (the POST handler renders through _form too).
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
            return _problem(request, exc.reason)
        await remember(request, state)
        form = _blank_form()
        lead = None
        if state.purpose == "reconnect" and state.account_id is not None:
            # A reconnect knows its address: prefill it, and lead with the way it signed in before.
            form["email"], lead = await run_in_threadpool(_reconnect_hint, deps, state.account_id)
        return _form(request, token, form=form, lead=lead)

    async def submit(request: Request) -> Response:
        token = request.path_params["token"]
        try:  # the link first: an unknown token never gets its body read
            state = await run_in_threadpool(setup_flow.check_link, deps.services.db, token)
        except LinkProblem as exc:
            return _problem(request, exc.reason)
        await remember(request, state)
        data = await request.form(**FORM_LIMITS)
        values = {k: str(v) for k, v in data.items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, values.get("csrf", "")):
            return _form(
                request,
                token,
                form=_echo(values),
                status=403,
                error={"title": "Please try again", "text": "The form expired or came from another page.", "fix": ""},
            )
        email = values.get("email", "").strip()
        if not values.get("password") and sign_in:
            # An address without a password: at Google or Microsoft, show the way that works there.
            lead = await lead_for(email)
            if lead is not None:
                return _form(request, token, form=_echo(values), lead=lead)
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
            shown = _echo(values, guessed.get("form"))
            extra.setdefault("lead", await lead_for(email))  # a failed password at Google/Microsoft: say why
            return _form(
                request, token, form=shown, status=status, error=error, guess_note=guessed.get("note", ""), **extra
            )

        try:
            state = await attempts.run(setup_flow.hash_token(token), attempt)
        except ValueError as exc:
            error = {"title": "Check the server settings", "text": str(exc), "fix": ""}
            return await again(400, error, show_advanced=True)
        except (Busy, AlreadyRunning, Overdue) as exc:
            return await again(503, _busy_error(exc), retry_after=5, lead=None)
        except TooManyAttempts as exc:
            return await again(429, {"title": "Too many failed attempts", "text": exc.message, "fix": ""})
        except LinkProblem as exc:
            return _problem(request, exc.reason)
        except FieldError as exc:
            return await again(400, {"title": "Check your entry", "text": exc.message, "fix": ""})
        except SyncError as exc:
            return await again(400, sync_error(exc), show_advanced=True)
        moved = await run_in_threadpool(_advance, deps, state)
        return templates.TemplateResponse(request, "done.html", {"email": state.draft.email, "moved": moved})

    from bot.signin_page import routes as sign_in_routes

    return [
        Route("/connect/{token}", page, methods=["GET"]),
        Route("/connect/{token}", submit, methods=["POST"]),
        *sign_in_routes(deps, attempts=attempts, remember=remember),
    ]


def sync_error(exc: SyncError) -> dict[str, str]:
    """The page's error box for a failed connection test."""
    title = next((t for cls, t in ERROR_TITLES.items() if isinstance(exc, cls)), "The connection failed")
    return {"title": title, "text": exc.message, "fix": exc.fix}


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
    with session_scope(deps.services.db, readonly=True) as session:
        account = account_queries.get_account(session, account_id)
        if account is None:
            return "", None
        email, provider_name = account.email, account.oauth_provider if account.auth_kind == "oauth" else None
    provider = deps.services.oauth.get(provider_name) if provider_name else None
    if provider is not None:
        return email, {
            "provider": provider.name,
            "display": provider.display_name,
            "why": f"This mailbox was connected by signing in with {provider.display_name}: sign in again.",
        }
    return email, _lead(deps, email)


def _advance(deps: SlackDeps, state: SetupState) -> str:
    from bot.listeners.setup import advance_after_connect

    try:
        return advance_after_connect(deps, state)
    except Exception:  # Slack being down must not turn a good connection into an error page
        log.exception("setup %s: could not tell Slack about the connection", state.session_id)
        return "none"


def _busy_error(exc: Exception) -> dict[str, str]:
    if isinstance(exc, AlreadyRunning):
        text = "A test of this link is still running. Wait for it to finish, then try again."
    elif isinstance(exc, Overdue):
        text = "Testing the connection took too long. Try again in a moment."
    else:
        text = "Many connections are being tested right now. Try again in a few seconds."
    return {"title": "Busy, try again", "text": text, "fix": ""}


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


def _blank_form() -> dict[str, Any]:
    return {
        k: ""
        for k in (
            "email",
            "imap_host",
            "imap_port",
            "imap_security",
            "username",
            "smtp_host",
            "smtp_port",
            "smtp_security",
        )
    }


def _echo(values: dict[str, str], form: ConnectForm | None = None) -> dict[str, Any]:
    """What to show again in the form: what was typed (or guessed), never the password."""
    shown = _blank_form()
    shown.update({k: v for k, v in values.items() if k in shown})
    if form is not None:
        shown.update(
            imap_host=form.imap_host,
            imap_port=form.imap_port,
            imap_security=form.imap_security,
            smtp_host=form.smtp_host,
            smtp_port=form.smtp_port or "",
            smtp_security=form.smtp_security,
        )
    return shown


def _form(
    request: Request,
    token: str,
    *,
    form: dict[str, Any],
    status: int = 200,
    error: dict[str, str] | None = None,
    show_advanced: bool = False,
    guess_note: str = "",
    retry_after: int | None = None,
    lead: dict[str, str] | None = None,
) -> Response:
    csrf = pysecrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request,
        "connect.html",
        {
            "action": f"/connect/{token}",
            "csrf": csrf,
            "form": form,
            "error": error,
            "show_advanced": show_advanced,
            "guess_note": guess_note,
            "connecting_for": getattr(request.state, "connecting_for", None),
            "sign_in": getattr(request.state, "sign_in", []),
            "lead": lead,
        },
        status_code=status,
    )
    # Secure follows PUBLIC_BASE_URL: behind a TLS-terminating proxy the request itself arrives as http.
    secure = getattr(request.state, "secure_cookie", request.url.scheme == "https")
    response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/connect", secure=secure)
    response.headers["Cache-Control"] = "no-store"
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _problem(request: Request, reason: str) -> Response:
    title, text = LINK_PROBLEMS[reason]
    status = 410 if reason in ("expired", "used", "locked") else 404
    return templates.TemplateResponse(request, "link_problem.html", {"title": title, "text": text}, status_code=status)
