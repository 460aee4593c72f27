"""Queries on setup sessions: create, find by id or by token hash, save."""

from __future__ import annotations

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
