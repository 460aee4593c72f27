"""Seeding a whole team's data (mailboxes, mail, contacts, settings, an installation) and counting it back."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import Engine, func, or_
from sqlmodel import col, select

from models.clock import utcnow
from models.db import session_scope
from models.secrets import SecretBox
from models.tables import (
    BlockedAddress,
    Contact,
    EmailAccount,
    Folder,
    IgnoredAddress,
    Message,
    MessageAddress,
    MessageLocation,
    PeopleDigest,
    SetupSession,
    SlackInstallation,
    SyncRun,
    UserSettings,
)


def seed_team(
    db: Engine,
    secrets: SecretBox,
    team_id: str,
    *,
    users: tuple[str, ...] = ("U1", "U2"),
    messages: int = 3,
    installation: bool = True,
) -> list[int]:
    """One mailbox per user with folders, mail and a run, plus the team's other rows; return the account ids."""
    ids = []
    with session_scope(db) as session:
        for user in users:
            account = EmailAccount(
                team_id=team_id,
                user_id=user,
                email=f"{user.lower()}@{team_id.lower()}.test",
                imap_host="imap.test",
                username=user.lower(),
                secret_encrypted=secrets.encrypt(f"password-of-{team_id}-{user}"),
                next_sync_at=utcnow(),
            )
            session.add(account)
            session.flush()
            assert account.id is not None
            ids.append(account.id)
            inbox = Folder(account_id=account.id, name="INBOX", role="inbox")
            sent = Folder(account_id=account.id, name="Sent", role="sent")
            session.add_all([inbox, sent])
            session.flush()
            assert inbox.id is not None
            for n in range(messages):
                message = Message(account_id=account.id, team_id=team_id, message_id=f"<{team_id}.{user}.{n}@x>")
                session.add(message)
                session.flush()
                assert message.id is not None
                session.add(MessageLocation(message_id=message.id, folder_id=inbox.id, uidvalidity=1, uid=n + 1))
                session.add(MessageAddress(message_id=message.id, role="from", email=f"client{n}@corp.test"))
            session.add(SyncRun(account_id=account.id, kind="past", status="done"))
            session.add(UserSettings(team_id=team_id, user_id=user))
            session.add(BlockedAddress(team_id=team_id, user_id=user, pattern="spam.test"))
            session.add(IgnoredAddress(team_id=team_id, user_id=user, email="someone@corp.test"))
            session.add(
                PeopleDigest(
                    team_id=team_id,
                    user_id=user,
                    period=dt.date(2026, 11, 30),
                    window_start=dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
                    window_end=dt.datetime(2026, 11, 30, tzinfo=dt.UTC),
                )
            )
            session.add(
                SetupSession(
                    team_id=team_id,
                    user_id=user,
                    token_hash=hashlib.sha256(f"{team_id}{user}".encode()).hexdigest(),
                    expires_at=utcnow() + dt.timedelta(minutes=15),
                    account_id=account.id,
                )
            )
        session.add(Contact(team_id=team_id, email="client0@corp.test", name="Client"))
        if installation:
            session.add(
                SlackInstallation(
                    team_id=team_id,
                    user_id=users[0],
                    bot_user_id="UBOT",
                    bot_token_encrypted=secrets.encrypt(f"xoxb-{team_id}"),
                )
            )
    return ids


def team_rows(db: Engine, team_id: str) -> dict[str, int]:
    """How many rows of each kind the team owns (counted independently of the code under test)."""
    with session_scope(db) as session:
        accounts = select(col(EmailAccount.id)).where(col(EmailAccount.team_id) == team_id).scalar_subquery()
        messages = (
            select(col(Message.id))
            .where(or_(col(Message.team_id) == team_id, col(Message.account_id).in_(accounts)))
            .scalar_subquery()
        )

        def count(model: Any, *where: Any) -> int:
            return int(session.exec(select(func.count()).select_from(model).where(*where)).one())

        return {
            "accounts": count(EmailAccount, col(EmailAccount.team_id) == team_id),
            "folders": count(Folder, col(Folder.account_id).in_(accounts)),
            "messages": count(Message, col(Message.id).in_(messages)),
            "message_locations": count(MessageLocation, col(MessageLocation.message_id).in_(messages)),
            "message_addresses": count(MessageAddress, col(MessageAddress.message_id).in_(messages)),
            "sync_runs": count(SyncRun, col(SyncRun.account_id).in_(accounts)),
            "setup_sessions": count(SetupSession, col(SetupSession.team_id) == team_id),
            "contacts": count(Contact, col(Contact.team_id) == team_id),
            "blocked_addresses": count(BlockedAddress, col(BlockedAddress.team_id) == team_id),
            "user_settings": count(UserSettings, col(UserSettings.team_id) == team_id),
            "installations": count(SlackInstallation, col(SlackInstallation.team_id) == team_id),
            "people_digests": count(PeopleDigest, col(PeopleDigest.team_id) == team_id),
            "ignored_addresses": count(IgnoredAddress, col(IgnoredAddress.team_id) == team_id),
        }
