"""Queries over a whole team (a Slack workspace): pause its mailboxes, count and delete everything it owns."""

from __future__ import annotations

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from models.clock import utcnow
from models.states import AccountState, may_become
from models.tables import (
    BlockedAddress,
    Contact,
    EmailAccount,
    Folder,
    IgnoredAddress,
    Message,
    PeopleDigest,
    SetupSession,
    SlackInstallation,
    SyncRun,
    UserSettings,
)

# Those the transition table lets pause (a disconnected mailbox has nothing to pause, one being connected has
# no sync yet); a paused one is left out so it keeps its reason.
_PAUSABLE = tuple(may_become(AccountState.PAUSED) - {AccountState.PAUSED})


def pause_accounts(session: Session, *, team_id: str, user_id: str | None = None, reason: str) -> int:
    """Pause the team's mailboxes (or one person's) that sync or could; return how many were paused."""
    query = update(EmailAccount).where(col(EmailAccount.team_id) == team_id, col(EmailAccount.state).in_(_PAUSABLE))
    if user_id is not None:
        query = query.where(col(EmailAccount.user_id) == user_id)
    result = session.exec(query.values(state=AccountState.PAUSED, paused_reason=reason, next_sync_at=None))
    return int(result.rowcount or 0)


def resume_accounts(session: Session, *, team_id: str, reason: str) -> int:
    """Let the team's mailboxes paused for this reason sync again, at once; return how many."""
    result = session.exec(
        update(EmailAccount)
        .where(
            col(EmailAccount.team_id) == team_id,
            col(EmailAccount.state) == AccountState.PAUSED,
            col(EmailAccount.paused_reason) == reason,
        )
        .values(state=AccountState.ACTIVE, paused_reason=None, next_sync_at=utcnow())
    )
    return int(result.rowcount or 0)


def expire_setup_links(session: Session, *, team_id: str, user_id: str | None = None) -> None:
    """Make the unused connect links of the team (or of one person) stop working now."""
    query = update(SetupSession).where(
        col(SetupSession.team_id) == team_id,
        col(SetupSession.used_at).is_(None),
        col(SetupSession.expires_at) > utcnow(),
    )
    if user_id is not None:
        query = query.where(col(SetupSession.user_id) == user_id)
    session.exec(query.values(expires_at=utcnow()))


def erase_team(session: Session, *, team_id: str) -> dict[str, int]:
    """Delete every row the team owns; return how many of each kind went."""
    account_ids = select(col(EmailAccount.id)).where(col(EmailAccount.team_id) == team_id).scalar_subquery()
    of_team_messages = or_(col(Message.team_id) == team_id, col(Message.account_id).in_(account_ids))
    # Children first: the foreign keys would cascade, but explicit statements give the counts and stay small.
    messages = session.exec(delete(Message).where(of_team_messages)).rowcount  # locations, addresses cascade
    runs = session.exec(delete(SyncRun).where(col(SyncRun.account_id).in_(account_ids))).rowcount
    folders = session.exec(delete(Folder).where(col(Folder.account_id).in_(account_ids))).rowcount
    counts: dict[str, int] = {}
    for name, model, column in (
        ("setup_sessions", SetupSession, SetupSession.team_id),
        ("accounts", EmailAccount, EmailAccount.team_id),
        ("contacts", Contact, Contact.team_id),
        ("blocked_addresses", BlockedAddress, BlockedAddress.team_id),
        ("user_settings", UserSettings, UserSettings.team_id),
        ("installations", SlackInstallation, SlackInstallation.team_id),
        ("people_digests", PeopleDigest, PeopleDigest.team_id),
        ("ignored_addresses", IgnoredAddress, IgnoredAddress.team_id),
    ):
        counts[name] = int(session.exec(delete(model).where(col(column) == team_id)).rowcount or 0)
    return {
        "accounts": counts.pop("accounts"),
        "folders": int(folders or 0),
        "messages": int(messages or 0),
        "sync_runs": int(runs or 0),
        **counts,
    }
