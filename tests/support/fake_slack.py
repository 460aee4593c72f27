"""A strict fake of Slack's Web API on loopback, so the real Bolt app can be tested without Slack.

``FakeSlack`` is a ``ThreadingHTTPServer`` on ``127.0.0.1:0``. Point a ``slack_sdk`` ``WebClient`` at
``fake.api_url`` (``WebClient(base_url=fake.api_url, token=...)``) and every Web API call lands here. It
speaks the wire protocol ``WebClient`` uses: form-encoded or JSON POSTs, GETs with a query string,
arguments in the query string of a POST, ``Authorization: Bearer`` (or a form/query ``token``) and, for
``oauth.v2.access``, HTTP Basic client credentials. Slack ignores a ``token`` inside a JSON body and so
does the fake.

It keeps what a test wants to look at: ``calls`` (every call in order, as ``Call``), ``messages``,
``views`` (with their stacks, hashes and closed state), ``home_tabs``, ``ephemerals`` and
``response_url_posts``. It is strict where Slack is: triggers expire after ``trigger_ttl`` seconds and
are single use, ``views.update`` honours ``hash``, a closed view is ``not_found``, a modal stack holds at
most three views, and every view and every message's ``blocks`` go through ``slack_sdk``'s Block Kit
models *recursively* (``to_dict()``; ``validate_json()`` alone only checks the top object), plus the
checks Slack makes and ``slack_sdk`` does not: unknown block or element types, unknown properties, a
string where Slack wants a text object, empty strings and arrays, duplicate ``block_id`` (or
``action_id`` within a block), and a modal with input blocks but no ``submit``.

Error names are Slack's own: a reused trigger is ``exchanged_trigger_id``, an expired one
``expired_trigger_id``, an unknown one ``invalid_trigger_id``; a wrong OAuth client secret is
``bad_client_secret``.

Posts to response URLs (``fake.response_url()``) are recorded in ``response_url_posts`` and also as a
``Call`` with method ``"response_url"``, so ``wait_for("response_url")`` works.

Socket Mode: ``apps.connections.open`` takes an app-level token (``xapp-``) of ``fake.app_tokens`` and
answers a URL of ``fake.socket_mode_url()``; ``tests.support.socket_mode.FakeSocketMode`` sets both. Any
other method refuses an app-level token with ``not_allowed_token_type``, as Slack does.

Files: ``fake.add_file(...)`` stores a file a person shared (in a DM with the bot, or a channel);
``files.info`` answers for it as Slack does (``file_not_found`` for a file shared nowhere the bot is), and
its ``url_private_download`` serves the bytes only with a valid token of the file's workspace in an
``Authorization: Bearer`` header. Without one the fake answers, like Slack, with its sign-in page: HTTP 200
and ``text/html``. Downloads are recorded as calls with method ``"files.download"``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import secrets
import string
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from slack_sdk.models.blocks import Block, Option
from slack_sdk.models.views import View

__all__ = [
    "APP_ID",
    "BOT_ID",
    "BOT_USER_ID",
    "STATE_KEYS",
    "TEAM_DOMAIN",
    "TEAM_ID",
    "TEAM_NAME",
    "Call",
    "FakeSlack",
    "FakeSlackError",
    "block_kit_errors",
    "interactive_elements",
    "options_errors",
    "view_errors",
]

TEAM_ID = "T0001"
TEAM_NAME = "Fake Team"
TEAM_DOMAIN = "fake-team"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
APP_ID = "A0001"

MODAL_MAX_BLOCKS = 100
MESSAGE_MAX_BLOCKS = 50
MESSAGE_MAX_TEXT = 40_000
PRIVATE_METADATA_MAX = 3000
VIEW_STACK_MAX = 3
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL = 30 * 60

# Keys Slack adds to a view it returns; an app may send them back (e.g. views.update with body["view"]).
_VIEW_SERVER_KEYS = {
    "id",
    "team_id",
    "app_id",
    "bot_id",
    "hash",
    "state",
    "root_view_id",
    "previous_view_id",
    "app_installed_team_id",
}
_JSON_ARGS = ("view", "blocks", "attachments", "metadata")
# Element types whose value lives under these keys in view.state.values.
STATE_KEYS = {
    "plain_text_input": "value",
    "email_text_input": "value",
    "url_text_input": "value",
    "number_text_input": "value",
    "static_select": "selected_option",
    "external_select": "selected_option",
    "radio_buttons": "selected_option",
    "multi_static_select": "selected_options",
    "multi_external_select": "selected_options",
    "checkboxes": "selected_options",
    "users_select": "selected_user",
    "multi_users_select": "selected_users",
    "conversations_select": "selected_conversation",
    "multi_conversations_select": "selected_conversations",
    "channels_select": "selected_channel",
    "multi_channels_select": "selected_channels",
    "datepicker": "selected_date",
    "timepicker": "selected_time",
    "datetimepicker": "selected_date_time",
    "rich_text_input": "rich_text_value",
    "file_input": "files",
}


@dataclass
class Call:
    """One request the fake answered (Web API method, or ``"response_url"``)."""

    method: str
    args: dict[str, Any]
    token: str | None
    status: int
    response: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers sent (e.g. Retry-After)
    at: float = field(default_factory=time.time)
    url: str | None = None  # for "response_url" calls: the response URL posted to

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.ok else str(self.response.get("error") or f"http_{self.status}")

    def summary(self) -> str:
        args = json.dumps(self.args, default=str)
        if len(args) > 160:
            args = args[:157] + "..."
        return f"{self.method} -> {self.status} {self.error or 'ok'} {args}"


class FakeSlackError(ValueError):
    """A Slack-style refusal: ``error`` is Slack's error code, ``messages`` its response_metadata."""

    def __init__(self, error: str, messages: list[str] | None = None, *, status: int = 200) -> None:
        super().__init__(error + (": " + "; ".join(messages) if messages else ""))
        self.error = error
        self.messages = messages or []
        self.status = status


# ----------------------------------------------------------------------------------------------
# Block Kit validation (pure functions, also used by the driver for response_action views/options)
# ----------------------------------------------------------------------------------------------


def _err(text: str, pointer: str) -> str:
    return f"[ERROR] {text} [json-pointer:{pointer}]"


def _dropped(src: Any, out: Any, pointer: str) -> list[str]:
    """What slack_sdk silently dropped or coerced while parsing ``src`` into ``out``: Slack refuses those."""
    errors: list[str] = []
    if isinstance(src, dict):
        if out is None:
            return [_err(f"unsupported type: {src.get('type')!r}", pointer)]
        if not isinstance(out, dict):
            return []
        for key, value in src.items():
            path = f"{pointer}/{key}"
            if key in out:
                errors.extend(_dropped(value, out[key], path))
            elif value is None:
                continue
            elif value == "":  # Slack wants the property left out rather than empty
                errors.append(_err("must be more than 0 characters", path))
            elif value == [] or value == {}:
                errors.append(_err("must provide at least 1 item", path))
            else:
                errors.append(_err(f"invalid additional property: {key}", pointer))
    elif isinstance(src, list):
        if isinstance(out, list) and len(out) == len(src):
            for i, (a, b) in enumerate(zip(src, out, strict=True)):
                errors.extend(_dropped(a, b, f"{pointer}/{i}"))
    elif isinstance(src, str) and isinstance(out, dict):
        errors.append(_err("must provide an object", pointer))
    return errors


def interactive_elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The interactive elements of one block (actions, input, section accessory)."""
    found: list[Any] = []
    kind = block.get("type")
    if kind == "actions":
        found = list(block.get("elements") or [])
    elif kind == "input":
        found = [block.get("element")]
    elif kind == "section":
        found = [block.get("accessory")]
    return [e for e in found if isinstance(e, dict) and e.get("type") not in (None, "image")]


def block_kit_errors(blocks: Any, pointer: str = "/blocks", *, limit: int = MESSAGE_MAX_BLOCKS) -> list[str]:
    """Slack-style error messages for a list of blocks (empty when Slack would accept them)."""
    if not isinstance(blocks, list):
        return [_err("must provide an array", pointer)]
    if len(blocks) > limit:
        return [_err(f"no more than {limit} items allowed", pointer)]
    errors: list[str] = []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        path = f"{pointer}/{i}"
        if not isinstance(block, dict):
            errors.append(_err("must provide an object", path))
            continue
        try:
            parsed = Block.parse(copy.deepcopy(block))
            if parsed is None:
                errors.append(_err(f"unsupported type: {block.get('type')!r}", f"{path}/type"))
                continue
            out = parsed.to_dict()
        except Exception as exc:  # slack_sdk raises SlackObjectFormationError, TypeError (missing field), ...
            errors.append(_err(str(exc), path))
            continue
        errors.extend(_dropped(block, out, path))
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if block_id in block_ids:
                errors.append(_err(f"duplicate block_id: {block_id}", f"{path}/block_id"))
            block_ids.add(block_id)
        action_ids = [e["action_id"] for e in interactive_elements(block) if isinstance(e.get("action_id"), str)]
        for dup in sorted({a for a in action_ids if action_ids.count(a) > 1}):
            errors.append(_err(f"duplicate action_id: {dup}", path))
    return errors


def view_errors(view: Any, *, allowed_types: tuple[str, ...] = ("modal", "home"), pointer: str = "/view") -> list[str]:
    """Slack-style error messages for a view (empty when Slack would accept it)."""
    if not isinstance(view, dict):
        return [_err("must provide an object", pointer)]
    kind = view.get("type")
    if kind not in allowed_types:
        return [_err(f"must be one of {list(allowed_types)}", f"{pointer}/type")]
    errors: list[str] = []
    if kind == "modal" and not view.get("title"):
        errors.append(_err("missing required field: title", pointer))
    if "blocks" not in view:
        errors.append(_err("missing required field: blocks", pointer))
    for key in sorted(set(view) - View.attributes - _VIEW_SERVER_KEYS):
        errors.append(_err(f"invalid additional property: {key}", pointer))
    for key in ("title", "submit", "close"):
        text = view.get(key)
        if text is None:
            continue
        if not isinstance(text, dict) or text.get("type") != "plain_text" or not isinstance(text.get("text"), str):
            errors.append(_err("must provide a plain_text object", f"{pointer}/{key}"))
    metadata = view.get("private_metadata")
    if metadata is not None and not isinstance(metadata, str):
        errors.append(_err("must be a string", f"{pointer}/private_metadata"))
    elif metadata is not None and len(metadata) > PRIVATE_METADATA_MAX:
        errors.append(_err(f"must be less than {PRIVATE_METADATA_MAX + 1} characters", f"{pointer}/private_metadata"))
    if errors:
        return errors
    try:
        View(**copy.deepcopy(view)).validate_json()  # view-level limits only (title, blocks count, ...)
    except Exception as exc:
        return [_err(str(exc), pointer)]
    blocks = view.get("blocks") or []
    errors.extend(block_kit_errors(blocks, f"{pointer}/blocks", limit=MODAL_MAX_BLOCKS))
    if (
        kind == "modal"
        and not view.get("submit")
        and any(b.get("type") == "input" for b in blocks if isinstance(b, dict))
    ):
        errors.append(_err("must provide submit when the view contains an input block", f"{pointer}/submit"))
    return errors


def options_errors(body: Any) -> list[str]:
    """Errors in an options-load (block_suggestion) response, as Slack would judge it."""
    if not isinstance(body, dict):
        return [_err("must provide an object", "")]
    if "options" in body and "option_groups" in body:
        return [_err("options and option_groups cannot both be specified", "")]
    errors: list[str] = []
    if "option_groups" in body:
        groups = body["option_groups"]
        if not isinstance(groups, list) or len(groups) > 100:
            return [_err("must provide an array of at most 100 option groups", "/option_groups")]
        for i, group in enumerate(groups):
            if not isinstance(group, dict):
                errors.append(_err("must provide an object", f"/option_groups/{i}"))
                continue
            errors.extend(_option_list_errors(group.get("options"), f"/option_groups/{i}/options"))
        return errors
    return _option_list_errors(body.get("options"), "/options")


def _option_list_errors(options: Any, pointer: str) -> list[str]:
    if not isinstance(options, list):
        return [_err("must provide an array", pointer)]
    if len(options) > 100:
        return [_err("no more than 100 items allowed", pointer)]
    errors: list[str] = []
    for i, option in enumerate(options):
        path = f"{pointer}/{i}"
        if not isinstance(option, dict):
            errors.append(_err("must provide an object", path))
            continue
        text = option.get("text")
        if not isinstance(text, dict) or text.get("type") != "plain_text":
            errors.append(_err("must provide a plain_text object", f"{path}/text"))
            continue
        try:
            out = Option(**copy.deepcopy(option)).to_dict()
        except Exception as exc:
            errors.append(_err(str(exc), path))
            continue
        errors.extend(_dropped(option, out, path))
    return errors


def _add_emoji(node: Any) -> None:
    """Slack returns every plain_text object with ``"emoji": true``."""
    if isinstance(node, dict):
        if node.get("type") == "plain_text" and isinstance(node.get("text"), str):
            node.setdefault("emoji", True)
        for value in node.values():
            _add_emoji(value)
    elif isinstance(node, list):
        for value in node:
            _add_emoji(value)


def _random_id(taken: set[str], length: int = 5) -> str:
    alphabet = string.ascii_letters + string.digits
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def _fill_ids(blocks: list[dict[str, Any]]) -> None:
    """Slack gives every block without a block_id (and every element without an action_id) a random one."""
    taken = {b["block_id"] for b in blocks if isinstance(b.get("block_id"), str)}
    for block in blocks:
        if not isinstance(block.get("block_id"), str):
            block["block_id"] = _random_id(taken)
        elements = interactive_elements(block)
        action_taken = {e["action_id"] for e in elements if isinstance(e.get("action_id"), str)}
        for element in elements:
            if not isinstance(element.get("action_id"), str):
                element["action_id"] = _random_id(action_taken)


def _input_actions(view: dict[str, Any]) -> set[tuple[str, str]]:
    pairs: set[tuple[str, str]] = set()
    for block in view.get("blocks") or []:
        if block.get("type") == "input" and isinstance(block.get("element"), dict):
            pairs.add((block.get("block_id", ""), block["element"].get("action_id", "")))
    return pairs


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


# ----------------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSlack


@dataclass
class _Trigger:
    user_id: str
    expires: float
    view_id: str | None
    used: bool = False


@dataclass
class _Failure:
    error: str
    status: int
    retry_after: int | None
    times: int


@dataclass
class _ResponseUrl:
    channel: str | None
    message_ts: str | None
    expires: float
    uses: int = 0


class FakeSlack:
    """Slack's Web API on loopback. ``start()`` it, point ``WebClient(base_url=fake.api_url)`` at it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.closed_views: set[str] = set()
        self.home_tabs: dict[str, dict[str, Any]] = {}
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.ephemerals: list[dict[str, Any]] = []
        self.response_url_posts: list[dict[str, Any]] = []
        # Overrides merged over the default users.info answer; ``None`` makes the user unknown.
        self.users: dict[str, dict[str, Any] | None] = {}
        # token -> identity (team_id, user_id, bot_id, ...); unknown tokens are the T0001 bot unless strict.
        self.tokens: dict[str, dict[str, Any]] = {}
        self.revoked_tokens: set[str] = set()
        self.strict_tokens = False
        # channel -> error every chat.* call to it gets (e.g. "not_in_channel", "channel_not_found").
        self.channel_errors: dict[str, str] = {}
        self.trigger_ttl = 3.0
        self.client_id: str | None = None  # when set, oauth.v2.access checks it too
        self.client_secret = "fake-secret"
        self.oauth_redirect_uri: str | None = None  # when set, oauth.v2.access must get the same one
        self.oauth_response: dict[str, Any] = {
            "ok": True,
            "app_id": APP_ID,
            "authed_user": {"id": "U0201"},
            "scope": "commands,chat:write,im:write,users:read,users:read.email",
            "token_type": "bot",
            "access_token": "xoxb-fake-T0002-bot-token",
            "bot_user_id": "UBOT2",
            "team": {"id": "T0002", "name": "Second Team"},
            "enterprise": None,
            "is_enterprise_install": False,
        }
        self.used_oauth_codes: set[str] = set()
        # Token rotation: refresh token -> (access token it renews, "bot" | "user"); single use, like Slack's.
        self.refresh_tokens: dict[str, tuple[str, str]] = {}
        self.rotated_token_expires_in = 43200  # seconds, as Slack's rotating tokens
        self.internal_errors: list[str] = []  # tracebacks of bugs in the fake (answered as HTTP 500)
        self.files: dict[str, dict[str, Any]] = {}  # file id -> files.info's "file" object
        self._file_bytes: dict[str, bytes] = {}
        # Socket Mode: apps.connections.open answers valid app-level tokens with a URL of this callable
        # (set by tests.support.socket_mode.FakeSocketMode.attach).
        self.app_tokens: set[str] = set()
        self.socket_mode_url: Callable[[], str] | None = None

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._failures: dict[str, list[_Failure]] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._stacks: dict[str, list[str]] = {}  # root view id -> open view ids, bottom first
        self._root_of: dict[str, str] = {}
        self._view_user: dict[str, str] = {}
        self._external_ids: dict[str, str] = {}
        self._home_ids: dict[str, str] = {}
        self._seq = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._methods: dict[str, tuple[Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]], bool]] = {
            "auth.test": (self._auth_test, True),
            "apps.connections.open": (self._apps_connections_open, False),
            "oauth.v2.access": (self._oauth_v2_access, False),
            "chat.postMessage": (self._chat_post_message, True),
            "chat.update": (self._chat_update, True),
            "chat.postEphemeral": (self._chat_post_ephemeral, True),
            "users.info": (self._users_info, True),
            "files.info": (self._files_info, True),
            "views.open": (self._views_open, True),
            "views.update": (self._views_update, True),
            "views.push": (self._views_push, True),
            "views.publish": (self._views_publish, True),
        }

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-slack", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeSlack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    # -- what tests use --------------------------------------------------------------------------

    @property
    def methods(self) -> frozenset[str]:
        """The Web API methods this fake answers (any other is `unknown_method`, as at Slack)."""
        return frozenset(self._methods)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 10.0,
        predicate: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Wait until ``count`` calls to ``method`` (matching ``predicate``) exist; return all that match."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [c for c in self.calls if c.method == method and (predicate is None or predicate(c))]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n  ".join(c.summary() for c in self.calls) or "(none)"
                    raise AssertionError(
                        f"expected {count} call(s) to {method}{' matching predicate' if predicate else ''} "
                        f"within {timeout}s, got {len(found)}; calls seen:\n  {seen}"
                    )
                self._cond.wait(remaining)

    def issue_trigger_id(self, user_id: str, view_id: str | None = None) -> str:
        """A trigger id as an interaction would carry: single use, valid ``trigger_ttl`` seconds.

        ``view_id`` ties it to the modal the interaction came from (``views.push`` pushes onto that stack).
        """
        with self._lock:
            n = next(self._seq)
            trigger_id = f"{n}.{int(time.time())}.{secrets.token_hex(16)}"
            self._triggers[trigger_id] = _Trigger(user_id, time.monotonic() + self.trigger_ttl, view_id)
            return trigger_id

    def fail_next(
        self,
        method: str,
        *,
        error: str | None = None,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail (before any side effect or auth check).

        ``status=429`` answers HTTP 429 with ``Retry-After`` (default 1) and error ``ratelimited``;
        ``status=200`` answers ``{"ok": false, "error": error}``; a 5xx answers that status.
        """
        if status == 429:
            error = error or "ratelimited"
            retry_after = 1 if retry_after is None else retry_after
        elif status >= 500:
            error = error or ("service_unavailable" if status == 503 else "internal_error")
        elif error is None:
            raise ValueError("fail_next with status 200 needs an error code")
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(error, status, retry_after, times))

    def response_url(self, *, channel: str | None = None, message_ts: str | None = None) -> str:
        """A fresh response URL on the fake (30 minutes, 5 uses, like Slack's).

        Bound to a message (``channel`` + ``message_ts``), ``replace_original`` / ``delete_original``
        edit or delete that message in ``messages``.
        """
        with self._lock:
            key = secrets.token_urlsafe(12)
            self._response_urls[key] = _ResponseUrl(channel, message_ts, time.monotonic() + RESPONSE_URL_TTL)
        return f"{self.base_url}/response/{key}"

    def response_posts_to(self, url: str) -> list[dict[str, Any]]:
        with self._lock:
            return [c.args for c in self.calls if c.method == "response_url" and c.url == url]

    def view(self, view_id: str) -> dict[str, Any]:
        """A deep copy of a view as Slack would send it in a payload now."""
        with self._lock:
            if view_id not in self.views:
                raise KeyError(f"no view {view_id}; known: {sorted(self.views)}")
            return copy.deepcopy(self.views[view_id])

    def view_owner(self, view_id: str) -> str | None:
        with self._lock:
            return self._view_user.get(view_id)

    def is_open(self, view_id: str) -> bool:
        with self._lock:
            return view_id in self.views and view_id not in self.closed_views

    def view_stack(self, view_id: str) -> list[str]:
        """The open views of the modal stack ``view_id`` belongs to, bottom first."""
        with self._lock:
            root = self._root_of.get(view_id)
            return list(self._stacks.get(root, [])) if root else []

    def current_view(self, user_id: str) -> dict[str, Any] | None:
        """The top view of the user's most recently opened modal stack still open, or None."""
        with self._lock:
            for root in reversed(list(self._stacks)):
                stack = self._stacks[root]
                if stack and self._view_user.get(root) == user_id:
                    return copy.deepcopy(self.views[stack[-1]])
            return None

    def set_view_state(self, view_id: str, values: dict[str, Any]) -> None:
        """Record what the user has typed/selected (view.state.values), as the next payload will carry."""
        with self._lock:
            self.views[view_id]["state"] = {"values": copy.deepcopy(values)}

    def close_view(self, view_id: str, *, clear: bool = False) -> None:
        """The user closed (or submitted) a modal: it and the views above it leave the stack."""
        with self._lock:
            root = self._root_of.get(view_id)
            stack = self._stacks.get(root, []) if root else []
            if view_id not in stack:
                self.closed_views.add(view_id)
                return
            cut = 0 if clear else stack.index(view_id)
            for closed in stack[cut:]:
                self.closed_views.add(closed)
                external_id = self.views[closed].get("external_id")
                if external_id:
                    self._external_ids.pop(external_id, None)
            del stack[cut:]
            if not stack and root is not None:
                self._stacks.pop(root, None)

    def replace_view(self, view_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """``response_action: update``: replace an open modal (new hash); raises FakeSlackError if invalid."""
        with self._lock:
            return self._update_view(view_id, view, None)

    def push_view(self, view_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """``response_action: push``: push a modal onto the stack of ``view_id``; raises FakeSlackError."""
        with self._lock:
            return self._push(view_id, view)

    def add_file(
        self,
        *,
        user_id: str,
        name: str,
        content: bytes,
        channel: str | None = None,
        filetype: str | None = None,
        mimetype: str | None = None,
        team_id: str = TEAM_ID,
    ) -> dict[str, Any]:
        """A file ``user_id`` uploaded, shared in ``channel`` (a ``D…`` DM, ``C…`` channel; None: nowhere)."""
        with self._lock:
            file_id = f"F{next(self._seq):010d}"
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
            url = f"{self.base_url}/files-pri/{team_id}-{file_id}"
            info: dict[str, Any] = {
                "id": file_id,
                "created": int(time.time()),
                "timestamp": int(time.time()),
                "name": name,
                "title": name,
                "mimetype": mimetype or ("text/csv" if ext == "csv" else "application/octet-stream"),
                "filetype": filetype or ext,
                "pretty_type": (filetype or ext).upper(),
                "user": user_id,
                "user_team": team_id,
                "editable": False,
                "size": len(content),
                "mode": "hosted",
                "is_external": False,
                "is_public": bool(channel and channel.startswith("C")),
                "url_private": f"{url}/{name}",
                "url_private_download": f"{url}/download/{name}",
                "channels": [channel] if channel and channel.startswith("C") else [],
                "groups": [channel] if channel and channel.startswith("G") else [],
                "ims": [channel] if channel and channel.startswith("D") else [],
            }
            self.files[file_id] = info
            self._file_bytes[file_id] = content
            return copy.deepcopy(info)

    # -- HTTP ------------------------------------------------------------------------------------

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(req.path)
        if parts.path.startswith("/files-pri/"):
            self._serve_file(req, parts.path)
            return
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        if parts.path.startswith("/api/"):
            status, body, headers = self._api(parts.path[len("/api/") :], parts.query, raw, req)
        elif parts.path.startswith("/response/"):
            status, body = self._response_post(parts.path[len("/response/") :], raw, req)
        else:
            status, body = 404, {"ok": False, "error": "not_found"}
        data = json.dumps(body).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(data)

    def _serve_file(self, req: BaseHTTPRequestHandler, path: str) -> None:
        """A private file's bytes for a token of its workspace; Slack's sign-in page (200, HTML) otherwise."""
        auth = req.headers.get("Authorization") or ""
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        with self._cond:
            key = path[len("/files-pri/") :].split("/", 1)[0]
            team_id, _, file_id = key.partition("-")
            info = self.files.get(file_id)
            try:
                identity = self._identity(token, required=True)
                allowed = info is not None and info["user_team"] == team_id and identity.get("team_id") == team_id
            except FakeSlackError:
                allowed = False
            if allowed and req.command == "GET":
                status, kind, data = 200, str(info["mimetype"]), self._file_bytes[file_id]  # type: ignore[index]
            else:
                status, kind = 200, "text/html; charset=utf-8"
                data = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"
            response = {"ok": allowed, "bytes": len(data)} if allowed else {"ok": False, "error": "sign_in_page"}
            self.calls.append(Call("files.download", {"file": file_id}, token, status, response, url=path))
            self._cond.notify_all()
        req.send_response(status)
        req.send_header("Content-Type", kind)
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _parse_args(
        self, query: str, raw: bytes, req: BaseHTTPRequestHandler
    ) -> tuple[dict[str, Any], str | None, tuple[str, str] | None]:
        args: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        token = args.pop("token", None)
        content_type = (req.headers.get("Content-Type") or "").lower()
        if raw:
            if content_type.startswith("application/json"):
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise FakeSlackError("invalid_json", [str(exc)]) from exc
                if not isinstance(body, dict):
                    raise FakeSlackError("invalid_json")
                body.pop("token", None)  # Slack ignores a token inside a JSON body
                args.update(body)
            elif content_type.startswith("application/x-www-form-urlencoded") or not content_type:
                if not content_type:
                    raise FakeSlackError("missing_post_type")
                form = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8"), keep_blank_values=True).items()}
                token = form.pop("token", token)
                args.update(form)
            else:
                raise FakeSlackError("invalid_post_type", [content_type])
        for key in _JSON_ARGS:
            if isinstance(args.get(key), str) and args[key][:1] in ("[", "{"):
                try:
                    args[key] = json.loads(args[key])
                except json.JSONDecodeError as exc:
                    error = "invalid_blocks_format" if key == "blocks" else "invalid_arguments"
                    raise FakeSlackError(error, [_err(f"invalid JSON: {exc}", f"/{key}")]) from exc
        basic: tuple[str, str] | None = None
        auth = req.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            token = auth[len("Bearer ") :].strip() or token
        elif auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[len("Basic ") :]).decode().partition(":")
                basic = (user, password)
            except (ValueError, UnicodeDecodeError):
                basic = None
        return args, token, basic

    def _api(
        self, method: str, query: str, raw: bytes, req: BaseHTTPRequestHandler
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        headers: dict[str, str] = {}
        status = 200
        args: dict[str, Any] = {}
        token: str | None = None
        with self._cond:
            try:
                args, token, basic = self._parse_args(query, raw, req)
                if basic is not None:
                    args.setdefault("client_id", basic[0])
                    args.setdefault("client_secret", basic[1])
                failure = self._pop_failure(method)
                if failure is not None:
                    status = failure.status
                    if failure.retry_after is not None:
                        headers["Retry-After"] = str(failure.retry_after)
                    raise FakeSlackError(failure.error, status=failure.status)
                if method not in self._methods:
                    body: dict[str, Any] = {"ok": False, "error": "unknown_method", "req_method": method}
                else:
                    handler, needs_token = self._methods[method]
                    if handler == self._apps_connections_open:  # an app-level token, checked by the method
                        identity: dict[str, Any] = {"token": token}
                    else:
                        identity = {**self._identity(token, required=needs_token), "token": token}
                    body = {"ok": True, **handler(args, identity)}
            except FakeSlackError as exc:
                status = exc.status
                body = {"ok": False, "error": exc.error}
                if exc.messages:
                    body["response_metadata"] = {"messages": exc.messages}
            except Exception:  # a bug in the fake itself: make it loud in the calls, not a dropped connection
                status = 500
                body = {"ok": False, "error": "fake_slack_bug", "detail": traceback.format_exc()}
                self.internal_errors.append(body["detail"])
            self.calls.append(Call(method, args, token, status, copy.deepcopy(body), dict(headers)))
            self._cond.notify_all()
        return status, body, headers

    def _pop_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.times -= 1
        if failure.times <= 0:
            queue.pop(0)
        return failure

    def _identity(self, token: str | None, *, required: bool) -> dict[str, Any]:
        if token is None:
            if required:
                raise FakeSlackError("not_authed")
            return {}
        if token in self.revoked_tokens:
            raise FakeSlackError("token_revoked")
        if token in self.tokens:
            return self.tokens[token]
        if token.startswith("xapp-"):  # app-level tokens open Socket Mode connections and nothing else
            raise FakeSlackError("not_allowed_token_type")
        if self.strict_tokens or not token.startswith(("xoxb-", "xoxp-", "xoxe")):
            raise FakeSlackError("invalid_auth")
        identity: dict[str, Any] = {
            "team_id": TEAM_ID,
            "team": TEAM_NAME,
            "user_id": BOT_USER_ID,
            "user": "emailsync",
            "bot_id": BOT_ID,
            "enterprise_id": None,
            "is_enterprise_install": False,
        }
        if token.startswith("xoxp-"):
            identity.update(user_id="U0001", user="u0001", bot_id=None)
        return identity

    def _response_post(self, key: str, raw: bytes, req: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        url = f"{self.base_url}/response/{key}"
        with self._cond:
            status: int = 200
            reply: dict[str, Any] = {"ok": True}
            body: Any
            try:
                body = json.loads(raw.decode("utf-8")) if raw else {}
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = {"_raw": raw.decode("utf-8", "replace")}
                status, reply = 400, {"ok": False, "error": "invalid_payload"}
            entry = self._response_urls.get(key)
            if status == 200:
                if entry is None or time.monotonic() > entry.expires:
                    status, reply = 404, {"ok": False, "error": "expired_url"}
                elif entry.uses >= RESPONSE_URL_MAX_USES:
                    status, reply = 404, {"ok": False, "error": "used_url"}
                elif not isinstance(body, dict):
                    status, reply = 400, {"ok": False, "error": "invalid_payload"}
                else:
                    errors = block_kit_errors(body["blocks"]) if "blocks" in body else []
                    if errors:
                        status, reply = 400, {"ok": False, "error": "invalid_blocks", "messages": errors}
                    elif not any(k in body for k in ("text", "blocks", "attachments", "delete_original")):
                        status, reply = 400, {"ok": False, "error": "no_text"}
            if status == 200 and entry is not None:
                entry.uses += 1
                self.response_url_posts.append(body)
                if entry.channel and entry.message_ts and (entry.channel, entry.message_ts) in self.messages:
                    target = (entry.channel, entry.message_ts)
                    if _truthy(body.get("delete_original")):
                        del self.messages[target]
                    elif _truthy(body.get("replace_original")):
                        message = self.messages[target]
                        message["text"] = body.get("text", "")
                        message.pop("blocks", None)
                        if "blocks" in body:
                            message["blocks"] = copy.deepcopy(body["blocks"])
                            _add_emoji(message["blocks"])
            self.calls.append(Call("response_url", body, None, status, reply, url=url))
            self._cond.notify_all()
        return status, reply

    # -- helpers ---------------------------------------------------------------------------------

    def _require(self, args: dict[str, Any], *names: str, error: str = "invalid_arguments") -> None:
        for name in names:
            if args.get(name) in (None, ""):
                raise FakeSlackError(error, [_err(f"missing required field: {name}", "")])

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def _next_view_id(self) -> str:
        return f"V{next(self._seq):010d}"

    @staticmethod
    def _new_hash() -> str:
        return f"{int(time.time())}.{secrets.token_hex(4)}"

    def _check_view(self, view: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
        errors = view_errors(view, allowed_types=allowed)
        if errors:
            raise FakeSlackError("invalid_arguments", errors)
        return view

    def _stored_view(
        self,
        view: dict[str, Any],
        *,
        view_id: str,
        identity: dict[str, Any],
        root_view_id: str | None,
        previous_view_id: str | None,
        state: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        stored = {k: copy.deepcopy(v) for k, v in view.items() if k not in _VIEW_SERVER_KEYS}
        _fill_ids(stored.setdefault("blocks", []))
        _add_emoji(stored)
        team_id = identity.get("team_id", TEAM_ID)
        stored.update(
            id=view_id,
            team_id=team_id,
            state=state or {"values": {}},
            hash=self._new_hash(),
            app_id=APP_ID,
            app_installed_team_id=team_id,
            bot_id=identity.get("bot_id") or BOT_ID,
        )
        stored.setdefault("private_metadata", "")
        stored.setdefault("callback_id", "")
        stored.setdefault("external_id", "")
        if stored["type"] == "modal":
            stored.setdefault("close", None)
            stored.setdefault("submit", None)
            stored.setdefault("clear_on_close", False)
            stored.setdefault("notify_on_close", False)
            stored["root_view_id"] = root_view_id or view_id
            stored["previous_view_id"] = previous_view_id
        else:
            stored["root_view_id"] = None
            stored["previous_view_id"] = None
        return stored

    def _claim_external_id(self, view: dict[str, Any], view_id: str) -> None:
        external_id = view.get("external_id")
        if external_id:
            owner = self._external_ids.get(external_id)
            if owner is not None and owner != view_id:
                raise FakeSlackError("duplicate_external_id")

    def _consume_trigger(self, trigger_id: Any) -> _Trigger:
        if not trigger_id:
            raise FakeSlackError("invalid_arguments", [_err("missing required field: trigger_id", "")])
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise FakeSlackError("invalid_trigger_id")
        if trigger.used:
            raise FakeSlackError("exchanged_trigger_id")
        if time.monotonic() > trigger.expires:
            raise FakeSlackError("expired_trigger_id")
        trigger.used = True
        return trigger

    def _push(self, below_id: str, view: dict[str, Any], identity: dict[str, Any] | None = None) -> dict[str, Any]:
        self._check_view(view, ("modal",))
        root = self._root_of.get(below_id)
        stack = self._stacks.get(root, []) if root else []
        if root is None or not stack or below_id in self.closed_views:
            raise FakeSlackError("not_found", [_err(f"view {below_id} is not open", "")])
        if len(stack) >= VIEW_STACK_MAX:
            raise FakeSlackError("push_limit_reached")
        view_id = self._next_view_id()
        self._claim_external_id(view, view_id)
        identity = identity or {"team_id": self.views[root].get("team_id"), "bot_id": self.views[root].get("bot_id")}
        stored = self._stored_view(
            view, view_id=view_id, identity=identity, root_view_id=root, previous_view_id=stack[-1]
        )
        stack.append(view_id)
        self._root_of[view_id] = root
        self._view_user[view_id] = self._view_user.get(below_id, "")
        self.views[view_id] = stored
        if stored["external_id"]:
            self._external_ids[stored["external_id"]] = view_id
        return copy.deepcopy(stored)

    def _update_view(self, view_id: str, view: Any, expected_hash: Any) -> dict[str, Any]:
        if view_id not in self.views or view_id in self.closed_views:
            raise FakeSlackError("not_found")
        current = self.views[view_id]
        self._check_view(view, (current["type"],))
        if expected_hash not in (None, "") and expected_hash != current["hash"]:
            raise FakeSlackError("hash_conflict")
        self._claim_external_id(view, view_id)
        # Slack keeps what the user typed in inputs whose block_id/action_id survive the update.
        kept_pairs = _input_actions({"blocks": view.get("blocks") or []})
        old_values = current.get("state", {}).get("values", {})
        kept = {
            bid: {aid: v for aid, v in actions.items() if (bid, aid) in kept_pairs}
            for bid, actions in old_values.items()
        }
        stored = self._stored_view(
            view,
            view_id=view_id,
            identity={"team_id": current["team_id"], "bot_id": current["bot_id"]},
            root_view_id=current.get("root_view_id"),
            previous_view_id=current.get("previous_view_id"),
            state={"values": {bid: actions for bid, actions in kept.items() if actions}},
        )
        old_external = current.get("external_id")
        if old_external and self._external_ids.get(old_external) == view_id:
            del self._external_ids[old_external]
        if stored["external_id"]:
            self._external_ids[stored["external_id"]] = view_id
        self.views[view_id] = stored
        if stored["type"] == "home":
            for user_id, home_id in self._home_ids.items():
                if home_id == view_id:
                    self.home_tabs[user_id] = stored
        return copy.deepcopy(stored)

    def _channel(self, args: dict[str, Any], *, for_post: bool) -> str:
        channel = args.get("channel")
        if not channel or not isinstance(channel, str):
            raise FakeSlackError("channel_not_found")
        if channel[:1] in ("U", "W"):
            if not for_post:
                raise FakeSlackError("channel_not_found")
            channel = "D" + channel
        elif channel[:1] not in ("C", "D", "G"):
            raise FakeSlackError("channel_not_found")
        if channel in self.channel_errors:
            raise FakeSlackError(self.channel_errors[channel])
        return channel

    def _message_content(self, args: dict[str, Any], *, required: bool) -> dict[str, Any]:
        content: dict[str, Any] = {}
        text = args.get("text")
        if text is not None:
            if not isinstance(text, str):
                raise FakeSlackError("invalid_arguments", [_err("must be a string", "/text")])
            if len(text) > MESSAGE_MAX_TEXT:
                raise FakeSlackError("msg_too_long")
            content["text"] = text
        if "blocks" in args and args["blocks"] is not None:
            blocks = args["blocks"]
            if blocks != []:
                errors = block_kit_errors(blocks)
                if errors:
                    raise FakeSlackError("invalid_blocks", errors)
            content["blocks"] = copy.deepcopy(blocks)
            _fill_ids(content["blocks"])
            _add_emoji(content["blocks"])
        if args.get("attachments"):
            content["attachments"] = copy.deepcopy(args["attachments"])
        if required and not (content.get("text") or content.get("blocks") or content.get("attachments")):
            raise FakeSlackError("no_text")
        return content

    # -- methods ---------------------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        body = {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": identity.get("team", TEAM_NAME),
            "user": identity.get("user", "emailsync"),
            "team_id": identity["team_id"],
            "user_id": identity["user_id"],
            "is_enterprise_install": bool(identity.get("is_enterprise_install")),
        }
        if identity.get("bot_id"):
            body["bot_id"] = identity["bot_id"]
        if identity.get("enterprise_id"):
            body["enterprise_id"] = identity["enterprise_id"]
        return body

    def _apps_connections_open(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        token = identity.get("token")
        if token is None:
            raise FakeSlackError("not_authed")
        if not token.startswith("xapp-"):
            raise FakeSlackError("not_allowed_token_type")
        if token in self.revoked_tokens or token not in self.app_tokens or self.socket_mode_url is None:
            raise FakeSlackError("invalid_auth")
        return {"url": self.socket_mode_url()}

    def _check_client(self, args: dict[str, Any]) -> None:
        if not args.get("client_id") or (self.client_id is not None and args["client_id"] != self.client_id):
            raise FakeSlackError("invalid_client_id")
        if args.get("client_secret") != self.client_secret:
            raise FakeSlackError("bad_client_secret")

    def _oauth_v2_access(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        self._check_client(args)
        if args.get("grant_type") == "refresh_token":
            return self._refresh_token_grant(args)
        code = args.get("code")
        if not code or code in self.used_oauth_codes:
            raise FakeSlackError("invalid_code")
        if self.oauth_redirect_uri is not None and args.get("redirect_uri") not in (None, self.oauth_redirect_uri):
            raise FakeSlackError("bad_redirect_uri")
        self.used_oauth_codes.add(code)
        body = copy.deepcopy(self.oauth_response)
        if not body.get("ok", True):
            raise FakeSlackError(str(body.get("error", "invalid_code")))
        body.pop("ok", None)
        team = body.get("team") or {}
        enterprise = body.get("enterprise") or {}
        bot_token = body.get("access_token")
        if bot_token:
            self.revoked_tokens.discard(bot_token)
            self.tokens[bot_token] = {
                "team_id": team.get("id"),
                "team": team.get("name", ""),
                "user_id": body.get("bot_user_id"),
                "user": "emailsync",
                "bot_id": "B" + str(body.get("bot_user_id", "BOT")).lstrip("U"),
                "enterprise_id": enterprise.get("id"),
                "is_enterprise_install": bool(body.get("is_enterprise_install")),
            }
        user_token = (body.get("authed_user") or {}).get("access_token")
        if user_token:
            self.revoked_tokens.discard(user_token)
            self.tokens[user_token] = {
                "team_id": team.get("id"),
                "team": team.get("name", ""),
                "user_id": body["authed_user"].get("id"),
                "user": str(body["authed_user"].get("id", "")).lower(),
                "bot_id": None,
                "enterprise_id": enterprise.get("id"),
            }
        self._remember_refresh_tokens(body)
        return body

    # -- token rotation: oauth.v2.access with grant_type=refresh_token ---------------------------

    def _remember_refresh_tokens(self, body: dict[str, Any]) -> None:
        """An install answer with ``refresh_token``/``expires_in`` (set them in ``oauth_response``) rotates."""
        if body.get("refresh_token") and body.get("access_token"):
            self.refresh_tokens[body["refresh_token"]] = (body["access_token"], "bot")
        user = body.get("authed_user") or {}
        if user.get("refresh_token") and user.get("access_token"):
            self.refresh_tokens[user["refresh_token"]] = (user["access_token"], "user")

    def _refresh_token_grant(self, args: dict[str, Any]) -> dict[str, Any]:
        """A new access token (same identity) and a new refresh token; the old access token lives on."""
        self._require(args, "refresh_token")
        found = self.refresh_tokens.pop(args["refresh_token"], None)
        if found is None:
            raise FakeSlackError("invalid_refresh_token")
        old_token, kind = found
        identity = dict(self.tokens.get(old_token) or self._identity(old_token, required=True))
        n = next(self._seq)
        token = f"xoxe.{'xoxb' if kind == 'bot' else 'xoxp'}-rotated-{n}"
        refresh = f"xoxe-1-refresh-{n}"
        self.tokens[token] = identity
        self.refresh_tokens[refresh] = (token, kind)
        body: dict[str, Any] = {
            "app_id": APP_ID,
            "token_type": kind,
            "access_token": token,
            "refresh_token": refresh,
            "expires_in": self.rotated_token_expires_in,
            "scope": self.oauth_response.get("scope", ""),
            "team": {"id": identity.get("team_id"), "name": identity.get("team", "")},
            "enterprise": None,
            "is_enterprise_install": bool(identity.get("is_enterprise_install")),
        }
        if kind == "bot":
            body["bot_user_id"] = identity.get("user_id")
        return body

    def _chat_post_message(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, for_post=True)
        content = self._message_content(args, required=True)
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "user": identity.get("user_id"),
            "bot_id": identity.get("bot_id"),
            "team": identity.get("team_id"),
            "text": content.get("text", ""),
            "ts": ts,
            **{k: v for k, v in content.items() if k != "text"},
        }
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        if args.get("metadata"):
            message["metadata"] = copy.deepcopy(args["metadata"])
        self.messages[(channel, ts)] = {**message, "channel": channel}
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _find_message(self, args: dict[str, Any]) -> tuple[str, str]:
        channel = self._channel(args, for_post=False)
        ts = args.get("ts")
        if not ts:
            raise FakeSlackError("message_not_found")
        if (channel, str(ts)) not in self.messages:
            raise FakeSlackError("message_not_found")
        return channel, str(ts)

    def _chat_update(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        key = self._find_message(args)
        content = self._message_content(args, required=True)
        message = self.messages[key]
        if "text" in content:
            message["text"] = content["text"]
        if "blocks" in content:
            if content["blocks"]:
                message["blocks"] = content["blocks"]
            else:
                message.pop("blocks", None)
        if "attachments" in content:
            message["attachments"] = content["attachments"]
        message["edited"] = {"user": identity.get("user_id"), "ts": self._next_ts()}
        public = {k: copy.deepcopy(v) for k, v in message.items() if k != "channel"}
        return {"channel": key[0], "ts": key[1], "text": message.get("text", ""), "message": public}

    def _chat_post_ephemeral(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args, for_post=True)
        user = args.get("user")
        if not user:
            raise FakeSlackError("user_not_found")
        content = self._message_content(args, required=True)
        ts = self._next_ts()
        self.ephemerals.append({"channel": channel, "user": user, "ts": ts, **content})
        return {"message_ts": ts}

    def _users_info(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        user_id = args.get("user")
        if not user_id or not isinstance(user_id, str):
            raise FakeSlackError("user_not_found")
        override = self.users.get(user_id, {})
        if override is None or (user_id[:1] not in ("U", "W") and user_id not in self.users):
            raise FakeSlackError("user_not_found")
        team_id = identity.get("team_id", TEAM_ID)
        is_bot = user_id == BOT_USER_ID or (user_id == identity.get("user_id") and bool(identity.get("bot_id")))
        real_name = "Emailsync" if is_bot else f"User {user_id}"
        profile: dict[str, Any] = {
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": user_id.lower(),
            "display_name_normalized": user_id.lower(),
            "team": team_id,
        }
        if not is_bot:
            profile["email"] = f"{user_id.lower()}@example.com"
        else:
            profile["bot_id"] = identity.get("bot_id") or BOT_ID
        user: dict[str, Any] = {
            "id": user_id,
            "team_id": team_id,
            "name": user_id.lower(),
            "deleted": False,
            "real_name": real_name,
            "tz": "Europe/Berlin",
            "tz_label": "Central European Time",
            "tz_offset": 3600,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": 1_700_000_000,
            "profile": profile,
        }
        override = copy.deepcopy(override)
        if isinstance(override.get("profile"), dict):
            profile.update(override.pop("profile"))
        user.update(override)
        return {"user": user}

    def _files_info(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "file")
        info = self.files.get(str(args["file"]))
        # The bot sees a file only once it is shared somewhere it is, and only in its own workspace.
        shared = info is not None and (info["channels"] or info["groups"] or info["ims"])
        if not shared or info["user_team"] != identity.get("team_id", TEAM_ID):  # type: ignore[index]
            raise FakeSlackError("file_not_found")
        return {"file": copy.deepcopy(info), "comments": [], "response_metadata": {"next_cursor": ""}}

    def _views_open(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "view")
        view = self._check_view(args["view"], ("modal",))
        trigger = self._consume_trigger(args.get("trigger_id"))
        view_id = self._next_view_id()
        self._claim_external_id(view, view_id)
        stored = self._stored_view(view, view_id=view_id, identity=identity, root_view_id=None, previous_view_id=None)
        self.views[view_id] = stored
        self._stacks[view_id] = [view_id]
        self._root_of[view_id] = view_id
        self._view_user[view_id] = trigger.user_id
        if stored["external_id"]:
            self._external_ids[stored["external_id"]] = view_id
        return {"view": copy.deepcopy(stored)}

    def _views_push(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "view")
        self._check_view(args["view"], ("modal",))
        trigger = self._consume_trigger(args.get("trigger_id"))
        below = trigger.view_id
        if below is None:
            for root in reversed(list(self._stacks)):
                if self._stacks[root] and self._view_user.get(root) == trigger.user_id:
                    below = self._stacks[root][-1]
                    break
        if below is None:
            raise FakeSlackError("not_found", [_err("the trigger does not come from an open modal", "/trigger_id")])
        return {"view": self._push(below, args["view"], identity)}

    def _views_update(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "view")
        view_id = args.get("view_id")
        external_id = args.get("external_id")
        if view_id and external_id:
            raise FakeSlackError("invalid_arguments", [_err("give either view_id or external_id", "")])
        if external_id:
            view_id = self._external_ids.get(str(external_id))
            if view_id is None:
                raise FakeSlackError("not_found")
        if not view_id:
            raise FakeSlackError("invalid_arguments", [_err("missing required field: view_id or external_id", "")])
        return {"view": self._update_view(str(view_id), args["view"], args.get("hash"))}

    def _views_publish(self, args: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
        self._require(args, "user_id", "view")
        user_id = str(args["user_id"])
        if user_id[:1] not in ("U", "W") or self.users.get(user_id, {}) is None:
            raise FakeSlackError("user_not_found")
        view = self._check_view(args["view"], ("home",))
        view_id = self._home_ids.get(user_id)
        if view_id is None:
            view_id = self._home_ids[user_id] = self._next_view_id()
            self._view_user[view_id] = user_id
        current = self.views.get(view_id)
        expected = args.get("hash")
        if current is not None and expected not in (None, "") and expected != current["hash"]:
            raise FakeSlackError("hash_conflict")
        stored = self._stored_view(view, view_id=view_id, identity=identity, root_view_id=None, previous_view_id=None)
        self.views[view_id] = stored
        self.home_tabs[user_id] = stored
        return {"view": copy.deepcopy(stored)}
