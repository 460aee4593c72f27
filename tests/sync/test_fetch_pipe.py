"""The FETCH fast path: the regex parser agrees with imapclient's, and pipelined commands stay apart."""

from __future__ import annotations

import datetime as dt

import pytest
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response

from sync.bodystructure import plan_body
from sync.fetch import FetchPipe, parse_fetch
from tests.support.mail import make_message


def imapclient_says(data: list[object]) -> dict[int, dict[bytes, object]]:
    try:
        parsed = parse_fetch_response(data, False, True)
    except Exception as exc:
        return {"error": type(exc).__name__}  # type: ignore[dict-item]
    return {k: dict(v) for k, v in parsed.items() if isinstance(k, int)}


def test_literal_inside_a_structure_and_the_usual_items():
    data = [
        (
            b'1 (UID 7 RFC822.SIZE 5799 INTERNALDATE "28-May-2025 05:22:38 +0200" FLAGS (\\Seen) BODY[HEADER] {8}',
            b"A: b\r\n\r\n",
        ),
        (b' BODYSTRUCTURE ("application" "pdf" ("name" {5}', b"r.pdf"),
        b') NIL NIL "base64" 100 NIL ("attachment" ("filename" "x.pdf")) NIL NIL))',
    ]
    ours = parse_fetch(data)
    assert ours == imapclient_says(data)
    fields = ours[7]
    assert fields[b"INTERNALDATE"] == dt.datetime(2025, 5, 28, 3, 22, 38, tzinfo=dt.UTC)
    assert fields[b"BODY[HEADER]"] == b"A: b\r\n\r\n" and fields[b"FLAGS"] == (b"\\Seen",)
    plan = plan_body(fields[b"BODYSTRUCTURE"])
    assert plan is not None and plan.attachments == [{"name": "x.pdf", "type": "application/pdf", "size": 72}]


@pytest.mark.parametrize(
    "data",
    [
        [
            b'2 (UID 8 FLAGS () X-GM-MSGID 1278455344230334865 X-GM-LABELS ("\\\\Important" "a \\"q\\" b" foo))',
            b"3 (FLAGS (\\Deleted))",
            (b"4 (UID 10 BODY[1.2] {3}", b"abc"),
            (b" BODY[HEADER.FIELDS (FROM TO)] {0}", b""),
            b' BODY[TEXT]<0> NIL INTERNALDATE " 1-Jan-2026 00:00:00 -0330" RFC822.SIZE 007)',
        ],
        [b'5 (UID 11 BODYSTRUCTURE ("text" "plain" NIL NIL NIL "7bit" 0 0 NIL NIL NIL NIL))'],
        [b"6 (UID 12 FLAGS (\\Seen)"],  # unbalanced: whatever imapclient says
        [b"7 (UID 13 FLAGS (\\Seen)) ]"],  # a stray character
        [None],
    ],
)
def test_parse_fetch_agrees_with_imapclient(data):
    expected = imapclient_says(data)
    if "error" in expected:
        with pytest.raises(Exception):  # noqa: B017 - the same refusal as imapclient's
            parse_fetch(data)
    else:
        assert parse_fetch(data) == expected


def test_pipelined_fetches_are_collected_in_any_order(mailbox):
    uids = [mailbox.append("INBOX", make_message(subject=f"m{i}", body=f"body {i}\r\n")) for i in range(4)]
    client = mailbox.server.client(mailbox.user, mailbox.password)
    try:
        client.normalise_times = False
        client.select_folder("INBOX", readonly=True)
        pipe = FetchPipe(client)
        first = pipe.send(uids[:2], [b"BODY.PEEK[TEXT]"])
        second = pipe.send(uids[2:], [b"FLAGS", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        late = pipe.collect([second])  # reads through the first command's answer on the way
        early = pipe.collect([first])
        assert sorted(late) == uids[2:] and sorted(early) == uids[:2]
        assert early[uids[1]][b"BODY[TEXT]"] == b"body 1\r\n"
        assert late[uids[3]][b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: m3\r\n\r\n"
        # A refused command raises, and the connection goes on.
        bad = pipe.send(uids, [b"BODY.PEEK[1.BOGUS]"])
        ok = pipe.send(uids[:1], [b"RFC822.SIZE"])
        with pytest.raises(IMAPClientError):
            pipe.collect([bad, ok])
        after = pipe.fetch([(uids[1:2], [b"FLAGS"])])
        assert list(after) == [uids[1]] and b"\\Seen" not in after[uids[1]][b"FLAGS"]
        assert client.noop()
        assert b"\\Seen" not in client.get_flags(uids)[uids[0]]  # peeking never sets \Seen
    finally:
        client.logout()
