"""UID SEARCH in windows: every reply stays far below imaplib's 1 MB line limit, whatever the folder holds.

One ``SEARCH ALL`` (or ``SEARCH SINCE``) over a folder of a million messages answers with one line of
several megabytes, which imaplib refuses. Searching ``UID lo:hi`` windows of a bounded span bounds each
reply by the span. The backfill, the deletion check and the preview all search through here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError


def uid_windows(uids: Sequence[int], span: int) -> Iterator[tuple[int, int]]:
    """Windows of at most span UIDs covering the sorted uids, none of them empty."""
    i = 0
    while i < len(uids):
        lo = uids[i]
        hi = lo + span - 1
        while i < len(uids) and uids[i] <= hi:
            i += 1
        yield lo, min(hi, uids[i - 1])


def lowest_uid(client: IMAPClient) -> int:
    """The UID of message 1 of the selected folder, below which no window can hold anything (1 when empty).

    UIDs may start anywhere up to 2^32-1: searching 1..UIDNEXT in fixed windows from 1 would cost
    ~200,000 SEARCHes for a folder whose UIDs sit near the top.
    """
    try:
        found = client.search(["1"])  # a bare "1" is message sequence number 1
    except IMAPClientError:
        return 1  # an empty folder: some servers answer BAD for a sequence number that does not exist
    return min(found) if found else 1


def search_uid_range(client: IMAPClient, lo: int, hi: int, criteria: Sequence[Any] = ()) -> list[int]:
    """UIDs in [lo, hi] of the selected folder that match criteria, ascending (one SEARCH)."""
    # A server may answer with UIDs outside the range (``n:*`` semantics): keep only the window's.
    return sorted(u for u in client.search(["UID", f"{lo}:{hi}", *criteria]) if lo <= u <= hi)


def search_newest_first(
    client: IMAPClient, *, top: int, window: int, criteria: Sequence[Any] = (), floor: int | None = None
) -> Iterator[list[int]]:
    """Matching UIDs from top down to the folder's lowest UID, one window per SEARCH, each list newest first.

    ``floor`` is the lowest UID to search from; by default it is asked of the server (message 1).
    """
    if top < 1:
        return
    lo_bound = lowest_uid(client) if floor is None else floor
    hi = top
    while hi >= lo_bound:
        lo = max(lo_bound, hi - window + 1)
        yield search_uid_range(client, lo, hi, criteria)[::-1]
        hi = lo - 1
