"""slack-bolt's "payload" form-body bug: still there on the pinned version, and our guard knows which versions have it.

When an upgrade of slack-bolt fixes the bug, the first test fails and says to drop the workaround; when an
upgrade still has it but the guard does not cover the new version, it fails and says to extend the guard.
"""

from __future__ import annotations

from urllib.parse import urlencode

from slack_bolt import BoltRequest

from bot.slack_app import BOLT_PAYLOAD_BUG_UNTIL, SlackHttpRequest, bolt_payload_bug_expected, bolt_version

FORM = {"content-type": ["application/x-www-form-urlencoded"]}
COMMAND = urlencode(
    {
        "token": "t",
        "team_id": "T0001",
        "channel_id": "C0001",
        "channel_name": "payload-team",
        "user_id": "U0001",
        "command": "/emailsync",
        "text": "status payload",
        "response_url": "https://hooks.example.test/r",
        "trigger_id": "1.2.3",
    }
)


def _bolt_drops_it() -> bool:
    return BoltRequest(body=COMMAND, headers=FORM).body == {}


def test_the_guard_matches_the_installed_slack_bolt():
    version = ".".join(map(str, bolt_version()))
    if _bolt_drops_it():
        assert bolt_payload_bug_expected(), (
            f"slack-bolt {version} still drops a slash command containing 'payload', but BOLT_PAYLOAD_BUG_UNTIL "
            f"({BOLT_PAYLOAD_BUG_UNTIL}) does not cover it: extend it in bot/slack_app.py"
        )
    else:
        assert not bolt_payload_bug_expected(), (
            f"slack-bolt {version} parses a slash command containing 'payload' by itself: the bug is fixed, "
            "remove the workaround (SlackHttpRequest) from bot/slack_app.py"
        )


def test_the_workaround_is_still_needed_on_the_pinned_version():
    assert _bolt_drops_it(), f"fixed upstream in slack-bolt {bolt_version()}: remove the workaround"
    fixed = SlackHttpRequest(body=COMMAND, headers=FORM)
    assert fixed.body["text"] == "status payload" and fixed.body["channel_name"] == "payload-team"
    assert (fixed.context.team_id, fixed.context.user_id, fixed.context.channel_id) == ("T0001", "U0001", "C0001")
    copy = fixed.to_copyable()
    assert copy.body == fixed.body and copy.context.team_id == "T0001"


def test_interactions_and_plain_commands_are_left_to_bolt():
    interaction = urlencode({"payload": '{"type": "block_actions", "team": {"id": "T0001"}}'})
    assert SlackHttpRequest(body=interaction, headers=FORM).body == BoltRequest(body=interaction, headers=FORM).body
    plain = COMMAND.replace("payload", "status")
    assert SlackHttpRequest(body=plain, headers=FORM).body == BoltRequest(body=plain, headers=FORM).body


def test_the_guard_is_off_past_the_known_versions():
    major, minor = BOLT_PAYLOAD_BUG_UNTIL
    assert bolt_payload_bug_expected((major, minor))
    assert bolt_payload_bug_expected((1, 0))
    assert not bolt_payload_bug_expected((major, minor + 1))
    assert not bolt_payload_bug_expected((major + 1, 0))
