"""Finding JSON objects inside model output (bare, or in Markdown code fences)."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_DECODER = json.JSONDecoder()


def json_objects(text: str) -> list[tuple[int, Any]]:
    """Every JSON object or array decodable in ``text``, with its offset, in text order.

    Fenced blocks are tried first as a whole (their content is what the model meant as
    JSON); elsewhere every ``{``/``[`` is a candidate start and ``raw_decode`` finds where a
    value ends, so prose around the object or after it does not matter. Objects nested in one
    already found are not reported again.
    """
    found: list[tuple[int, Any]] = []
    covered: list[tuple[int, int]] = []
    for fence in _FENCE.finditer(text):
        body = fence.group(1).strip()
        try:
            value = json.loads(body)
        except ValueError:
            continue
        if isinstance(value, dict | list):
            found.append((fence.start(), value))
            covered.append((fence.start(), fence.end()))
    for match in re.finditer(r"[{\[]", text):
        start = match.start()
        if any(a <= start < b for a, b in covered):
            continue
        try:
            value, end = _DECODER.raw_decode(text, start)
        except ValueError:
            continue
        found.append((start, value))
        covered.append((start, end))
    return sorted(found, key=lambda item: item[0])


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object (a mapping) in ``text``, or None."""
    for _, value in json_objects(text):
        if isinstance(value, dict):
            return value
    return None
