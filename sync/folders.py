"""Folder discovery: LIST, skip \\Noselect, and give each folder a role (SPECIAL-USE, else its name)."""

from __future__ import annotations

from dataclasses import dataclass

from imapclient import IMAPClient

SPECIAL_USE_ROLES = {
    b"\\sent": "sent",
    b"\\trash": "trash",
    b"\\junk": "junk",
    b"\\drafts": "drafts",
    b"\\archive": "archive",
    b"\\all": "all",
    b"\\flagged": "flagged",
    b"\\important": "important",
}

# Servers that declare no SPECIAL-USE (Dovecot without special_use, many hosts) still use these names.
NAME_ROLES = {
    "inbox": "inbox",
    "sent": "sent",
    "sent items": "sent",
    "sent messages": "sent",
    "sent mail": "sent",
    "trash": "trash",
    "deleted items": "trash",
    "deleted messages": "trash",
    "bin": "trash",
    "junk": "junk",
    "junk e-mail": "junk",
    "junk email": "junk",
    "spam": "junk",
    "bulk mail": "junk",
    "drafts": "drafts",
    "archive": "archive",
}

# "Sync all emails" means every selectable folder except these (DESIGN section 1, step 3).
EXCLUDED_FROM_ALL = frozenset({"trash", "junk", "drafts"})


@dataclass(frozen=True)
class RemoteFolder:
    """A folder as the server lists it."""

    name: str
    role: str | None


def discover_folders(client: IMAPClient) -> list[RemoteFolder]:
    """Every selectable folder with its role, INBOX first."""
    found: list[RemoteFolder] = []
    for flags, delimiter, name in client.list_folders():
        lowered = {f.lower() if isinstance(f, bytes) else str(f).lower().encode() for f in flags}
        if b"\\noselect" in lowered or b"\\nonexistent" in lowered:
            continue
        found.append(RemoteFolder(name=str(name), role=role_of(str(name), lowered, delimiter)))
    found.sort(key=lambda f: (f.role != "inbox", f.name.lower()))
    return found


def role_of(name: str, lowered_flags: set[bytes], delimiter: bytes | str | None) -> str | None:
    """The folder's role from its SPECIAL-USE flag, else from its last name segment."""
    for flag, role in SPECIAL_USE_ROLES.items():
        if flag in lowered_flags:
            return role
    if name.upper() == "INBOX":
        return "inbox"
    sep = delimiter.decode() if isinstance(delimiter, bytes) else delimiter
    leaf = name.rsplit(sep, 1)[-1] if sep else name
    return NAME_ROLES.get(leaf.strip().lower())


def selected_by_default(role: str | None) -> bool:
    """Whether "Sync all emails" includes a folder of this role."""
    return role not in EXCLUDED_FROM_ALL
