"""Queries on setup sessions: create, find by id or by token hash, save; a sign-in's one-time state."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col, select

from models.tables import SetupSession, UserSettings


def create_session(session: Session, row: SetupSession) -> SetupSession:
    """Insert a setup session and return it with its id."""
    session.add(row)
    session.flush()
    return row


def get_session(session: Session, session_id: int) -> SetupSession | None:
    """One setup session by id."""
    return session.get(SetupSession, session_id)


def find_by_token_hash(session: Session, token_hash: str) -> SetupSession | None:
    """The setup session whose connect link hashes to this value."""
    return session.exec(select(SetupSession).where(col(SetupSession.token_hash) == token_hash)).first()


def get_user_settings(session: Session, *, team_id: str, user_id: str) -> UserSettings:
    """A person's general settings (defaults when never saved)."""
    found = session.get(UserSettings, (team_id, user_id))
    return found or UserSettings(team_id=team_id, user_id=user_id)


def save(session: Session, row: SetupSession | UserSettings) -> None:
    """Stage a changed row (the caller's session commits)."""
    session.add(row)


def arm_sign_in(session: Session, session_id: int, *, state_hash: str, flow_encrypted: str) -> None:
    """Remember a sign-in in progress (a newer one replaces an older one: its state stops working)."""
    session.exec(
        update(SetupSession)
        .where(col(SetupSession.id) == session_id)
        .values(oauth_state_hash=state_hash, oauth_flow_encrypted=flow_encrypted)
    )


def consume_sign_in(session: Session, state_hash: str) -> SetupSession | None:
    """The setup whose sign-in has this state, which is used up here (a conditional UPDATE: replay finds nothing)."""
    result = session.exec(
        update(SetupSession)
        .where(col(SetupSession.oauth_state_hash) == state_hash)
        .values(oauth_state_hash=None)
        .returning(col(SetupSession.id))
    )
    row = result.first()
    return session.get(SetupSession, int(row[0]), populate_existing=True) if row else None


def end_sign_in(session: Session, session_id: int) -> None:
    """Forget a sign-in in progress (finished, refused or abandoned): its verifier and any tokens go."""
    session.exec(
        update(SetupSession)
        .where(col(SetupSession.id) == session_id)
        .values(oauth_state_hash=None, oauth_flow_encrypted=None)
    )


def sign_ins_in_progress(session: Session) -> list[SetupSession]:
    """Setup sessions holding an encrypted sign-in flow."""
    return list(session.exec(select(SetupSession).where(col(SetupSession.oauth_flow_encrypted).is_not(None))).all())
