"""The engine's own error classes: every IMAP/SMTP failure becomes one of these, in plain words."""

from __future__ import annotations


class SyncError(Exception):
    """Base class: a code for machines, a message and a fix for people."""

    code = "error"
    transient = True

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} {self.fix}".strip()


class AuthFailed(SyncError):
    """The server refused the username or password."""

    code = "auth_failed"
    transient = False


class TlsFailed(SyncError):
    """The TLS handshake failed, usually an untrusted or mismatched certificate."""

    code = "tls"
    transient = False


class Unreachable(SyncError):
    """The host name does not resolve or the port refuses connections."""

    code = "unreachable"


class Timeout(SyncError):
    """The server did not answer in time."""

    code = "timeout"


class Throttled(SyncError):
    """The server asked us to slow down; retry after `retry_after` seconds."""

    code = "throttled"

    def __init__(self, message: str, fix: str = "", retry_after: float = 60.0) -> None:
        super().__init__(message, fix)
        self.retry_after = retry_after


class FolderGone(SyncError):
    """A folder disappeared between LIST and SELECT."""

    code = "folder_gone"


class ProtocolError(SyncError):
    """The server answered something we could not use."""

    code = "protocol"


class ResponseLimitExceeded(ProtocolError):
    """The server sent more than we accept: a literal above the size limit, or a flood of untagged responses."""

    code = "response_limit"


class LeaseLost(SyncError):
    """Another process took over this account's sync; this one must stop without writing."""

    code = "lease_lost"
