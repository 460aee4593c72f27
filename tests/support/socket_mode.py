"""Slack's side of Socket Mode on loopback: a websocket server that sends envelopes and checks the acks.

``FakeSocketMode(fake)`` attaches to a ``FakeSlack``: ``apps.connections.open`` with ``app_token`` then
answers a single-use ``ws://127.0.0.1:PORT/link/?ticket=...`` URL, as Slack answers a ``wss://`` one.
When the app connects it gets Slack's ``hello``; ``send(kind, payload)`` sends an envelope
(``{"envelope_id", "type", "payload", "accepts_response_payload"}``) and waits for the ack that names
its ``envelope_id``. Slack's rules are checked: an ack naming no envelope sent, a second ack, or a
payload in the ack of an envelope that accepts none end up in ``errors``.

``SocketModeDriver`` is the ``SlackDriver`` with Socket Mode as its transport: the same calls
(``slash_command``, ``block_action``, ``view_submission``, ``app_home_opened``...) build the same
payloads, which travel as envelopes instead of signed HTTP requests; each returns the ack's payload as
an ``httpx.Response`` (status 200, the payload as JSON body), so the driver's checks work unchanged.
"""

from __future__ import annotations

import http
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from tests.support.fake_slack import APP_ID, FakeSlack
from tests.support.slack_driver import SlackDriver

__all__ = ["Ack", "FakeSocketMode", "SocketModeDriver"]

APP_TOKEN = "xapp-1-A0001-1-fakesocketmodetoken"


@dataclass
class Ack:
    """What the app answered to one envelope."""

    envelope_id: str
    payload: dict[str, Any] | None
    at: float


class FakeSocketMode:
    """A websocket server playing Slack's side of Socket Mode (see the module docstring)."""

    def __init__(self, fake: FakeSlack, app_token: str = APP_TOKEN, *, ack_timeout: float = 20.0) -> None:
        self.fake = fake
        self.app_token = app_token
        self.ack_timeout = ack_timeout
        self.sent: dict[str, dict[str, Any]] = {}  # envelope id -> envelope
        self.acks: dict[str, Ack] = {}
        self.errors: list[str] = []
        self.connections_opened = 0
        self._tickets: set[str] = set()
        self._connections: list[ServerConnection] = []
        self._cond = threading.Condition()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> FakeSocketMode:
        self._server = serve(self._handle, "127.0.0.1", 0, process_request=self._check_ticket)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-socket-mode", daemon=True)
        self._thread.start()
        self.fake.app_tokens.add(self.app_token)
        self.fake.socket_mode_url = self._issue_url
        return self

    def stop(self) -> None:
        self.fake.socket_mode_url = None
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeSocketMode is not started"
        return int(self._server.socket.getsockname()[1])

    # -- Slack's side of the protocol --------------------------------------------------------------

    def _issue_url(self) -> str:
        ticket = secrets.token_urlsafe(12)
        with self._cond:
            self._tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={APP_ID}"

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        ticket = parse_qs(urlsplit(request.path).query).get("ticket", [""])[0]
        with self._cond:
            if ticket in self._tickets:
                self._tickets.discard(ticket)  # single use, as Slack's
                return None
            self.errors.append(f"connection with an unknown or used ticket: {request.path}")
        return connection.respond(http.HTTPStatus.UNAUTHORIZED, "unknown ticket\n")

    def _handle(self, connection: ServerConnection) -> None:
        hello = {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "applink-fake", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": APP_ID},
        }
        connection.send(json.dumps(hello))
        with self._cond:
            self._connections.append(connection)
            self.connections_opened += 1
            self._cond.notify_all()
        try:
            for message in connection:
                self._receive(message)
        except ConnectionClosed:
            pass  # the app's process stopped without a close frame: Slack shrugs too
        finally:
            with self._cond:
                self._connections.remove(connection)
                self._cond.notify_all()

    def _receive(self, message: str | bytes) -> None:
        with self._cond:
            try:
                body = json.loads(message)
                envelope_id = body["envelope_id"]
            except (ValueError, KeyError, TypeError):
                self.errors.append(f"not an ack: {message!r}")
                return
            envelope = self.sent.get(envelope_id)
            payload = body.get("payload")
            if envelope is None:
                self.errors.append(f"ack for an envelope never sent: {envelope_id}")
            elif envelope_id in self.acks:
                self.errors.append(f"second ack for envelope {envelope_id}")
            elif payload is not None and not envelope["accepts_response_payload"]:
                self.errors.append(f"ack with a payload for a {envelope['type']} envelope, which accepts none")
            else:
                self.acks[envelope_id] = Ack(envelope_id, payload, time.time())
            self._cond.notify_all()

    # -- what tests use --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._cond:
            return bool(self._connections)

    def wait_connected(self, timeout: float = 60.0) -> None:
        """Wait until the app holds a connection."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._connections), timeout):
                raise AssertionError(f"the app did not open a Socket Mode connection within {timeout}s")

    def send(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        timeout: float | None = None,
    ) -> Ack:
        """Send one envelope on the app's newest connection and wait for its ack."""
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
        }
        if kind == "events_api":
            envelope.update(retry_attempt=retry_attempt, retry_reason=retry_reason)
        self.wait_connected()
        with self._cond:
            connection = self._connections[-1]
            self.sent[envelope_id] = envelope
        connection.send(json.dumps(envelope))
        wait = self.ack_timeout if timeout is None else timeout
        with self._cond:
            if not self._cond.wait_for(lambda: envelope_id in self.acks, wait):
                raise AssertionError(f"no ack for the {kind} envelope {envelope_id} within {wait}s: {self.errors}")
            return self.acks[envelope_id]


class SocketModeDriver(SlackDriver):
    """A ``SlackDriver`` whose requests travel as Socket Mode envelopes (no signature: the socket is the trust)."""

    def __init__(self, socket_mode: FakeSocketMode, **options: Any) -> None:
        super().__init__("socket-mode:", "", socket_mode.fake, **options)
        self.socket_mode = socket_mode
        self.last_ack: Ack | None = None

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
        """Send what the HTTP driver would POST as the envelope Slack sends for it; the ack is the answer."""
        if bad_signature or timestamp is not None:
            raise ValueError("Socket Mode requests are not signed")
        payload: dict[str, Any]
        if content_type == "application/json":
            kind, payload = "events_api", json.loads(body)
        else:
            fields = dict(parse_qsl(body, keep_blank_values=True))
            if "payload" in fields:
                kind, payload = "interactive", json.loads(fields["payload"])
            else:
                kind, payload = "slash_commands", fields
        ack = self.socket_mode.send(kind, payload, retry_attempt=retry_num or 0, retry_reason=retry_reason or "")
        self.last_ack = ack
        if ack.payload is None:
            return httpx.Response(200)
        return httpx.Response(200, json=ack.payload)
