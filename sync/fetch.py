"""UID FETCH commands sent back to back on one connection, their answers read once at the end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.imapclient import seq_to_parenstr_upper
from imapclient.response_parser import parse_fetch_response

Command = tuple[Sequence[int], Sequence[bytes]]  # (UIDs, FETCH items)


def fetch_many(client: IMAPClient, commands: Sequence[Command]) -> dict[int, dict[bytes, Any]]:
    """Send every ``UID FETCH`` at once (IMAP pipelining), then read all the answers.

    One round trip instead of one per command. The UID sets must not overlap: the answers are merged
    by UID. A FETCH the server refuses raises IMAPClientError, as ``IMAPClient.fetch`` would.
    """
    commands = [(uids, items) for uids, items in commands if uids]
    if not commands:
        return {}
    imap = client._imap
    tags = [
        imap._command("UID", "FETCH", ",".join(str(u) for u in uids), seq_to_parenstr_upper(list(items)))
        for uids, items in commands
    ]
    results = [imap._command_complete("FETCH", tag) for tag in tags]
    for typ, data in results:
        client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response("OK", [None], "FETCH")
    parsed = parse_fetch_response(data, client.normalise_times, True)
    return {uid: fields for uid, fields in parsed.items() if isinstance(uid, int)}
