"""Limits of the web process: capped bodies, read deadlines, security headers, no tracebacks, no secrets in logs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Iterable, Mapping

import h11
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

SLACK_SIGNATURE_MAX_AGE = 5 * 60  # seconds; what Slack documents and Bolt enforces
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.DOTALL | re.IGNORECASE)
_CONNECT_TOKEN = re.compile(r"(/connect/)[^/?]+")


class BodyTooLarge(Exception):
    """The request body is larger than the cap."""


class BodyTimeout(Exception):
    """The client did not send the whole body within the deadline."""


class MalformedRequest(Exception):
    """The request cannot be understood (answered 400)."""


def style_hashes(*documents: str) -> list[str]:
    """CSP sources that allow exactly the inline <style> blocks of these documents, and nothing else."""
    sources: list[str] = []
    for document in documents:
        for css in _STYLE.findall(document):
            digest = base64.b64encode(hashlib.sha256(css.encode("utf-8")).digest()).decode("ascii")
            source = f"'sha256-{digest}'"
            if source not in sources:
                sources.append(source)
    return sources


def content_security_policy(
    style_sources: Iterable[str], image_sources: Iterable[str] = (), form_targets: Iterable[str] = ()
) -> str:
    """A deny-by-default policy: no scripts, no frames, forms only to this origin, never framed.

    `form_targets` are origins a form's submission may be redirected to: browsers check form-action on every
    redirect, and the "Sign in with ..." button posts here and is redirected to the provider.
    """
    styles = " ".join(style_sources) or "'none'"
    images = " ".join(image_sources) or "'none'"
    forms = " ".join(["'self'", *form_targets])
    return (
        f"default-src 'none'; style-src {styles}; img-src {images}; "
        f"form-action {forms}; base-uri 'none'; frame-ancestors 'none'"
    )


def slack_signature_ok(secret: str, body: bytes, headers: Mapping[str, str], *, now: float | None = None) -> bool:
    """Slack's v0 signature over the raw body, at most 5 minutes old.

    slack_sdk's SignatureVerifier decodes a bytes body as UTF-8 first, so invalid UTF-8 would raise
    there; the HMAC is computed over the bytes here, before anything decodes or parses them.
    """
    timestamp = headers.get("x-slack-request-timestamp", "")
    signature = headers.get("x-slack-signature", "")
    if not secret or not timestamp.isascii() or not timestamp.isdigit() or not signature:
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > SLACK_SIGNATURE_MAX_AGE:
        return False
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    expected = "v0=" + hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), signature.encode("utf-8", "replace"))


def slack_body_well_formed(body: object) -> bool:
    """True when a parsed Slack body has the shape Bolt's routing indexes into.

    Bolt's matchers assume `event` is an object, `actions` a list of objects and so on; a signed body
    that breaks this would crash inside Bolt (a 500) instead of being refused as a bad request.
    """
    if not isinstance(body, dict):
        return False
    if not isinstance(body.get("type"), str | None):
        return False
    for name in ("event", "view", "container", "team", "user", "channel", "enterprise", "message"):
        if name in body and not isinstance(body[name], dict | None):
            return False
    event = body.get("event")
    if isinstance(event, dict) and not isinstance(event.get("type"), str | None):
        return False
    for name in ("actions", "authorizations"):
        items = body.get(name)
        if items is not None and not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
            return False
    return True


def redact_target(target: str) -> str:
    """A request target fit for a log: the connect token and every query string (OAuth codes) removed."""
    path, sep, _query = target.partition("?")
    path = _CONNECT_TOKEN.sub(r"\1[token]", path)
    return path + ("?[redacted]" if sep else "")


class RedactSecrets(logging.Filter):
    """Rewrites uvicorn's access log records so one-time tokens and OAuth codes never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the target (uvicorn passes client, method, target, version, status as args)."""
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access logger (a logger filter: it holds for every handler)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())


def _declared_body(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (h11 already refused malformed ones) and whether a body follows."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked or bool(length)


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class WebLimits:
    """Pure ASGI middleware around every request.

    - the body is capped (413), by its Content-Length at once and while it streams (chunked, or a lying length);
    - the whole body must arrive within body_timeout seconds of the request headers (408);
    - every response carries the security headers (CSP, nosniff, no-referrer, no-store);
    - an answer given before the body was read closes the connection instead of reading the rest;
    - an exception becomes a plain 400 (malformed input) or 500, never a traceback in the body.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, body_timeout: float, content_security_policy: str) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.security_headers = [
            (b"content-security-policy", content_security_policy.encode("ascii")),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-store"),
        ]
        self._replaced = {name for name, _ in self.security_headers}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request within the limits."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, has_body = _declared_body(scope)
        deadline = time.monotonic() + self.body_timeout
        received = 0
        body_done = not has_body
        started = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:
                return await receive()  # only a disconnect is left to wait for: no deadline
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            return message

        async def secured_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in self._replaced]
                headers += self.security_headers
                if not body_done:
                    # Answered before the body was read (too large, unknown link, timeout): close the
                    # connection rather than read, or wait for, the rest of it.
                    headers.append((b"connection", b"close"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if declared is not None and declared > self.max_body_bytes:
                raise BodyTooLarge
            await self.app(scope, limited_receive, secured_send)
        except BodyTooLarge:
            if not started:
                await _plain(secured_send, 413, f"Request body too large (at most {self.max_body_bytes} bytes).")
        except BodyTimeout:
            if not started:
                await _plain(secured_send, 408, "Request timeout: the body did not arrive in time.")
        except (MalformedRequest, UnicodeDecodeError):
            if not started:
                await _plain(secured_send, 400, "Bad request.")
        except ClientDisconnect:
            pass  # nobody is left to answer
        except Exception:
            # The path may carry a one-time token: log it redacted. SQL parameters are hidden by the engine.
            log.error("%s %s failed", scope.get("method"), redact_target(scope.get("path", "")), exc_info=True)
            if not started:
                await _plain(secured_send, 500, "Internal server error.")


def h11_with_header_deadline(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, where a request's headers must arrive within `seconds`.

    uvicorn only times out idle keep-alive connections, and any byte restarts that: a client sending one
    header byte every few seconds would hold its connection forever. Here the deadline starts when the
    connection opens or the previous response ends, and only complete headers stop it (the body then
    has its own deadline in WebLimits).
    """

    class HeaderDeadlineH11Protocol(H11Protocol):
        """H11Protocol with a deadline on each request's headers."""

        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._headers_arrived()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_deadline()
                self._headers_arrived()  # a pipelined request may already be in

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(seconds, self._header_deadline_passed)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_arrived(self) -> None:
            if self.conn.their_state is not h11.IDLE:
                self._disarm_header_deadline()

        def _header_deadline_passed(self) -> None:
            self._header_deadline = None
            if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
                return
            if self.conn.trailing_data[0]:  # part of a request came: say why the connection ends
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                    b"content-length: 16\r\nconnection: close\r\n\r\nRequest timeout."
                )
            self.transport.close()

    return HeaderDeadlineH11Protocol
