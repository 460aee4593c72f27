"""Encryption at rest for IMAP/SMTP passwords and tokens (Fernet, several keys for rotation)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger(__name__)

KEY_FILE_NAME = "secret.key"
PRIVATE_DIR = 0o700  # the data dir holds the key (and, by choice, the database): its owner's alone


class SecretKeyError(Exception):
    """The configured secret key is malformed, or a stored secret cannot be decrypted with it."""


class SecretBox:
    """Encrypts with the newest key and decrypts with any configured key."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyError("EMAILSYNC_SECRET_KEY: no key given")
        try:
            self._fernets = [Fernet(k.strip().encode()) for k in keys]
        except (ValueError, TypeError):
            raise SecretKeyError(
                "EMAILSYNC_SECRET_KEY: each comma-separated key must be a 32-byte url-safe base64 Fernet key"
            ) from None
        self._multi = MultiFernet(self._fernets)
        self._raw = [base64.urlsafe_b64decode(k.strip().encode()) for k in keys]

    def derived_keys(self, label: str) -> list[bytes]:
        """HMAC keys for one purpose, newest first: one per configured key, so a rotation keeps old MACs valid."""
        return [hmac.new(raw, label.encode(), hashlib.sha256).digest() for raw in self._raw]

    def __repr__(self) -> str:
        return f"SecretBox(keys={len(self._fernets)})"

    def encrypt(self, plaintext: str) -> str:
        """Encrypt with the newest key."""
        return self._multi.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        """Decrypt with whichever key matches; the error never includes the token."""
        try:
            return self._multi.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "a stored secret cannot be decrypted with EMAILSYNC_SECRET_KEY; was the key replaced "
                "instead of added in front of the old one?"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt a token with the newest key."""
        try:
            return self._multi.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored secret matches none of the configured keys") from None


def parse_keys(value: str) -> list[str]:
    """Split a comma-separated key list (newest first)."""
    return [k.strip() for k in value.split(",") if k.strip()]


def load_or_create_key_file(data_dir: Path) -> tuple[str, bool]:
    """Return the embedded default key from data_dir, creating it (mode 0600) if missing; and whether it was created."""
    path = data_dir / KEY_FILE_NAME
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    data_dir.chmod(PRIVATE_DIR)  # mkdir's mode is filtered by the umask; the key must not be listable by others
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key, True
