"""Slack's rich text (a rich_text_input's value) as an email's HTML and plain-text parts, and back from text."""

from __future__ import annotations

import html
from typing import Any

RichText = dict[str, Any]


def to_html(value: RichText | None) -> str:
    """The HTML of a rich text value: paragraphs, links, bold, italics, strike, code, lists, quotes."""
    return "".join(_block_html(b) for b in (value or {}).get("elements") or [])


def to_plain(value: RichText | None) -> str:
    """The plain-text alternative: link targets in angle brackets, list bullets and numbers kept."""
    parts = [_block_plain(b) for b in (value or {}).get("elements") or []]
    return "\n".join(p for p in parts if p is not None).strip("\n") + "\n"


def from_text(text: str) -> RichText:
    """A rich text value holding plain text (a Slack message's text, a quoted email)."""
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}],
    }


def quoted(text: str, intro: str) -> RichText:
    """A reply's body: an empty line to write in, the intro line, then the original text as a quote."""
    return {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_section", "elements": [{"type": "text", "text": "\n\n" + intro + "\n"}]},
            {"type": "rich_text_quote", "elements": [{"type": "text", "text": text}]},
        ],
    }


def _inline_html(el: dict[str, Any]) -> str:
    kind = el.get("type")
    style = el.get("style") or {}
    if kind == "text":
        out = html.escape(str(el.get("text") or "")).replace("\n", "<br>")
    elif kind == "link":
        url = str(el.get("url") or "")
        label = html.escape(str(el.get("text") or url))
        out = f'<a href="{html.escape(url, quote=True)}">{label}</a>'
    elif kind == "emoji":
        out = html.escape(str((el.get("unicode") and _unicode(el["unicode"])) or f":{el.get('name', '')}:"))
    elif kind == "user":
        out = html.escape(f"@{el.get('user_id', '')}")
    elif kind == "channel":
        out = html.escape(f"#{el.get('channel_id', '')}")
    elif kind == "broadcast":
        out = html.escape(f"@{el.get('range', '')}")
    else:
        out = html.escape(str(el.get("text") or ""))
    if style.get("code"):
        out = f"<code>{out}</code>"
    if style.get("bold"):
        out = f"<b>{out}</b>"
    if style.get("italic"):
        out = f"<i>{out}</i>"
    if style.get("strike"):
        out = f"<s>{out}</s>"
    return out


def _inline_plain(el: dict[str, Any]) -> str:
    kind = el.get("type")
    style = el.get("style") or {}
    if kind == "link":
        url = str(el.get("url") or "")
        text = str(el.get("text") or "")
        out = f"{text} <{url}>" if text and text != url else url
    elif kind == "emoji":
        out = _unicode(el["unicode"]) if el.get("unicode") else f":{el.get('name', '')}:"
    elif kind == "user":
        out = f"@{el.get('user_id', '')}"
    elif kind == "channel":
        out = f"#{el.get('channel_id', '')}"
    else:
        out = str(el.get("text") or "")
    if style.get("code"):
        out = f"`{out}`"
    if style.get("bold"):
        out = f"*{out}*"
    if style.get("italic"):
        out = f"_{out}_"
    return out


def _unicode(code: str) -> str:
    try:
        return "".join(chr(int(part, 16)) for part in str(code).split("-"))
    except ValueError:
        return ""


def _block_html(block: dict[str, Any]) -> str:
    kind = block.get("type")
    inner = "".join(_inline_html(e) for e in block.get("elements") or [])
    if kind == "rich_text_section":
        return f"<p>{inner}</p>"
    if kind == "rich_text_preformatted":
        return f"<pre>{inner}</pre>"
    if kind == "rich_text_quote":
        return f'<blockquote style="margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex">{inner}</blockquote>'
    if kind == "rich_text_list":
        tag = "ol" if block.get("style") == "ordered" else "ul"
        items = "".join(
            "<li>" + "".join(_inline_html(e) for e in item.get("elements") or []) + "</li>"
            for item in block.get("elements") or []
        )
        return f"<{tag}>{items}</{tag}>"
    return f"<p>{inner}</p>"


def _block_plain(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "rich_text_list":
        ordered = block.get("style") == "ordered"
        indent = "  " * int(block.get("indent") or 0)
        lines = []
        for n, item in enumerate(block.get("elements") or [], start=1 + int(block.get("offset") or 0)):
            text = "".join(_inline_plain(e) for e in item.get("elements") or [])
            lines.append(f"{indent}{n}. {text}" if ordered else f"{indent}- {text}")
        return "\n".join(lines)
    inner = "".join(_inline_plain(e) for e in block.get("elements") or [])
    if kind == "rich_text_quote":
        return "\n".join("> " + line for line in inner.split("\n"))
    return inner
