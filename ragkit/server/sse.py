"""Server-sent events framing.

One event is optional ``event:`` and ``id:`` lines, then the JSON payload on a single ``data:``
line (JSON never contains a raw newline, so one line is always enough), then a blank line.
"""

from __future__ import annotations

import json
from typing import Any

SSE_MEDIA_TYPE = "text/event-stream"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = "data: [DONE]\n\n"


def sse_event(data: Any, event: str | None = None) -> str:
    """Frame ``data`` (JSON-encoded unless already a string) as one event."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    if "\n" in payload or "\r" in payload:
        raise ValueError("an SSE data line must not contain a newline")
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def parse_sse(text: str) -> list[tuple[str | None, str]]:
    """Split an event stream into ``(event, data)`` pairs (for clients and tests)."""
    events: list[tuple[str | None, str]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        events.append((name, "\n".join(data)))
    return events
