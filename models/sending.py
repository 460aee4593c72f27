"""Queries for mail sent from Slack: sent emails, their tracking tokens and events, the workspace switch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

from models.tables import EmailAccount, Message, SentEmail, TeamSettings, TrackEvent, TrackToken


def team_tracking_enabled(session: Session, *, team_id: str) -> bool:
    """Whether the workspace allows open and click tracking (on unless an admin turned it off)."""
    row = session.get(TeamSettings, team_id)
    return True if row is None else row.tracking_enabled


def set_team_tracking(session: Session, *, team_id: str, enabled: bool) -> None:
    """Turn the workspace's tracking on or off."""
    row = session.get(TeamSettings, team_id) or TeamSettings(team_id=team_id)
    row.tracking_enabled = enabled
    session.add(row)


def create_sent(session: Session, **fields: object) -> SentEmail:
    """Insert a sent email (status "sending") and return it with its id."""
    row = SentEmail(**fields)  # type: ignore[arg-type]
    session.add(row)
    session.flush()
    return row


def compose_used(session: Session, *, compose_key: str) -> bool:
    """True when this modal already sent (or is sending) its email."""
    return session.exec(select(SentEmail.id).where(SentEmail.compose_key == compose_key)).first() is not None


def add_token(session: Session, *, sent_email_id: int, token: str, recipient: str | None) -> None:
    """Store one recipient's (or the whole email's) tracking token."""
    session.add(TrackToken(sent_email_id=sent_email_id, token=token, recipient=recipient))


def finish_sent(session: Session, *, sent_email_id: int, delivered: str, failed: str, status: str) -> None:
    """Record who got the email and who did not."""
    session.exec(
        update(SentEmail)
        .where(col(SentEmail.id) == sent_email_id)
        .values(delivered=delivered, failed=failed, status=status)
    )


def get_sent(session: Session, sent_email_id: int) -> SentEmail | None:
    """A sent email by id."""
    return session.get(SentEmail, sent_email_id)


def by_token(session: Session, token: str) -> tuple[TrackToken, SentEmail] | None:
    """The token row and its sent email, or None for an unknown token."""
    row = session.exec(
        select(TrackToken, SentEmail)
        .join(SentEmail, col(SentEmail.id) == col(TrackToken.sent_email_id))
        .where(TrackToken.token == token)
    ).first()
    return (row[0], row[1]) if row is not None else None


def sender_address(session: Session, sent: SentEmail) -> str | None:
    """The address the email was sent from (its mailbox's), lower-cased."""
    email = session.exec(select(EmailAccount.email).where(EmailAccount.id == sent.account_id)).first()
    return email.lower() if email else None


def add_event(session: Session, **fields: object) -> None:
    """Record an open or click."""
    session.add(TrackEvent(**fields))  # type: ignore[arg-type]


def count_human(session: Session, *, sent_email_id: int, kind: str, at: dt.datetime) -> None:
    """Add a person's open or click to the email's counters (one UPDATE: concurrent hits all count)."""
    values: dict[str, object] = {"opens": SentEmail.opens + 1, "last_open_at": at}
    if kind == "click":
        values = {"clicks": SentEmail.clicks + 1}
    session.exec(update(SentEmail).where(col(SentEmail.id) == sent_email_id).values(**values))


def first_human_click(session: Session, *, sent_email_id: int, link: int) -> bool:
    """True when exactly one person's click of this link is recorded (the one just added)."""
    count = session.exec(
        select(func.count())
        .select_from(TrackEvent)
        .where(
            TrackEvent.sent_email_id == sent_email_id,
            TrackEvent.kind == "click",
            TrackEvent.link == link,
            col(TrackEvent.human).is_(True),
        )
    ).one()
    return int(count) == 1


def claim_dm(session: Session, *, sent_email_id: int) -> bool:
    """Claim the right to post the email's tracking DM; exactly one caller wins."""
    result = session.exec(
        update(SentEmail)
        .where(col(SentEmail.id) == sent_email_id, col(SentEmail.slack_ts).is_(None))
        .values(slack_ts="pending")
    )
    return bool(result.rowcount)


def save_dm(session: Session, *, sent_email_id: int, channel: str | None, ts: str | None) -> None:
    """Remember where the tracking DM is (None: the post failed, a later event may try again)."""
    session.exec(update(SentEmail).where(col(SentEmail.id) == sent_email_id).values(slack_channel=channel, slack_ts=ts))


def reply_arrived(session: Session, sent: SentEmail) -> bool:
    """True when the synced mail holds a reply in this email's thread (any message but our own copy)."""
    found = session.exec(
        select(Message.id).where(
            Message.account_id == sent.account_id,
            Message.thread_key == sent.thread_key,
            col(Message.message_id) != sent.message_id,
            col(Message.date).is_(None) | (col(Message.date) >= sent.sent_at - dt.timedelta(minutes=5)),
        )
    ).first()
    return found is not None


def linked_messages(session: Session, sent: SentEmail) -> list[int]:
    """The synced copies of a sent email (by Message-ID): one once the Sent folder is synced."""
    rows = session.exec(
        select(Message.id).where(Message.account_id == sent.account_id, Message.message_id == sent.message_id)
    ).all()
    return [int(r) for r in rows if r is not None]


def recent_sent(session: Session, *, team_id: str, user_id: str, limit: int = 5) -> Sequence[SentEmail]:
    """A person's last sent emails, newest first."""
    return session.exec(
        select(SentEmail)
        .where(SentEmail.team_id == team_id, SentEmail.user_id == user_id)
        .order_by(col(SentEmail.sent_at).desc())
        .limit(limit)
    ).all()


def sent_since(session: Session, *, account_id: int, since: dt.datetime) -> int:
    """How many emails an account sent since a time (for the per-account rate limit)."""
    return int(
        session.exec(
            select(func.count())
            .select_from(SentEmail)
            .where(SentEmail.account_id == account_id, col(SentEmail.sent_at) >= since)
        ).one()
    )


def events_of(session: Session, *, sent_email_id: int) -> Sequence[TrackEvent]:
    """Every recorded event of an email, oldest first."""
    return session.exec(
        select(TrackEvent).where(TrackEvent.sent_email_id == sent_email_id).order_by(col(TrackEvent.id))
    ).all()


def prune_events(session: Session, *, before: dt.datetime) -> int:
    """Delete tracking events recorded before a time."""
    result = session.exec(delete(TrackEvent).where(col(TrackEvent.at) < before))
    return int(result.rowcount or 0)
