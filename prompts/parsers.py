"""Extracting the final answer from a reasoning completion.

A chain-of-thought completion is reasoning followed by an answer; each parser finds where the
answer starts so the text before it is kept as the reasoning. Parsers are pydantic models with
a ``kind`` so a strategy's configuration (YAML) can name one, and each carries the instruction
that asks the model for the format it parses.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from prompts.jsontext import json_objects


class Extraction(NamedTuple):
    answer: str
    start: int
    """Character offset where the answer part begins (the reasoning is the text before)."""


class _Parser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def extract(self, text: str) -> Extraction | None:
        raise NotImplementedError

    @property
    def instruction(self) -> str:
        raise NotImplementedError


class MarkerParser(_Parser):
    """The text after the last ``Answer:`` (case-insensitive) up to the end of its line."""

    kind: Literal["marker"] = "marker"
    marker: str = "Answer:"

    def extract(self, text: str) -> Extraction | None:
        matches = list(re.finditer(re.escape(self.marker), text, flags=re.IGNORECASE))
        for match in reversed(matches):
            rest = text[match.end() :].strip()
            if rest:
                return Extraction(rest.splitlines()[0].strip(), match.start())
        return None

    @property
    def instruction(self) -> str:
        return f"Then give the final answer on its own line, starting with '{self.marker}'."


_NUMBER = re.compile(r"(?<![\w.])-?\d(?:[\d,]*\d)?(?:\.\d+)?")


class LastNumberParser(_Parser):
    """The last number in the text (thousands separators removed)."""

    kind: Literal["number"] = "number"

    def extract(self, text: str) -> Extraction | None:
        matches = list(_NUMBER.finditer(text))
        if not matches:
            return None
        last = matches[-1]
        return Extraction(last.group(0).replace(",", ""), last.start())

    @property
    def instruction(self) -> str:
        return "Then end with the final number."


class ChoiceParser(_Parser):
    """A choice letter: after "answer is"/"Answer:", else the last bracketed or bare letter."""

    kind: Literal["choice"] = "choice"
    choices: str = "ABCD"

    def extract(self, text: str) -> Extraction | None:
        letters = re.escape(self.choices)
        patterns = [
            rf"answer\s*(?:is|:)\s*\(?([{letters}])\b",
            rf"\(([{letters}])\)",
            rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])",
        ]
        for i, pattern in enumerate(patterns):
            flags = re.IGNORECASE if i == 0 else 0
            matches = list(re.finditer(pattern, text, flags=flags))
            if matches:
                last = matches[-1]
                return Extraction(last.group(1).upper(), last.start())
        return None

    @property
    def instruction(self) -> str:
        return f"Then give the letter of the correct choice ({', '.join(self.choices)}) on its own line, as 'Answer: <letter>'."


class JsonFieldParser(_Parser):
    """A field of the last JSON object in the text that has it (code fences allowed)."""

    kind: Literal["json"] = "json"
    field: str = "answer"

    def extract(self, text: str) -> Extraction | None:
        for start, obj in reversed(json_objects(text)):
            if isinstance(obj, dict) and self.field in obj:
                value = obj[self.field]
                answer = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                return Extraction(answer, start)
        return None

    @property
    def instruction(self) -> str:
        return f'Then give the final answer as a JSON object: {{"{self.field}": ...}}.'


AnswerParser = Annotated[
    MarkerParser | LastNumberParser | ChoiceParser | JsonFieldParser, Field(discriminator="kind")
]


def fallback_answer(text: str) -> str:
    """When no parser matches: the last non-empty line, the usual place for a conclusion."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
