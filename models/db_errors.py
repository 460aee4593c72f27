"""One line naming why the database cannot be used (refused, unknown role or database, bad password...) and the fix."""

from __future__ import annotations

import re

# Matched on the driver's message (psycopg, sqlite3): the same causes, whichever command meets them.
_RULES: tuple[tuple[str, str], ...] = (
    (
        r"Connection refused",
        "{where} refused the connection: is PostgreSQL running there? Check DATABASE_URL's host and port",
    ),
    (
        r'role "(?P<name>[^"]+)" does not exist',
        'PostgreSQL at {where} has no role "{name}": create it (`createuser {name}`) or fix the user in DATABASE_URL',
    ),
    (
        r'database "(?P<name>[^"]+)" does not exist',
        'PostgreSQL at {where} has no database "{name}": create it (`createdb {name}`) or fix DATABASE_URL',
    ),
    (
        r"password authentication failed",
        "PostgreSQL at {where} rejected the password: fix the password in DATABASE_URL",
    ),
    (r"no password supplied", "PostgreSQL at {where} asks for a password: put it in DATABASE_URL"),
    (
        r"failed to resolve host|could not translate host name",
        "the database host of DATABASE_URL ({where}) is not a known name: check its spelling and DNS",
    ),
    (r"timeout expired|timed out", "{where} did not answer in time: check the network, or DATABASE_URL's host"),
    (
        r"unable to open database file",
        "cannot open the SQLite file {where}: does its folder exist and may this user write there?",
    ),
    (r"too many clients|remaining connection slots", "PostgreSQL at {where} has no free connection slot"),
    (r"the database system is (starting up|shutting down)", "PostgreSQL at {where} is starting up or shutting down"),
)


def describe_database_error(exc: BaseException, url: str) -> str | None:
    """ "Cause: fix" for an error opening the database at ``url``; None when it is not a connection problem."""
    message = _operational_message(exc)
    if message is None:
        return None
    where = database_location(url)
    for pattern, text in _RULES:
        found = re.search(pattern, message)
        if found:
            return text.format(where=where, **found.groupdict())
    return None


def _operational_message(exc: BaseException) -> str | None:
    """The driver's message when ``exc`` or what it wraps is an OperationalError (SQLAlchemy, psycopg, sqlite3)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "OperationalError":
            orig = getattr(current, "orig", None)
            return str(orig if orig is not None else current)
        current = current.__cause__ or current.__context__
    return None


def database_location(url: str) -> str:
    """host:port of a PostgreSQL URL, or the SQLite file; never the password."""
    from sqlalchemy import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
