"""Queries on Slack installations (tokens stay encrypted here) and on OAuth states."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, update
from sqlmodel import Session, col, select

from models.clock import utcnow
from models.tables import SlackInstallation, SlackOAuthState

TOKEN_COLUMNS = (
    "bot_token_encrypted",
    "bot_refresh_token_encrypted",
    "user_token_encrypted",
    "user_refresh_token_encrypted",
)


def _same(column: Any, value: str | None) -> ColumnElement[bool]:
    """`column = value`, or `column IS NULL` for None (an org-wide install has no team)."""
    return col(column).is_(None) if value is None else col(column) == value


def _where(*, enterprise_id: str | None, team_id: str | None, user_id: str | None = None) -> list[ColumnElement[bool]]:
    conditions = [_same(SlackInstallation.enterprise_id, enterprise_id), _same(SlackInstallation.team_id, team_id)]
    if user_id is not None:
        conditions.append(col(SlackInstallation.user_id) == user_id)
    return conditions


def find_latest(
    session: Session, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
) -> SlackInstallation | None:
    """The newest installation of a workspace (or org), or of one installer in it."""
    return session.exec(
        select(SlackInstallation)
        .where(*_where(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id))
        .order_by(col(SlackInstallation.installed_at).desc(), col(SlackInstallation.id).desc())
    ).first()


def save_installation(session: Session, **fields: Any) -> SlackInstallation:
    """Insert or update the row of one installer in one workspace (a reinstall or a token refresh)."""
    row = find_latest(
        session, enterprise_id=fields.get("enterprise_id"), team_id=fields.get("team_id"), user_id=fields["user_id"]
    )
    if row is None:
        row = SlackInstallation(**fields)
    else:
        for name, value in fields.items():
            setattr(row, name, value)
    session.add(row)
    session.flush()
    return row


def delete_installations(
    session: Session, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
) -> int:
    """Delete a workspace's installations (or one installer's); return how many rows went."""
    result = session.exec(
        delete(SlackInstallation).where(*_where(enterprise_id=enterprise_id, team_id=team_id, user_id=user_id))
    )
    return int(result.rowcount or 0)


def clear_bot_tokens(session: Session, *, enterprise_id: str | None, team_id: str | None) -> None:
    """Forget the bot tokens of a workspace, keeping the installer rows (their user tokens may still work)."""
    session.exec(
        update(SlackInstallation)
        .where(*_where(enterprise_id=enterprise_id, team_id=team_id))
        .values(bot_token_encrypted=None, bot_refresh_token_encrypted=None, bot_token_expires_at=None)
    )


def clear_user_tokens(session: Session, *, team_id: str, user_ids: Sequence[str]) -> None:
    """Forget the user tokens of these installers (revoked), keeping the workspace's bot token."""
    session.exec(
        update(SlackInstallation)
        .where(col(SlackInstallation.team_id) == team_id, col(SlackInstallation.user_id).in_(list(user_ids)))
        .values(user_token_encrypted=None, user_refresh_token_encrypted=None, user_token_expires_at=None)
    )


def delete_team_installations(session: Session, *, team_id: str) -> int:
    """Delete every installation row of a team, whatever its enterprise; return how many."""
    result = session.exec(delete(SlackInstallation).where(col(SlackInstallation.team_id) == team_id))
    return int(result.rowcount or 0)


def all_installations(session: Session) -> Sequence[SlackInstallation]:
    """Every installation row (for re-encrypting the tokens with a new key)."""
    return session.exec(select(SlackInstallation).order_by(col(SlackInstallation.id))).all()


def add_state(session: Session, *, state: str, expire_at: dt.datetime) -> None:
    """Remember an issued OAuth state until it expires."""
    session.add(SlackOAuthState(state=state, expire_at=expire_at))


def consume_state(session: Session, *, state: str) -> bool:
    """Use up an unexpired state; False when it was never issued, has expired or was used already."""
    now = utcnow()
    result = session.exec(
        delete(SlackOAuthState).where(col(SlackOAuthState.state) == state, col(SlackOAuthState.expire_at) > now)
    )
    session.exec(delete(SlackOAuthState).where(col(SlackOAuthState.expire_at) <= now))  # tidy up abandoned installs
    return bool(result.rowcount)
