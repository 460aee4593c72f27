"""UTC time, the one convention for every timestamp in the database (sqlmodel stores aware datetimes)."""

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)
