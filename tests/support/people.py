"""Colleagues with real mailboxes in Dovecot, connected through the real flow and synced by the real engine."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from dataclasses import dataclass, field

from bot.services import Services
from flows.accounts import AccountDraft, add_account
from sync.engine import EngineConfig, EngineDeps, Outcome, sync_account
from sync.imap_session import ImapLogin
from tests.support.dovecot import DovecotServer
from tests.support.mail import RecordingNotifier, make_message
from tests.support.network import LOOPBACK_POLICY

_ids = itertools.count(1)


@dataclass
class Colleague:
    """A Slack user with a Dovecot mailbox; `send` and `receive` put mail in it as a mail client would."""

    server: DovecotServer
    team_id: str
    user_id: str
    login: str
    password: str = field(default_factory=lambda: "pw-" + uuid.uuid4().hex[:8])
    account_id: int | None = None
    sent_ids: list[str] = field(default_factory=list)

    @property
    def email(self) -> str:
        """The mailbox's address."""
        return f"{self.login}@example.net"

    def receive(self, subject: str, *, sender: str, at: dt.datetime, body: str = "Hello.\n", **headers: object) -> str:
        """A message in INBOX from sender; returns its Message-ID."""
        return self._put("INBOX", subject, sender=sender, to=self.email, at=at, body=body, **headers)

    def send(self, subject: str, *, to: str, at: dt.datetime, body: str = "Hi.\n", **headers: object) -> str:
        """A message this person sent, in Sent; returns its Message-ID."""
        return self._put("Sent", subject, sender=self.email, to=to, at=at, body=body, **headers)

    def _put(
        self,
        folder: str,
        subject: str,
        *,
        sender: str,
        to: str,
        at: dt.datetime,
        body: str,
        message_id: str | None = None,
        cc: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> str:
        message_id = message_id or f"<m{next(_ids)}.{uuid.uuid4().hex[:8]}@mail.test>"
        raw = make_message(
            subject=subject,
            sender=sender,
            to=to,
            cc=cc,
            date=at,
            message_id=message_id,
            body=body,
            extra_headers=extra,
        )
        self.server.append(self.login, self.password, folder, raw, internal_date=at)
        return message_id


def colleague(server: DovecotServer, team_id: str, user_id: str) -> Colleague:
    """A new Dovecot user with INBOX and Sent, for this Slack user."""
    person = Colleague(server, team_id, user_id, f"{user_id.lower()}_{uuid.uuid4().hex[:6]}")
    server.add_user(person.login, person.password)
    server.create_folder(person.login, person.password, "Sent")
    return person


def connect(services: Services, person: Colleague, *, visibility: str, start: str = "1y") -> int:
    """Connect the person's mailbox through the real flow (as `emailsync account add` does)."""
    draft = AccountDraft(
        team_id=person.team_id,
        user_id=person.user_id,
        email=person.email,
        imap=ImapLogin(person.server.host, person.server.imaps_port, "tls", person.login, person.password),
        start=start,
        visibility=visibility,
    )
    person.account_id = add_account(
        services.db,
        services.secrets,
        draft,
        timeout=10,
        ssl_context=person.server.ssl_context,
        outbound=LOOPBACK_POLICY,
    )
    return person.account_id


def sync(services: Services, person: Colleague) -> None:
    """Sync the person's mailbox to completion with the real engine."""
    assert person.account_id is not None
    config = EngineConfig(
        timeout=10, progress_seconds=0, ssl_context=person.server.ssl_context, outbound=LOOPBACK_POLICY
    )
    deps = EngineDeps(
        db=services.db, secrets=services.secrets, notifier=RecordingNotifier(), config=config, owner="test"
    )
    while (outcome := sync_account(deps, person.account_id)) is Outcome.MORE:
        pass
    assert outcome is Outcome.DONE, outcome
