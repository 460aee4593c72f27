"""The readers of Slack payloads: who clicked, and each kind of input's value."""

from __future__ import annotations

from bot.view_state import caller, checked, picked, selected, text


def test_caller_reads_block_actions_options_and_org_installs() -> None:
    assert caller({"user": {"id": "U1", "team_id": "T9"}, "team": {"id": "T1"}}) == ("T1", "U1")
    assert caller({"user": {"id": "U1", "team_id": "T9"}, "team": None}) == ("T9", "U1")  # org-wide install
    assert caller({"user_id": "U2", "team_id": "T2"}) == ("T2", "U2")  # flat ids of older payloads


def test_readers_of_each_input_kind() -> None:
    values = {
        "b_mode": {"a_mode": {"type": "static_select", "selected_option": {"value": "all"}}},
        "b_none": {"a_none": {"type": "static_select", "selected_option": None}},
        "b_boxes": {"a_boxes": {"type": "checkboxes", "selected_options": [{"value": "x"}, {"value": "y"}]}},
        "b_text": {"a_text": {"type": "plain_text_input", "value": "  Hi  "}},
        "b_blank": {"a_blank": {"type": "plain_text_input", "value": None}},
    }
    assert selected(values, "b_mode", "a_mode") == "all"
    assert selected(values, "b_none", "a_none") is None
    assert selected(values, "b_missing", "a_missing") is None
    assert picked(values, "b_boxes", "a_boxes") == ["x", "y"]
    assert picked(values, "b_missing", "a_missing") == []
    assert checked(values, "b_boxes", "a_boxes") == {"x", "y"}
    assert text(values, "b_text", "a_text") == "Hi"
    assert text(values, "b_text", "a_text", strip=False) == "  Hi  "
    assert text(values, "b_blank", "a_blank") == ""
