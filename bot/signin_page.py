"""The connect page's sign-in with Google and Microsoft: the button's POST, the provider's callback, the choice.

POST /connect/{token}/oauth/{provider} (CSRF-checked like the form) sends the browser to the provider with a
one-time state, and gives it a key in a cookie (path /oauth, SameSite=Lax: it comes back with the provider's
top-level redirect, never with a request another site makes); GET /oauth/callback finishes (the same done page
as a password, the Slack modal moves on); POST /oauth/choose answers "which address?". Plain HTML throughout.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
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
    templates,
)
from bot.deps import SlackDeps
from flows import setup as setup_flow
from flows import signin
from flows.accounts import FieldError
from flows.connect_limits import TooManyAttempts
from flows.setup import LINK_LIFETIME, LinkProblem, SetupState
from sync.errors import SyncError
from sync.oauth import PROVIDER_NAMES

log = logging.getLogger(__name__)
BROWSER_COOKIE = "emailsync_signin"
Remember = Callable[[Request, SetupState], Awaitable[None]]


def routes(deps: SlackDeps, *, attempts: ConnectAttempts, remember: Remember) -> list[Route]:
    """The sign-in routes; `attempts` and `remember` are the connect page's own (one test per link, names)."""
    services = deps.services
    settings = services.settings
    db, box, oauth = services.db, services.secrets, services.oauth
    secure_cookie = deps.public_base_url.lower().startswith("https://")
    redirect_uri = deps.public_base_url.rstrip("/") + signin.CALLBACK_PATH

    def to_provider(started: signin.SignInStart) -> Response:
        response = RedirectResponse(started.authorize_url, status_code=302)
        response.set_cookie(
            BROWSER_COOKIE,
            started.browser_key,
            max_age=int(LINK_LIFETIME.total_seconds()),
            path="/oauth",
            httponly=True,
            samesite="lax",
            secure=secure_cookie,
        )
        return response

    async def begin(request: Request) -> Response:
        token, name = request.path_params["token"], request.path_params["provider"]
        try:  # the link first: an unknown token never gets its body read
            state = await run_in_threadpool(setup_flow.check_link, db, token)
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        provider = oauth.get(name) if name in PROVIDER_NAMES else None
        if provider is None:
            return _refusal(request, "unknown", token, status=404)
        await remember(request, state)
        data = await request.form(**FORM_LIMITS)
        values = {k: str(v) for k, v in data.items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, values.get("csrf", "")):
            error = {"title": "Please try again", "text": "The form expired or came from another page.", "fix": ""}
            return render_form(request, token, form=echo(values), status=403, error=error)
        typed = values.get("email", "").strip()
        try:
            started = await run_in_threadpool(
                signin.start,
                db,
                box,
                oauth,
                token,
                provider.name,
                redirect_uri=redirect_uri,
                typed_email=typed if "@" in typed else "",
            )
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        except SyncError as exc:  # the provider's discovery document did not answer
            error = {"title": f"Sign in with {provider.display_name} is unavailable", "text": exc.message, "fix": ""}
            return render_form(request, token, form=echo(values), status=503, error=error, retry_after=30)
        return to_provider(started)

    async def callback(request: Request) -> Response:
        query = request.query_params
        try:
            flow = await run_in_threadpool(
                signin.resume, db, box, query.get("state", ""), request.cookies.get(BROWSER_COOKIE, "")
            )
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        except signin.SignInRefused as exc:
            return _refusal(request, exc.reason, exc.token, status=403 if exc.reason == "browser" else 400)
        code = query.get("code", "")
        if query.get("error") or not code:  # "Deny" on the consent page, or the provider's own refusal
            await run_in_threadpool(signin.end, db, flow)
            return _refusal(request, "denied", flow.token)
        try:
            signed_in = await run_in_threadpool(signin.authenticate, oauth, flow, code=code)
        except signin.SignInRefused as exc:
            await run_in_threadpool(signin.end, db, flow)
            return _refusal(request, exc.reason, flow.token)
        except SyncError as exc:  # the token endpoint is down or refused the app
            await run_in_threadpool(signin.end, db, flow)
            return _refusal(request, "failed", flow.token, text=f"{exc.message} Nothing was connected; sign in again.")
        if signin.needs_choice(flow, signed_in):
            choice = await run_in_threadpool(signin.hold_for_choice, db, box, flow, signed_in)
            provider = oauth.get(flow.provider)
            return templates.TemplateResponse(
                request,
                "choose.html",
                {
                    "typed": choice.typed,
                    "signed_in": choice.signed_in,
                    "provider": provider.display_name if provider else flow.provider,
                    "key": choice.choice_key,
                    "can_connect": choice.can_connect,
                    "token": choice.token,
                },
            )
        return await finish(request, flow, signed_in)

    async def choose(request: Request) -> Response:
        data = await request.form(**FORM_LIMITS)
        values = {k: str(v) for k, v in data.items()}
        try:
            flow = await run_in_threadpool(
                signin.resume, db, box, values.get("key", ""), request.cookies.get(BROWSER_COOKIE, ""), stage="choose"
            )
            signed_in = signin.chosen(flow)
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        except signin.SignInRefused as exc:
            return _refusal(request, exc.reason, exc.token, status=403 if exc.reason == "browser" else 400)
        if values.get("decision") == "connect" and not flow.expected:
            return await finish(request, flow, signed_in)
        # Sign in again: the tokens held for the other address are given back, and a new sign-in begins.
        await run_in_threadpool(signin.discard, oauth, flow, signed_in)
        try:
            started = await run_in_threadpool(
                signin.start,
                db,
                box,
                oauth,
                flow.token,
                flow.provider,
                redirect_uri=redirect_uri,
                typed_email=flow.typed,
                select_account=True,
            )
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        except (KeyError, SyncError):
            return _refusal(request, "failed", flow.token)
        return to_provider(started)

    async def finish(request: Request, flow: signin.Flow, signed_in: signin.SignedIn) -> Response:
        """Test the mailbox with the new token in the connect page's pool, store it, move the modal on."""

        def attempt() -> SetupState:
            return signin.connect(
                db,
                box,
                oauth,
                flow,
                signed_in,
                timeout=settings.imap_timeout,
                ssl_context=deps.ssl_context,
                outbound=settings.outbound_policy,
                deadline_seconds=settings.connect_deadline,
                limits=settings.attempt_limits,
            )

        async def again(status: int, error: dict[str, str], **extra: Any) -> Response:
            """The connect page once more (the link is still good), saying what went wrong."""
            try:
                state = await run_in_threadpool(setup_flow.check_link, db, flow.token)
            except LinkProblem as exc:
                return problem_page(request, exc.reason)
            await remember(request, state)
            form = {**blank_form(), "email": flow.expected or flow.typed or signed_in.email}
            return render_form(request, flow.token, form=form, status=status, error=error, **extra)

        try:
            state = await attempts.run(flow.token_hash, attempt)
        except (Busy, AlreadyRunning) as exc:
            # The test never ran: nothing is kept, the tokens go back, the person signs in again.
            await run_in_threadpool(signin.end, db, flow)
            await run_in_threadpool(signin.discard, oauth, flow, signed_in)
            return await again(503, busy_error(exc), retry_after=5)
        except Overdue as exc:  # still running: it stores the mailbox, or ends the sign-in, by itself
            return await again(503, busy_error(exc), retry_after=5)
        except TooManyAttempts as exc:
            return await again(429, {"title": "Too many failed attempts", "text": exc.message, "fix": ""})
        except LinkProblem as exc:
            return problem_page(request, exc.reason)
        except FieldError as exc:
            return await again(400, {"title": "Check your entry", "text": exc.message, "fix": ""})
        except SyncError as exc:
            return await again(400, sync_error(exc))
        moved = await run_in_threadpool(tell_slack_connected, deps, state)
        response = done_page(request, email=signed_in.email, purpose=state.purpose, moved=moved)
        response.delete_cookie(BROWSER_COOKIE, path="/oauth")
        return response

    return [
        Route("/connect/{token}/oauth/{provider}", begin, methods=["POST"]),
        Route(signin.CALLBACK_PATH, callback, methods=["GET"]),
        Route("/oauth/choose", choose, methods=["POST"]),
    ]


def _refusal(request: Request, reason: str, token: str | None, *, status: int = 400, text: str = "") -> Response:
    """Why the sign-in stopped, with the way back to the connect page when the link is still good."""
    title, default_text = signin.REFUSALS.get(reason, signin.REFUSALS["unknown"])
    back = f"/connect/{token}" if token else None
    context = {"title": title, "text": text or default_text, "back": back}
    return templates.TemplateResponse(request, "signin_problem.html", context, status_code=status)
