"""Secrets at rest: encrypted, rotatable, and never shown."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from models.secrets import SecretBox, SecretKeyError


def test_encrypt_rotate_and_clear_errors():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretBox([old]).encrypt("hunter2")
    assert "hunter2" not in token
    both = SecretBox([new, old])
    assert both.decrypt(token) == "hunter2"
    rotated = both.rotate(token)
    assert SecretBox([new]).decrypt(rotated) == "hunter2"
    with pytest.raises(SecretKeyError) as info:
        SecretBox([old]).decrypt(rotated)
    assert rotated not in str(info.value) and "hunter2" not in str(info.value)
    assert "keys=2" in repr(both)
    with pytest.raises(SecretKeyError):
        SecretBox(["not-a-key"])


def test_password_is_not_stored_in_clear(mailbox, connect, deps):
    account = connect(start="now")
    with deps.db.connect() as conn:
        row = conn.execute(text("SELECT * FROM email_account WHERE id = :id"), {"id": account}).mappings().one()
    assert mailbox.password not in " ".join(str(v) for v in row.values())


def test_repr_never_shows_secrets():
    from models.tables import EmailAccount
    from sync.imap_session import ImapLogin
    from sync.smtp_check import SmtpLogin

    account = EmailAccount(
        secret_encrypted="CIPHERTEXT", team_id="t", user_id="u", email="e", imap_host="h", username="u"
    )
    shown = (
        repr(account)
        + repr(ImapLogin("h", 993, "tls", "u", "PASSWORD"))
        + repr(SmtpLogin("h", 465, "tls", "u", "PASSWORD"))
    )
    assert "CIPHERTEXT" not in shown and "PASSWORD" not in shown
