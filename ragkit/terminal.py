"""Showing untrusted text (documents, model output, file names, messages quoting them) safely.

Terminal output never interprets such text: no rich markup or emoji codes (the CLI prints it as
:class:`rich.text.Text`), and no characters that drive the terminal. :func:`visible` replaces
C0/C1 control characters, DEL and the bidirectional embedding, override, isolate and mark
characters (which can reorder what is displayed, as in "Trojan Source") with printable stand-ins.
JSON output keeps the exact text: :func:`terminal_json` only writes the same characters as
``\\uXXXX`` escapes, which decode to the original.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

# C0 controls but tab and newline (one_line: all of C0 and the U+2028/U+2029 separators), DEL,
# C1 controls, and the bidi formatting characters: ALM, LRM/RLM, LRE/RLE/PDF/LRO/RLO,
# LRI/RLI/FSI/PDI.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
# Characters JSON may carry raw inside strings that a terminal would act on (JSON already
# escapes C0), plus U+2028/U+2029, which some JavaScript and terminal consumers treat as breaks.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def _stand_in(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if code < 0x20:
        return chr(0x2400 + code)  # the Unicode control pictures: ␀ … ␟ (␛ for ESC, ␊ for LF)
    if code == 0x7F:
        return "\u2421"  # ␡
    return f"<U+{code:04X}>"


def visible(text: str, *, one_line: bool = False) -> str:
    """``text`` with every character that could drive or reorder a terminal shown as a symbol.

    Control characters become their Unicode control pictures (``␀``, ``␛``, ``␍``...), C1
    controls and bidi formatting characters ``<U+202E>``-style tags. Tabs and newlines are kept,
    unless ``one_line`` (file names, error messages), where they become ``␉`` and ``␊`` (and the
    line and paragraph separators ``<U+2028>``, ``<U+2029>``).
    """
    return (_UNSAFE_ONE_LINE if one_line else _UNSAFE).sub(_stand_in, text)


def terminal_json(value: Any, *, indent: int | None = 2) -> str:
    """JSON for a terminal: ``value`` (or a JSON string, re-indented) with non-ASCII text kept
    readable but C1 controls, DEL and bidi formatting characters written as ``\\uXXXX``
    escapes, so the decoded text is exactly the original."""
    data = json.loads(value) if isinstance(value, str | bytes) else value
    dumped = json.dumps(data, indent=indent, ensure_ascii=False)
    # These characters are not JSON whitespace, so raw they can only sit inside strings, where
    # the escape means the same character.
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


class SafeLogFilter(logging.Filter):
    """Formats each record's message (and traceback) with :func:`visible`, so log lines that
    quote documents, model output or request data cannot drive the terminal they are shown on.

    Attach it to the logger that creates the records (logger filters do not see records
    propagated from child loggers): :func:`protect_logger`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it for the handler to report
            return True
        record.msg = visible(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = visible(record.exc_text)
        if record.stack_info:
            record.stack_info = visible(record.stack_info)
        return True


def protect_logger(name: str) -> logging.Logger:
    """Attach one :class:`SafeLogFilter` to the logger ``name`` (idempotent) and return it."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, SafeLogFilter) for f in logger.filters):
        logger.addFilter(SafeLogFilter())
    return logger
