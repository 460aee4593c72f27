"""A whole workspace's lifecycle, without Slack: uninstalled, tokens revoked, a person deactivated, erased."""

from __future__ import annotations

import logging

from sqlalchemy import Engine

from models import accounts as account_queries
from models import installations as installation_queries
from models import teams as team_queries
from models.db import session_scope
from sync.oauth_tokens import GrantRevoker

log = logging.getLogger(__name__)

UNINSTALLED = "uninstalled"
USER_DEACTIVATED = "user_deactivated"


def workspace_name(db: Engine, *, team_id: str) -> str | None:
    """The workspace's name as its installation recorded it, or None (not installed through OAuth)."""
    with session_scope(db, readonly=True) as session:
        installed = installation_queries.find_latest(session, enterprise_id=None, team_id=team_id)
        return installed.team_name if installed is not None else None


def pause_team(db: Engine, *, team_id: str, reason: str = UNINSTALLED) -> int:
    """Pause every mailbox of the team and forget its Slack tokens; return how many mailboxes were paused.

    Used when the workspace uninstalls the app or revokes its tokens: nothing can be told in Slack any
    more, so syncing stops (what is stored stays) and unused connect links stop working.
    """
    with session_scope(db) as session:
        paused = team_queries.pause_accounts(session, team_id=team_id, reason=reason)
        team_queries.expire_setup_links(session, team_id=team_id)
        installation_queries.delete_team_installations(session, team_id=team_id)
    log.info("team %s: %d mailboxes paused (%s), Slack tokens deleted", team_id, paused, reason)
    return paused


def resume_team(db: Engine, *, team_id: str) -> int:
    """After a reinstall: the mailboxes paused by the uninstall sync again (paused by their owners or for a
    deactivated person: they stay paused); return how many resumed."""
    with session_scope(db) as session:
        resumed = team_queries.resume_accounts(session, team_id=team_id, reason=UNINSTALLED)
    if resumed:
        log.info("team %s: reinstalled, %d mailboxes resumed", team_id, resumed)
    return resumed


def pause_user(db: Engine, *, team_id: str, user_id: str, reason: str = USER_DEACTIVATED) -> int:
    """Pause one person's mailboxes in one team (a deactivated Slack user); return how many were paused."""
    with session_scope(db) as session:
        paused = team_queries.pause_accounts(session, team_id=team_id, user_id=user_id, reason=reason)
        team_queries.expire_setup_links(session, team_id=team_id, user_id=user_id)
    log.info("team %s user %s: %d mailboxes paused (%s)", team_id, user_id, paused, reason)
    return paused


def forget_user_tokens(db: Engine, *, team_id: str, user_ids: list[str]) -> None:
    """Delete revoked user tokens (the bot token, and with it the mailboxes, carry on)."""
    with session_scope(db) as session:
        installation_queries.clear_user_tokens(session, team_id=team_id, user_ids=user_ids)


def erase_team(db: Engine, *, team_id: str, revoker: GrantRevoker | None = None) -> dict[str, int]:
    """Delete everything of the team (mailboxes with their secrets, folders, mail and runs; contacts, blocked
    addresses, personal settings, setup sessions, the Slack installation); return the count of each kind.
    Sign-in grants are revoked at the provider after the commit (best effort)."""
    with session_scope(db) as session:
        grants = revoker.collect(list(account_queries.list_accounts(session, team_id=team_id))) if revoker else []
        counts = team_queries.erase_team(session, team_id=team_id)
    if revoker is not None:
        revoker.revoke(grants)
    log.info("team %s erased: %s", team_id, counts)
    return counts
