"""Counting what a past sync would take, before it runs: messages in the window, and those involving a contact."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from sync.imap_session import STRICT_POLICY, ImapLogin, SslContextFactory, default_ssl_context, imap_session
from sync.outbound import OutboundPolicy
from sync.parse import parse_headers
from sync.uid_search import search_newest_first

_ADDRESS_FIELDS = b"BODY.PEEK[HEADER.FIELDS (FROM SENDER REPLY-TO TO CC BCC)]"
_ADDRESS_KEY = b"BODY[HEADER.FIELDS (FROM SENDER REPLY-TO TO CC BCC)]"


@dataclass(frozen=True)
class WindowPreview:
    """How many messages the window holds, how many involve a contact (None when not asked), and if capped."""

    total: int
    with_contacts: int | None
    capped: bool


def preview_window(
    login: ImapLogin,
    folders: list[str],
    since: dt.date,
    contacts: set[str] | None,
    *,
    timeout: float,
    ssl_context: SslContextFactory = default_ssl_context,
    outbound: OutboundPolicy = STRICT_POLICY,
    max_header_scan: int = 5000,
    batch: int = 500,
    search_window: int = 20_000,
) -> WindowPreview:
    """SEARCH SINCE per folder in UID windows; with contacts, read only the address headers of up to max_header_scan.

    Each SEARCH covers at most ``search_window`` UIDs, so no reply nears imaplib's 1 MB line limit.
    """
    total = 0
    matched = 0
    scanned = 0
    capped = False
    with imap_session(login, timeout=timeout, ssl_context=ssl_context, outbound=outbound) as client:
        for folder in folders:
            try:
                selected = client.select_folder(folder, readonly=True)
            except IMAPClientError:
                continue  # a folder that vanished since connect counts as empty
            top = _top_uid(client, folder, selected)
            uids = [
                u
                for window in search_newest_first(client, top=top, window=search_window, criteria=["SINCE", since])
                for u in window
            ]
            total += len(uids)
            if contacts is None:
                continue
            for start in range(0, len(uids), batch):
                if scanned >= max_header_scan:
                    capped = True
                    break
                chunk = uids[start : start + batch][: max_header_scan - scanned]
                scanned += len(chunk)
                for data in client.fetch(chunk, [_ADDRESS_FIELDS]).values():
                    if parse_headers(data.get(_ADDRESS_KEY) or b"").emails() & contacts:
                        matched += 1
    return WindowPreview(total=total, with_contacts=matched if contacts is not None else None, capped=capped)


def _top_uid(client: IMAPClient, folder: str, selected: dict[bytes, Any]) -> int:
    """The highest UID the folder may hold: UIDNEXT - 1, from SELECT or else from STATUS."""
    uidnext = selected.get(b"UIDNEXT")
    if uidnext is None:
        uidnext = client.folder_status(folder, [b"UIDNEXT"])[b"UIDNEXT"]
    return int(uidnext) - 1
