"""Bodies read through BODYSTRUCTURE (text parts only) mean what parsing the whole message means.

Every message is appended to the real test Dovecot, synced by the engine (which fetches only the
text/plain and text/html parts), and compared with ``parse_body`` of the bytes that were appended.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from sqlalchemy import select

from models.db import session_scope
from models.tables import Message
from sync.bodystructure import plan_body
from sync.engine import Outcome
from sync.parse import parse_body, parse_headers
from tests.sync.test_engine_bad_input import EIGHT_BIT_HEADERS, MALFORMED_MIME
from tests.sync.test_engine_hardening import clear_rawlog, rawlog_commands

WHEN = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40  # binary, 10,249 bytes


def _headers(subject: str, ctype: str, extra: str = "") -> bytes:
    return (
        f"From: Sender <sender@example.com>\r\nTo: me@example.net\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.com>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: {ctype}\r\n{extra}\r\n"
    ).encode()


def alternative_with_attachment() -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "me@example.net", "alternative and pdf"
    msg["Message-ID"] = "<alt-pdf@example.com>"
    msg.set_content("Grüße aus Köln,\n\nthe report is attached.\n")
    msg.add_alternative("<p>Gr&uuml;&szlig;e aus <b>K&ouml;ln</b></p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="Bericht März.pdf")
    return msg.as_bytes(policy=SMTP)


def latin1_quoted_printable() -> bytes:
    body = "Caf=E9 cr=E8me, a long line that is folded by a soft line break here=\r\n and continues.\r\n"
    return _headers(
        "latin1 qp", "text/plain; charset=ISO-8859-1", "Content-Transfer-Encoding: quoted-printable\r\n"
    ) + body.encode("ascii")


def koi8r_base64_html_only() -> bytes:
    html = "<html><body><p>Привет,&nbsp;мир</p><script>var x = 1;</script></body></html>".encode("koi8-r")
    return _headers("koi8 html", 'text/html; charset="koi8-r"', "Content-Transfer-Encoding: base64\r\n") + (
        base64.encodebytes(html).replace(b"\n", b"\r\n")
    )


def windows1252_8bit_in_mixed() -> bytes:
    return _headers("cp1252 mixed", 'multipart/mixed; boundary="B1"') + (
        b"--B1\r\nContent-Type: text/plain; charset=windows-1252\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"\x93Quoted\x94 \x80 50\r\n"
        b"--B1\r\nContent-Type: text/plain; name=notes.txt\r\nContent-Disposition: attachment\r\n\r\n"
        b"an attached text file\r\n"
        b"--B1\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: inline\r\n\r\niVBORw0KGgo=\r\n"
        b"--B1\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
        b"--B1--\r\n"
    )


def rfc2231_and_2047_names() -> bytes:
    return _headers("encoded names", 'multipart/mixed; boundary="B2"') + (
        b"--B2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nsee attachments\r\n"
        b"--B2\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%C3%BCbersicht%202026.xlsx\r\n\r\nAAECAw==\r\n"
        b'--B2\r\nContent-Type: application/pdf; name="=?utf-8?q?Gr=C3=B6=C3=9Fe.pdf?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n"
        b"--B2\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment;\r\n filename*0*=utf-8''Teil%20;\r\n filename*1=eins.zip\r\n\r\nUEsDBA==\r\n"
        b"--B2--\r\n"
    )


def forwarded_multipart() -> bytes:
    inner = (
        b"From: Inner <inner@example.org>\r\nSubject: the original\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="IN"\r\n\r\n'
        b"--IN\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe inner text\r\n"
        b"--IN\r\nContent-Type: application/pdf; name=inner.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQK\r\n--IN--\r\n"
    )
    return _headers("forwarded", 'multipart/mixed; boundary="OUT"') + (
        b"--OUT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>see below</p>\r\n"
        b"--OUT\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=orig.eml\r\n\r\n"
        + inner
        + b"\r\n--OUT--\r\n"
    )


def forwarded_single_part_only() -> bytes:
    inner = b"From: Inner <inner@example.org>\r\nSubject: only inner\r\n\r\njust the inner body\r\n"
    return _headers("forward only", 'multipart/mixed; boundary="F"') + (
        b"--F\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--F--\r\n"
    )


def plain_without_mime() -> bytes:
    return (
        b"From: old@example.com\r\nTo: me@example.net\r\nSubject: no mime\r\nMessage-ID: <nomime@example.com>\r\n"
        b"\r\nUTF-8 without a declared charset: \xc3\xa4\xc3\xb6\xc3\xbc\r\n\r\n   spaced    out   \r\n"
    )


def attachment_only() -> bytes:
    return _headers(
        "pdf only", "application/pdf; name=only.pdf", "Content-Transfer-Encoding: base64\r\n"
    ) + base64.encodebytes(PDF).replace(b"\n", b"\r\n")


CASES = {
    "alternative and pdf": alternative_with_attachment,
    "latin1 qp": latin1_quoted_printable,
    "koi8 html": koi8r_base64_html_only,
    "cp1252 mixed": windows1252_8bit_in_mixed,
    "encoded names": rfc2231_and_2047_names,
    "forwarded": forwarded_multipart,
    "forward only": forwarded_single_part_only,
    "no mime": plain_without_mime,
    "pdf only": attachment_only,
    "malformed mime": lambda: MALFORMED_MIME,
    "8bit headers": lambda: EIGHT_BIT_HEADERS,
}


def message_id_of(raw: bytes) -> str | None:
    return parse_headers(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n").message_id


def stored_rows(deps: Any, account: int) -> dict[str, Message]:
    with session_scope(deps.db) as session:
        rows = session.execute(select(Message).where(Message.account_id == account)).scalars().all()
    return {m.message_id: m for m in rows}


def assert_same_meaning(row: Message, raw: bytes) -> None:
    """The stored body means what parsing the whole message gives (attachment sizes: base64 estimate)."""
    whole = parse_body(raw)
    assert row.text_body == whole.text
    assert row.html_body == whole.html
    assert row.snippet == whole.snippet
    stored = json.loads(row.attachments) if row.attachments else []
    assert [(a["name"], a["type"]) for a in stored] == [(a["name"], a["type"]) for a in whole.attachments]
    for got, want in zip(stored, whole.attachments, strict=True):
        assert 0 <= got["size"] - want["size"] <= 2, (got, want)  # base64 padding is not counted


def test_text_parts_only_mean_the_same_as_the_whole_message(mailbox, connect, run_sync, deps):
    raws = {name: make() for name, make in CASES.items()}
    for raw in raws.values():
        mailbox.append("INBOX", raw, date=WHEN)
    account = connect(start="1m")
    clear_rawlog(mailbox)
    assert run_sync(account) is Outcome.DONE
    rows = stored_rows(deps, account)
    assert len(rows) == len(raws)
    for raw in raws.values():
        assert_same_meaning(rows[message_id_of(raw)], raw)
    by_subject = {m.subject: m for m in rows.values()}
    (pdf,) = json.loads(by_subject["alternative and pdf"].attachments)
    assert (pdf["name"], pdf["type"]) == ("Bericht März.pdf", "application/pdf")
    assert len(PDF) <= pdf["size"] <= len(PDF) + 2
    assert by_subject["latin1 qp"].text_body.startswith("Café crème, a long line that is folded by a soft")
    assert by_subject["koi8 html"].snippet == "Привет, мир"
    names = [a["name"] for a in json.loads(by_subject["encoded names"].attachments)]
    assert names == ["übersicht 2026.xlsx", "Größe.pdf", "Teil eins.zip"]
    forwarded = by_subject["forwarded"]
    assert forwarded.text_body.startswith("the inner text") and forwarded.html_body.startswith("<p>see below")
    assert by_subject["no mime"].text_body.startswith("UTF-8 without a declared charset: äöü")
    # Every FETCH peeks, and no attachment was downloaded (the PDF is in two of the messages).
    fetches = [c for c in rawlog_commands(mailbox) if "FETCH" in c.upper()]
    assert fetches and all("BODY[" not in c.upper() for c in fetches)
    assert any("BODYSTRUCTURE" in c.upper() for c in fetches)
    assert base64.b64encode(PDF)[:76] not in server_output(mailbox)


def test_attachment_bytes_are_never_downloaded(mailbox, connect, run_sync, deps):
    mailbox.append("INBOX", alternative_with_attachment(), date=WHEN)
    account = connect(start="1m")
    clear_rawlog(mailbox)
    run_sync(account)
    assert b"the report is attached" in server_output(mailbox)
    assert base64.b64encode(PDF)[:76] not in server_output(mailbox)  # the attachment's first line


def server_output(mailbox: Any) -> bytes:
    return b"".join(p.read_bytes() for p in mailbox.server.rawlog_dir(mailbox.user).glob("*.out"))


def test_whole_message_path_still_works(mailbox, connect, run_sync, deps):
    deps.config.use_bodystructure = False
    raws = {name: CASES[name]() for name in ("alternative and pdf", "forwarded", "malformed mime")}
    for raw in raws.values():
        mailbox.append("INBOX", raw, date=WHEN)
    account = connect(start="1m")
    clear_rawlog(mailbox)
    run_sync(account)
    assert base64.b64encode(PDF)[:76] in server_output(mailbox)  # the other test's check can fail
    by_subject = {m.subject: m for m in stored_rows(deps, account).values()}
    for name, raw in raws.items():
        whole = parse_body(raw)
        row = by_subject[name]
        assert (row.text_body, row.html_body, row.snippet) == (whole.text, whole.html, whole.snippet)
        assert json.loads(row.attachments or "[]") == whole.attachments


def test_unreadable_structure_falls_back_to_the_whole_message(mailbox, connect, run_sync, deps, monkeypatch):
    raw = alternative_with_attachment()
    mailbox.append("INBOX", raw, date=WHEN)
    monkeypatch.setattr("sync.fetch_pipeline.plan_body", lambda structure: None)
    account = connect(start="1m")
    clear_rawlog(mailbox)
    run_sync(account)
    (row,) = stored_rows(deps, account).values()
    whole = parse_body(raw)
    assert (row.text_body, row.html_body) == (whole.text, whole.html)
    assert json.loads(row.attachments) == whole.attachments  # exact size: it was decoded
    assert any("BODY.PEEK[]" in c.upper() for c in rawlog_commands(mailbox))


def _deep(levels: int) -> tuple[object, ...]:
    node: tuple[object, ...] = (b"text", b"plain", None, None, None, b"7bit", 1, 1)
    for _ in range(levels):
        node = (node, b"mixed")
    return node


DEEP = _deep(60)


@pytest.mark.parametrize(
    "structure",
    [
        None,
        (),
        b"garbage",
        ((),),
        ([], b"mixed"),
        (b"text", b"plain"),
        ((b"text", b"plain", (b"charset",), None, None, b"7bit", 1, 1),),
        DEEP,
    ],
)
def test_plan_body_refuses_what_it_cannot_read(structure):
    assert plan_body(structure) is None


def test_a_refused_part_number_falls_back_to_whole_messages(mailbox, connect, run_sync, deps, monkeypatch):
    deps.config.batch_size = 2  # the refused FETCH shares its round trip with the next batch's headers
    raws = [CASES[name]() for name in ("alternative and pdf", "forwarded", "latin1 qp", "cp1252 mixed", "no mime")]
    for raw in raws:
        mailbox.append("INBOX", raw, date=WHEN)
    monkeypatch.setattr("sync.bodystructure.BodyPlan.sections", lambda self: ("1.BOGUS",))  # Dovecot: BAD
    account = connect(start="1m")
    assert run_sync(account) is Outcome.DONE
    rows = stored_rows(deps, account)
    for raw in raws:
        whole = parse_body(raw)
        row = rows[message_id_of(raw)]
        assert (row.text_body, row.html_body, row.snippet) == (whole.text, whole.html, whole.snippet)
        assert json.loads(row.attachments or "[]") == whole.attachments  # decoded: exact sizes


def test_a_refused_bodystructure_falls_back_to_whole_messages(mailbox, connect, run_sync, deps, monkeypatch):
    deps.config.batch_size = 2
    raws = [CASES[name]() for name in ("alternative and pdf", "koi8 html", "encoded names")]
    for raw in raws:
        mailbox.append("INBOX", raw, date=WHEN)
    monkeypatch.setattr("sync.fetch_pipeline.STRUCTURE_ITEM", b"BODY.PEEK[1.BOGUS]")  # Dovecot answers BAD
    account = connect(start="1m")
    clear_rawlog(mailbox)
    assert run_sync(account) is Outcome.DONE
    rows = stored_rows(deps, account)
    for raw in raws:
        whole = parse_body(raw)
        assert rows[message_id_of(raw)].text_body == whole.text
        assert json.loads(rows[message_id_of(raw)].attachments or "[]") == whole.attachments
    bogus = [c for c in rawlog_commands(mailbox) if "BOGUS" in c.upper()]
    assert len(bogus) == 1  # asked once; the rest of the session does without
