"""What the connect page and the sign-in pages share: templates, the form's rendering, errors and limits."""

from __future__ import annotations

import secrets as pysecrets
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from bot.connect_attempts import AlreadyRunning, Overdue
from flows.setup import ConnectForm
from sync.errors import AuthFailed, SyncError, Timeout, TlsFailed, Unreachable
from sync.outbound import HostRefused

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
CSRF_COOKIE = "emailsync_csrf"
# The form has ten short fields and no file: anything much bigger is refused while it is parsed.
FORM_LIMITS: dict[str, int] = {"max_files": 0, "max_fields": 40, "max_part_size": 16 * 1024}
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
ERROR_TITLES = {
    AuthFailed: "The server did not accept the sign-in",
    Unreachable: "We could not reach the server",
    Timeout: "The server did not answer",
    TlsFailed: "The secure connection failed",
    HostRefused: "This server cannot be used",
}


def sync_error(exc: SyncError) -> dict[str, str]:
    """The page's error box for a failed connection test."""
    title = next((t for cls, t in ERROR_TITLES.items() if isinstance(exc, cls)), "The connection failed")
    return {"title": title, "text": exc.message, "fix": exc.fix}


def busy_error(exc: Exception) -> dict[str, str]:
    """The page's error box when the connection test could not run now."""
    if isinstance(exc, AlreadyRunning):
        text = "A test of this link is still running. Wait for it to finish, then try again."
    elif isinstance(exc, Overdue):
        text = "Testing the connection took too long. Try again in a moment."
    else:
        text = "Many connections are being tested right now. Try again in a few seconds."
    return {"title": "Busy, try again", "text": text, "fix": ""}


def blank_form() -> dict[str, Any]:
    """The form's fields, all empty."""
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


def echo(values: dict[str, str], form: ConnectForm | None = None) -> dict[str, Any]:
    """What to show again in the form: what was typed (or guessed), never the password."""
    shown = blank_form()
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


def render_form(
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
    """The connect form with a fresh CSRF cookie, never cached."""
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


def problem_page(request: Request, reason: str) -> Response:
    """The page for a link that cannot be used (expired, used, unknown, locked)."""
    title, text = LINK_PROBLEMS[reason]
    status = 410 if reason in ("expired", "used", "locked") else 404
    return templates.TemplateResponse(request, "link_problem.html", {"title": title, "text": text}, status_code=status)


def done_page(request: Request, *, email: str, purpose: str, moved: str) -> Response:
    """The success page: names the mailbox and says what happens next in Slack (`moved` is where Slack was told)."""
    return templates.TemplateResponse(request, "done.html", {"email": email, "purpose": purpose, "moved": moved})
