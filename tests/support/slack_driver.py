"""Drive the app over HTTP exactly as Slack does: signed slash commands, interactions and events.

``SlackDriver`` builds the payloads Slack sends (form-encoded ``payload=<json>`` for interactions, form
fields for slash commands, a JSON ``event_callback`` envelope for events), signs them with the signing
secret (``X-Slack-Request-Timestamp`` + ``X-Slack-Signature: v0=HMAC-SHA256("v0:{ts}:{body}")``) and
POSTs them to the app with httpx. Trigger ids and response URLs come from the ``FakeSlack`` the app
talks to, so ``views.open`` with the payload's ``trigger_id`` works (once, within ``fake.trigger_ttl``).

It also plays the Slack client's part around the request (``strict=True``, the default):

- an action or suggestion must name an element that exists in the view or message; ``block_id``,
  the action ``type``, a button's ``value`` and full option objects are taken from that element (pass
  ``selected_option="v"`` and the driver finds the option whose value is ``"v"``);
- a ``view_submission`` fills every input block like Slack (empty ones as ``None``/``[]``), refuses to
  submit when a required input is empty or a value is not one of the element's options, then applies
  the app's answer to the fake: no ``response_action`` closes the view, ``update`` / ``push`` / ``clear``
  change the stack, ``errors`` must name input blocks of the view;
- an options response (``block_suggestion``) must be valid Block Kit options.

A breach raises ``AssertionError`` (Slack would refuse or silently drop it). ``strict=False`` on the
driver, or on one call, turns those checks off. Each call returns the ``httpx.Response``; the payload
sent is in ``driver.last_payload``.

``serve_bolt(app)`` serves a Bolt ``App`` on loopback (``POST /slack/events``), for tests that have no
web server of their own.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from slack_sdk.signature import SignatureVerifier

from tests.support.fake_slack import (
    APP_ID,
    BOT_USER_ID,
    STATE_KEYS,
    TEAM_DOMAIN,
    FakeSlack,
    FakeSlackError,
    interactive_elements,
    options_errors,
    view_errors,
)

__all__ = ["BoltServer", "SlackDriver", "serve_bolt"]

VERIFICATION_TOKEN = "fake-verification-token"
_MULTI_KEYS = {"selected_options", "selected_users", "selected_conversations", "selected_channels", "files"}


def _options_of(element: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The options an element offers, or None when they are not known (external selects)."""
    if "options" in element:
        return list(element["options"] or [])
    if "option_groups" in element:
        return [o for group in element["option_groups"] or [] for o in group.get("options") or []]
    return None


class SlackDriver:
    """Sends signed Slack requests to ``app_url`` (e.g. ``http://127.0.0.1:PORT/slack/events``)."""

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        fake: FakeSlack,
        team_id: str = "T0001",
        *,
        api_app_id: str = APP_ID,
        timeout: float = 10.0,
        strict: bool = True,
    ) -> None:
        self.app_url = app_url
        self.signing_secret = signing_secret
        self.fake = fake
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.strict = strict
        self.last_payload: dict[str, Any] | None = None
        self._http = httpx.Client(timeout=timeout)
        self._events = itertools.count(1)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SlackDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def sign(self, body: str, timestamp: int) -> str:
        signature = SignatureVerifier(self.signing_secret).generate_signature(timestamp=str(timestamp), body=body)
        assert signature is not None
        return signature

    def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        bad_signature: bool = False,
        retry_num: int | None = None,
        retry_reason: str | None = None,
    ) -> httpx.Response:
        """POST a raw body signed like Slack (the building block of every other call)."""
        ts = int(time.time()) if timestamp is None else timestamp
        signature = self.sign(body, ts)
        if bad_signature:
            signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
        return self._http.post(self.app_url, content=body.encode("utf-8"), headers=headers)

    def _post_form(self, fields: dict[str, str], **transport: Any) -> httpx.Response:
        return self.post(urlencode(fields), "application/x-www-form-urlencoded", **transport)

    def _post_payload(self, payload: dict[str, Any], **transport: Any) -> httpx.Response:
        self.last_payload = payload
        return self._post_form({"payload": json.dumps(payload)}, **transport)

    # -- payload pieces --------------------------------------------------------------------------

    def _team(self, team_id: str | None) -> dict[str, Any]:
        return {"id": team_id or self.team_id, "domain": TEAM_DOMAIN}

    def _user(self, user_id: str, team_id: str | None) -> dict[str, Any]:
        return {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team_id or self.team_id}

    def _base(self, kind: str, user_id: str, team_id: str | None) -> dict[str, Any]:
        return {
            "type": kind,
            "user": self._user(user_id, team_id),
            "api_app_id": self.api_app_id,
            "token": VERIFICATION_TOKEN,
            "team": self._team(team_id),
            "enterprise": None,
            "is_enterprise_install": False,
        }

    def _strict(self, strict: bool | None) -> bool:
        return self.strict if strict is None else strict

    def _current_view(self, view: dict[str, Any] | str) -> dict[str, Any]:
        """The view as the fake holds it now (latest hash, state); a view unknown to the fake is used as given."""
        view_id = view if isinstance(view, str) else view.get("id")
        if isinstance(view_id, str) and view_id in self.fake.views:
            return self.fake.view(view_id)
        if isinstance(view, str):
            raise AssertionError(f"no view {view!r} in the fake")
        return copy.deepcopy(view)

    def _find_element(
        self, blocks: list[dict[str, Any]] | None, action_id: str, block_id: str | None, strict: bool
    ) -> tuple[str | None, dict[str, Any] | None]:
        if blocks is None:
            return block_id, None
        for block in blocks:
            if block_id is not None and block.get("block_id") != block_id:
                continue
            for element in interactive_elements(block):
                if element.get("action_id") == action_id:
                    return block.get("block_id"), element
        if strict:
            where = f"block {block_id!r}" if block_id else "any block"
            raise AssertionError(f"no element with action_id {action_id!r} in {where}; Slack could not send it")
        return block_id, None

    def _option(self, element: dict[str, Any] | None, option: Any, strict: bool) -> dict[str, Any]:
        """A full option object from an option or its value, checked against the element's options."""
        value = option.get("value") if isinstance(option, dict) else option
        known = _options_of(element) if element is not None else None
        if known is not None:
            for candidate in known:
                if candidate.get("value") == value:
                    return copy.deepcopy(candidate)
            if strict:
                raise AssertionError(f"{value!r} is not an option of {element.get('action_id')!r}")  # type: ignore[union-attr]
        if isinstance(option, dict):
            return copy.deepcopy(option)
        return {"text": {"type": "plain_text", "text": str(value), "emoji": True}, "value": str(value)}

    # -- slash commands --------------------------------------------------------------------------

    def slash_command(
        self,
        text: str = "",
        *,
        user_id: str = "U0001",
        team_id: str | None = None,
        channel_id: str = "C0001",
        channel_name: str = "general",
        command: str = "/emailsync",
        retry_num: int | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> httpx.Response:
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": team_id or self.team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self.fake.response_url(channel=channel_id),
            "trigger_id": self.fake.issue_trigger_id(user_id),
        }
        self.last_payload = dict(fields)
        return self._post_form(fields, timestamp=timestamp, bad_signature=bad_signature, retry_num=retry_num)

    # -- interactions ----------------------------------------------------------------------------

    def block_action(
        self,
        action_id: str,
        *,
        value: str | None = None,
        block_id: str | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        view: dict[str, Any] | str | None = None,
        container_message: dict[str, Any] | None = None,
        selected_option: dict[str, Any] | str | None = None,
        selected_options: list[dict[str, Any] | str] | None = None,
        action_type: str | None = None,
        state_values: dict[str, Any] | None = None,
        channel_id: str = "C0001",
        strict: bool | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
        **action_fields: Any,
    ) -> httpx.Response:
        """A click/selection on ``action_id`` in a view (``view``: dict or id), a message, or an ephemeral.

        ``container_message`` is a message of ``fake.messages`` (or ``{"channel", "ts"}``); with neither
        it is an ephemeral message in ``channel_id``. ``block_id``/``action_type`` default to the
        element's; with no element known, ``"b"``/``"button"``. ``user_id`` defaults to the view's owner
        (else ``U0001``). ``state_values`` are the inputs' current values (recorded in the fake's view).
        Extra keyword arguments are added to the action (e.g. ``selected_date="2024-05-01"``).
        """
        strict = self._strict(strict)
        payload: dict[str, Any]
        blocks: list[dict[str, Any]] | None = None
        current_view: dict[str, Any] | None = None
        message: dict[str, Any] | None = None
        if view is not None:
            current_view = self._current_view(view)
            view_id = current_view.get("id")
            if strict and isinstance(view_id, str) and not self.fake.is_open(view_id):
                raise AssertionError(f"view {view_id} is closed; nobody can click in it")
            blocks = current_view.get("blocks") or []
            user_id = user_id or (self.fake.view_owner(view_id) if isinstance(view_id, str) else None)
        elif container_message is not None:
            key = (container_message.get("channel"), container_message.get("ts"))
            message = copy.deepcopy(self.fake.messages.get(key, container_message))  # type: ignore[arg-type]
            if strict and key not in self.fake.messages:
                raise AssertionError(f"no message {key} in the fake (pass a message of fake.messages)")
            blocks = message.get("blocks") or []
        user_id = user_id or "U0001"
        block_id, element = self._find_element(blocks, action_id, block_id, strict)
        kind = action_type or (element or {}).get("type") or "button"
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id or "b",
            "type": kind,
            "action_ts": f"{time.time():.6f}",
        }
        if kind == "button":
            if element is not None and isinstance(element.get("text"), dict):
                action["text"] = element["text"]
            known_value = (element or {}).get("value")
            if strict and element is not None and value is not None and value != known_value:
                raise AssertionError(f"button {action_id!r} has value {known_value!r}, not {value!r}")
            button_value = value if value is not None else known_value
            if button_value is not None:
                action["value"] = button_value
            if element is not None and element.get("style"):
                action["style"] = element["style"]
        elif value is not None:
            action["value"] = value
        if selected_option is not None:
            action["selected_option"] = self._option(element, selected_option, strict)
        if selected_options is not None:
            action["selected_options"] = [self._option(element, o, strict) for o in selected_options]
        action.update(action_fields)

        payload = self._base("block_actions", user_id, team_id)
        if current_view is not None:
            view_id = current_view.get("id")
            if state_values is not None:
                current_view["state"] = {"values": copy.deepcopy(state_values)}
                if isinstance(view_id, str) and view_id in self.fake.views:
                    self.fake.set_view_state(view_id, state_values)
            payload["container"] = {"type": "view", "view_id": view_id}
            payload["view"] = current_view
            payload["trigger_id"] = self.fake.issue_trigger_id(user_id, view_id=view_id)
        else:
            if message is not None:
                channel, ts = str(message.get("channel")), str(message.get("ts"))
                payload["container"] = {
                    "type": "message",
                    "message_ts": ts,
                    "channel_id": channel,
                    "is_ephemeral": False,
                }
                payload["message"] = {k: v for k, v in message.items() if k != "channel"}
            else:
                channel, ts = channel_id, f"{int(time.time())}.{next(self._events):06d}"
                payload["container"] = {
                    "type": "message",
                    "message_ts": ts,
                    "channel_id": channel,
                    "is_ephemeral": True,
                }
            payload["channel"] = {"id": channel, "name": "general" if channel.startswith("C") else "directmessage"}
            payload["state"] = {"values": copy.deepcopy(state_values or {})}
            payload["response_url"] = self.fake.response_url(
                channel=channel, message_ts=ts if message is not None else None
            )
            payload["trigger_id"] = self.fake.issue_trigger_id(user_id)
        payload["actions"] = [action]
        return self._post_payload(payload, timestamp=timestamp, bad_signature=bad_signature)

    def _state_values(self, view: dict[str, Any], values: dict[str, Any], strict: bool) -> dict[str, Any]:
        """Slack's view.state.values for a submission: every input block, shorthands expanded."""
        values = copy.deepcopy(values)
        inputs = {
            b.get("block_id"): b
            for b in view.get("blocks") or []
            if b.get("type") == "input" and isinstance(b.get("element"), dict)
        }
        if strict:
            for block_id, actions in values.items():
                block = inputs.get(block_id)
                element_action = (block or {}).get("element", {}).get("action_id")
                if block is None or not isinstance(actions, dict) or set(actions) != {element_action}:
                    raise AssertionError(
                        f"state for block {block_id!r} ({actions!r}) does not match an input of the view: "
                        f"{ {k: v['element'].get('action_id') for k, v in inputs.items()} }"
                    )
        state: dict[str, Any] = {}
        for block_id, block in inputs.items():
            element = block["element"]
            kind = element.get("type")
            action_id = element.get("action_id")
            key = STATE_KEYS.get(kind, "value")
            given = (values.get(block_id) or {}).get(action_id)
            if isinstance(given, dict) and (key in given or "type" in given):
                entry = {"type": kind, **given}  # Slack's own form
            elif given is None:
                entry = {"type": kind, key: [] if key in _MULTI_KEYS else None}
            elif key == "selected_option":
                entry = {"type": kind, key: self._option(element, given, strict)}
            elif key == "selected_options":
                entry = {"type": kind, key: [self._option(element, o, strict) for o in given]}
            else:
                entry = {"type": kind, key: given}
            if key == "selected_option" and isinstance(entry.get(key), dict):
                entry[key] = self._option(element, entry[key], strict)
            if key == "selected_options" and isinstance(entry.get(key), list):
                entry[key] = [self._option(element, o, strict) for o in entry[key]]
            if strict:
                self._check_input(block, entry.get(key))
            state.setdefault(block_id, {})[action_id] = entry
        for block_id, actions in values.items():  # not strict: keep what the test gave for unknown blocks
            if block_id not in state:
                state[block_id] = actions
        return state

    @staticmethod
    def _check_input(block: dict[str, Any], value: Any) -> None:
        element = block["element"]
        label = (block.get("label") or {}).get("text", block.get("block_id"))
        if value in (None, "", []) and not block.get("optional", False):
            raise AssertionError(f"required input {label!r} is empty; Slack would not submit the view")
        if isinstance(value, str) and element.get("type") == "plain_text_input":
            if "min_length" in element and len(value) < element["min_length"]:
                raise AssertionError(f"input {label!r} is shorter than min_length {element['min_length']}")
            if "max_length" in element and len(value) > element["max_length"]:
                raise AssertionError(f"input {label!r} is longer than max_length {element['max_length']}")

    def view_submission(
        self,
        view: dict[str, Any] | str,
        values: dict[str, Any] | None = None,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        strict: bool | None = None,
        apply_response: bool = True,
        timestamp: int | None = None,
        bad_signature: bool = False,
        **payload_fields: Any,
    ) -> httpx.Response:
        """Submit a modal. ``values``: ``{block_id: {action_id: state}}`` where a state may be Slack's full
        dict (``{"type", "value"|"selected_option"|...}``) or a shorthand: a string (text value, or the
        value of the option to select), a list of option values, or None. Inputs not given are empty.
        """
        strict = self._strict(strict)
        current = self._current_view(view)
        view_id = current.get("id")
        if strict:
            if current.get("type") != "modal":
                raise AssertionError(f"only a modal can be submitted, not a {current.get('type')!r} view")
            if isinstance(view_id, str) and not self.fake.is_open(view_id):
                raise AssertionError(f"view {view_id} is closed; it cannot be submitted")
            if not current.get("submit"):
                raise AssertionError(f"view {view_id} has no submit button")
        user_id = user_id or (self.fake.view_owner(view_id) if isinstance(view_id, str) else None) or "U0001"
        current["state"] = {"values": self._state_values(current, values or {}, strict)}
        if isinstance(view_id, str) and view_id in self.fake.views:
            self.fake.set_view_state(view_id, current["state"]["values"])
        payload = self._base("view_submission", user_id, team_id)
        payload.update(
            trigger_id=self.fake.issue_trigger_id(user_id, view_id=view_id if isinstance(view_id, str) else None),
            view=current,
            response_urls=[],
        )
        payload.update(payload_fields)
        response = self._post_payload(payload, timestamp=timestamp, bad_signature=bad_signature)
        if apply_response and isinstance(view_id, str) and view_id in self.fake.views:
            self._apply_submission_response(current, response, strict)
        return response

    def _apply_submission_response(self, view: dict[str, Any], response: httpx.Response, strict: bool) -> None:
        view_id = view["id"]
        if response.status_code != 200:
            return  # Slack shows "We had some trouble connecting"; the modal stays as it is
        text = response.text.strip()
        try:
            body = json.loads(text) if text else {}
        except json.JSONDecodeError:
            if strict:
                raise AssertionError(f"view_submission answer is not JSON: {text[:200]!r}") from None
            return
        action = body.get("response_action") if isinstance(body, dict) else None
        try:
            if action is None:
                self.fake.close_view(view_id)
            elif action == "clear":
                self.fake.close_view(view_id, clear=True)
            elif action == "update":
                errors = view_errors(body.get("view"), allowed_types=("modal",))
                if errors:
                    raise FakeSlackError("invalid_arguments", errors)
                self.fake.replace_view(view_id, body["view"])
            elif action == "push":
                self.fake.push_view(view_id, body.get("view"))  # type: ignore[arg-type]
            elif action == "errors":
                errors_map = body.get("errors")
                inputs = {b.get("block_id") for b in view.get("blocks") or [] if b.get("type") == "input"}
                if strict and (not isinstance(errors_map, dict) or not errors_map or set(errors_map) - inputs):
                    raise AssertionError(
                        f"response_action errors must name input blocks of the view {sorted(inputs)}: {errors_map!r}"
                    )
            elif strict:
                raise AssertionError(f"unknown response_action {action!r}")
        except FakeSlackError as exc:
            if strict:
                raise AssertionError(f"Slack would refuse the response_action {action!r}: {exc}") from exc

    def view_closed(
        self,
        view: dict[str, Any] | str,
        *,
        user_id: str | None = None,
        team_id: str | None = None,
        is_cleared: bool = False,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> httpx.Response | None:
        """The user closes the modal. Slack only tells the app when the view has ``notify_on_close``:
        without it the view is closed in the fake and nothing is sent (returns None)."""
        current = self._current_view(view)
        view_id = current.get("id")
        user_id = user_id or (self.fake.view_owner(view_id) if isinstance(view_id, str) else None) or "U0001"
        if isinstance(view_id, str) and view_id in self.fake.views:
            self.fake.close_view(view_id, clear=is_cleared)
        if not current.get("notify_on_close"):
            return None
        payload = self._base("view_closed", user_id, team_id)
        payload.update(view=current, is_cleared=is_cleared)
        return self._post_payload(payload, timestamp=timestamp, bad_signature=bad_signature)

    def block_suggestion(
        self,
        action_id: str,
        value: str,
        *,
        block_id: str | None = None,
        view: dict[str, Any] | str | None = None,
        user_id: str | None = None,
        team_id: str | None = None,
        strict: bool | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """The user types ``value`` into an external select; Bolt answers on the same URL with options."""
        strict = self._strict(strict)
        current = self._current_view(view) if view is not None else None
        view_id = current.get("id") if current is not None else None
        element = None
        if current is not None:
            block_id, element = self._find_element(current.get("blocks") or [], action_id, block_id, strict)
            user_id = user_id or (self.fake.view_owner(view_id) if isinstance(view_id, str) else None)
            if (
                strict
                and element is not None
                and element.get("type") not in ("external_select", "multi_external_select")
            ):
                raise AssertionError(f"{action_id!r} is a {element.get('type')}, not an external select")
            minimum = (element or {}).get("min_query_length", 3)
            if strict and len(value) < minimum:
                raise AssertionError(f"Slack asks for options only after {minimum} characters")
        user_id = user_id or "U0001"
        payload = self._base("block_suggestion", user_id, team_id)
        payload.update(action_id=action_id, block_id=block_id or "b", value=value)
        if current is not None:
            payload["container"] = {"type": "view", "view_id": view_id}
            payload["view"] = current
        else:
            payload["container"] = {"type": "message", "message_ts": "0", "channel_id": "C0001", "is_ephemeral": False}
        response = self._post_payload(payload, timestamp=timestamp, bad_signature=bad_signature)
        if strict and response.status_code == 200:
            try:
                body = response.json()
            except json.JSONDecodeError:
                raise AssertionError(f"options answer is not JSON: {response.text[:200]!r}") from None
            errors = options_errors(body)
            if errors:
                raise AssertionError(f"Slack would show no options: {errors}")
        return response

    def message_shortcut(
        self,
        callback_id: str,
        message: dict[str, Any],
        *,
        user_id: str = "U0001",
        team_id: str | None = None,
        channel_id: str = "C0001",
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """A message shortcut (``message_action``) run on ``message`` (a message of ``fake.messages``, or
        ``{"text": ..., "user": ..., "ts": ...}`` as someone else posted it in ``channel_id``)."""
        message = {k: v for k, v in copy.deepcopy(message).items() if k != "channel"}
        message.setdefault("type", "message")
        message.setdefault("ts", f"{time.time():.6f}")
        payload = self._base("message_action", user_id, team_id)
        payload.update(
            callback_id=callback_id,
            trigger_id=self.fake.issue_trigger_id(user_id),
            response_url=self.fake.response_url(channel=channel_id),
            message_ts=message["ts"],
            action_ts=f"{time.time():.6f}",
            channel={"id": channel_id, "name": "general" if channel_id.startswith("C") else "directmessage"},
            message=message,
        )
        return self._post_payload(payload, timestamp=timestamp, bad_signature=bad_signature)

    # -- Events API ------------------------------------------------------------------------------

    def event(
        self,
        event: dict[str, Any],
        *,
        team_id: str | None = None,
        event_type: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        event_id: str | None = None,
        timestamp: int | None = None,
        bad_signature: bool = False,
    ) -> httpx.Response:
        """An ``event_callback``. Pass the same ``event_id`` (see ``last_payload``) to resend one event."""
        event = copy.deepcopy(event)
        if event_type is not None:
            event["type"] = event_type
        if "type" not in event:
            raise ValueError("an event needs a type")
        now = time.time()
        event.setdefault("event_ts", f"{now:.6f}")
        team = team_id or self.team_id
        envelope = {
            "token": VERIFICATION_TOKEN,
            "team_id": team,
            "context_team_id": team,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._events):08d}{secrets.token_hex(3).upper()}",
            "event_time": int(now),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_urlsafe(16)}",
        }
        self.last_payload = envelope
        return self.post(
            json.dumps(envelope),
            "application/json",
            timestamp=timestamp,
            bad_signature=bad_signature,
            retry_num=retry_num,
            retry_reason=retry_reason,
        )

    def app_home_opened(self, user_id: str = "U0001", *, team_id: str | None = None) -> httpx.Response:
        """The user opens the app's Home tab (the event carries the published view, if any)."""
        event: dict[str, Any] = {"type": "app_home_opened", "user": user_id, "channel": "D" + user_id, "tab": "home"}
        home = self.fake.home_tabs.get(user_id)
        if home is not None:
            event["view"] = copy.deepcopy(home)
        return self.event(event, team_id=team_id)

    def file_shared(
        self, file: dict[str, Any], *, user_id: str, channel_id: str, team_id: str | None = None
    ) -> httpx.Response:
        """Slack's ``file_shared`` event for a file of ``fake.add_file`` shared in ``channel_id``."""
        event = {
            "type": "file_shared",
            "channel_id": channel_id,
            "file_id": file["id"],
            "user_id": user_id,
            "file": {"id": file["id"]},
        }
        return self.event(event, team_id=team_id)

    def url_verification(self, challenge: str, *, timestamp: int | None = None) -> httpx.Response:
        body = {"token": VERIFICATION_TOKEN, "challenge": challenge, "type": "url_verification"}
        self.last_payload = body
        return self.post(json.dumps(body), "application/json", timestamp=timestamp)


# ----------------------------------------------------------------------------------------------
# A Bolt app on loopback (for tests of the driver itself, or any test without the real web server)
# ----------------------------------------------------------------------------------------------


class BoltServer:
    """Serves ``app.dispatch`` over HTTP on 127.0.0.1 (any POST path; ``url`` names ``/slack/events``)."""

    def __init__(self, app: Any, path: str = "/slack/events") -> None:
        from slack_bolt.request import BoltRequest

        bolt_app = app

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8") if length else ""
                headers: dict[str, str | Sequence[str]] = {}
                for name in set(self.headers.keys()):
                    headers[name.lower()] = self.headers.get_all(name) or []
                request = BoltRequest(body=raw, query=urlsplit(self.path).query, headers=headers)
                response = bolt_app.dispatch(request)
                data = (response.body or "").encode("utf-8")
                self.send_response(response.status)
                for name, values in response.headers.items():
                    if name.lower() == "content-length":
                        continue
                    for value in values:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="bolt-server", daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextmanager
def serve_bolt(app: Any, path: str = "/slack/events") -> Iterator[BoltServer]:
    server = BoltServer(app, path)
    try:
        yield server
    finally:
        server.stop()
