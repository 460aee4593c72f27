"""Open and click tracking without Slack: tokens with an HMAC, the tracked HTML, verdicts, recorded events."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import html
import json
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine

from flows.scanners import APPLE_MPP_USER_AGENT, human_proxy, scanner
from models import sending
from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox

TOKEN_LABEL = "emailsync tracking token"
# One token: 16 random bytes, then 10 bytes of HMAC over them (so an altered token is refused unread).
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{14}$")
# The links our own HTML builder writes: <a href="...">text</a>, nothing else in the tag.
_LINK = re.compile(r'<a href="([^"]*)">(.*?)</a>', re.S)
_URL_TEXT = re.compile(r"^\s*(https?://|www\.)\S*\s*$", re.I)
NOTIFY_DAYS = 30


def new_token(box: SecretBox) -> str:
    """A random token with its HMAC."""
    import base64

    raw = secrets.token_bytes(16)
    body = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return f"{body}.{_mac(box.derived_keys(TOKEN_LABEL)[0], body)}"


def token_valid(box: SecretBox, token: str) -> bool:
    """True when the token has our shape and a valid HMAC (any configured key)."""
    if not _TOKEN.match(token):
        return False
    body, mac = token.split(".")
    return any(hmac.compare_digest(mac, _mac(key, body)) for key in box.derived_keys(TOKEN_LABEL))


def _mac(key: bytes, body: str) -> str:
    import base64

    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()[:10]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def trackable_links(body_html: str) -> list[str]:
    """The http(s) targets a tracked copy rewrites, in order (the n of /t/c/{token}/{n})."""
    found: list[str] = []
    for href, text in _LINK.findall(body_html):
        url = html.unescape(href)
        if _rewritable(url, text) and url not in found:
            found.append(url)
    return found


def _rewritable(url: str, text: str) -> bool:
    # mailto:, tel:, #anchors and anything not http(s) stay; a link showing a URL stays that URL, so what
    # the person reads is where it goes (a rewritten one would look like phishing).
    if not re.match(r"^https?://", url, re.I):
        return False
    return not _URL_TEXT.match(html.unescape(re.sub(r"<[^>]+>", "", text)))


def tracked_html(body_html: str, *, base_url: str, token: str | None, links: list[str], pixel: bool) -> str:
    """The HTML one recipient gets: links rewritten to /t/c/{token}/{n}, a pixel at the end."""
    base = base_url.rstrip("/")
    out = body_html
    if token is not None and links:

        def rewrite(match: re.Match[str]) -> str:
            url = html.unescape(match.group(1))
            if not _rewritable(url, match.group(2)) or url not in links:
                return match.group(0)
            return f'<a href="{base}/t/c/{token}/{links.index(url)}">{match.group(2)}</a>'

        out = _LINK.sub(rewrite, out)
    if token is not None and pixel:
        out += f'<img src="{base}/t/o/{token}.gif" width="1" height="1" alt="" style="border:0;width:1px;height:1px">'
    return out


@dataclass(frozen=True)
class Hit:
    """One request to a tracking URL, as the web process saw it."""

    token: str
    kind: str  # open | click
    link: int | None
    method: str
    user_agent: str
    referer: str = ""


@dataclass(frozen=True)
class Recorded:
    """What a hit did: the redirect target of a click, and whether Slack should hear of it."""

    sent_email_id: int | None
    target: str | None = None
    human: bool = False
    notify: bool = False  # a person's open or first click of a link, with notifications on and not stopped
    recipient: str | None = None


def verdict(
    hit: Hit, *, sent_at: dt.datetime, now: dt.datetime, quiet: float, own_origin: str, own_copy: bool = False
) -> str | None:
    """None for a person's open or click; else the reason it is a machine's (or the sender's own)."""
    if hit.method == "HEAD":
        return "head"
    if hit.user_agent.strip() == APPLE_MPP_USER_AGENT:
        return "apple_mpp"
    if own_copy or (own_origin and hit.referer.startswith(own_origin)):
        return "sender"  # the sender's own copy (they wrote to themselves too), or opened from the app's pages
    if not human_proxy(hit.user_agent) and scanner(hit.user_agent):
        return "scanner"
    if (now - sent_at).total_seconds() < quiet:
        return "too_soon"
    return None


def record(db: Engine, box: SecretBox, hit: Hit, *, quiet: float, own_origin: str) -> Recorded:
    """Record a hit on a tracking URL; an unknown or altered token records nothing."""
    if not token_valid(box, hit.token):
        return Recorded(None)
    now = utcnow()
    with session_scope(db) as session:
        found = sending.by_token(session, hit.token)
        if found is None:
            return Recorded(None)
        token, sent = found
        assert sent.id is not None and token.id is not None
        target = None
        if hit.kind == "click":
            links = json.loads(sent.links or "[]")
            if hit.link is None or not 0 <= hit.link < len(links):
                return Recorded(None)
            target = safe_target(links[hit.link])
            if target is None:
                return Recorded(None)
        own_copy = token.recipient is not None and token.recipient == sending.sender_address(session, sent)
        reason = verdict(hit, sent_at=sent.sent_at, now=now, quiet=quiet, own_origin=own_origin, own_copy=own_copy)
        sending.add_event(
            session,
            sent_email_id=sent.id,
            token_id=token.id,
            kind=hit.kind,
            link=hit.link,
            human=reason is None,
            reason=reason,
            user_agent=hit.user_agent[:512],
            at=now,
        )
        notify = False
        if reason is None:
            sending.count_human(session, sent_email_id=sent.id, kind=hit.kind, at=now)
            session.flush()
            first_click = hit.kind == "click" and sending.first_human_click(
                session, sent_email_id=sent.id, link=hit.link or 0
            )
            notify = (
                sent.notify
                and (hit.kind == "open" or first_click)
                and now - sent.sent_at < dt.timedelta(days=NOTIFY_DAYS)
                and not sending.reply_arrived(session, sent)
            )
        return Recorded(sent.id, target, reason is None, notify, token.recipient)


def safe_target(url: str) -> str | None:
    """The stored target when it is an http(s) URL; never javascript:, data: or anything else."""
    stripped = url.strip()
    if re.match(r"^https?://[^\s/?#]+", stripped, re.I) and not any(c in stripped for c in "\r\n\t\x00"):
        return stripped
    return None


def who_opened(db: Engine, *, team_id: str, recipient: str | None) -> str:
    """How the DM names the recipient: the contact's name, else the address ("Someone" when tracked per message)."""
    if recipient is None:
        return "Someone"
    from models import contacts

    with session_scope(db, readonly=True) as session:
        return contacts.contact_name(session, team_id=team_id, email=recipient) or recipient
