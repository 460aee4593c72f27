"""The outbound policy the tests run under: their servers listen on loopback, on high ports."""

from __future__ import annotations

from sync.outbound import OutboundPolicy

LOOPBACK_SETTINGS = {"EMAILSYNC_ALLOW_PRIVATE_HOSTS": "127.0.0.0/8, ::1/128", "EMAILSYNC_ALLOW_PORTS": "1024-65535"}
LOOPBACK_POLICY = OutboundPolicy.parse(
    LOOPBACK_SETTINGS["EMAILSYNC_ALLOW_PRIVATE_HOSTS"], LOOPBACK_SETTINGS["EMAILSYNC_ALLOW_PORTS"]
)
