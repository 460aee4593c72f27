"""Block Kit limits that slack_sdk.models does not check (option counts, lengths), as Slack enforces them."""

from __future__ import annotations

from typing import Any

SELECTS = {"static_select", "multi_static_select"}
CHOICE_GROUPS = {"radio_buttons": 10, "checkboxes": 10}


def limit_errors(view: dict[str, Any]) -> list[str]:
    """Every broken limit of a view (modal or home) or a message ({"blocks": [...]})."""
    errors: list[str] = []
    blocks = view.get("blocks") or []
    max_blocks = 50 if view.get("type") not in ("modal", "home") else 100
    if len(blocks) > max_blocks:
        errors.append(f"{len(blocks)} blocks > {max_blocks}")
    if view.get("type") == "modal":
        for key in ("title", "submit", "close"):
            if key in view and len(view[key]["text"]) > 24:
                errors.append(f"{key} longer than 24")
    if len(view.get("private_metadata") or "") > 3000:
        errors.append("private_metadata longer than 3000")
    for block in blocks:
        _block(block, errors)
    return errors


def _block(block: dict[str, Any], errors: list[str]) -> None:
    if len(block.get("block_id") or "") > 255:
        errors.append("block_id longer than 255")
    text = block.get("text")
    if isinstance(text, dict) and len(text.get("text", "")) > 3000:
        errors.append("section text longer than 3000")
    if block.get("type") == "context" and len(block.get("elements", [])) > 10:
        errors.append("context with more than 10 elements")
    if block.get("type") == "actions" and len(block.get("elements", [])) > 25:
        errors.append("actions with more than 25 elements")
    for element in [block.get("element"), block.get("accessory"), *block.get("elements", [])]:
        if isinstance(element, dict):
            _element(element, errors)
    if block.get("type") == "input" and len(block.get("label", {}).get("text", "")) > 2000:
        errors.append("input label longer than 2000")


def _element(element: dict[str, Any], errors: list[str]) -> None:
    etype = element.get("type")
    options = element.get("options") or []
    if etype in SELECTS and len(options) > 100:
        errors.append(f"{etype} with {len(options)} options > 100")
    if etype in CHOICE_GROUPS and len(options) > CHOICE_GROUPS[etype]:
        errors.append(f"{etype} with {len(options)} options > {CHOICE_GROUPS[etype]}")
    for opt in options + (element.get("initial_options") or []):
        if len(opt["text"]["text"]) > 75:
            errors.append("option text longer than 75")
        if len(opt.get("value", "")) > 150:
            errors.append("option value longer than 150")
    if etype == "button":
        if len(element["text"]["text"]) > 75:
            errors.append("button text longer than 75")
        if len(element.get("value") or "") > 2000:
            errors.append("button value longer than 2000")
    if len(element.get("action_id") or "") > 255:
        errors.append("action_id longer than 255")
