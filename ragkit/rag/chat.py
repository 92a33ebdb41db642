"""Multi-turn question answering: follow-ups are rewritten into standalone queries first.

Retrieval sees one query at a time, so "and when was it built?" must become "when was
Strasbourg cathedral built?" before searching. The rewrite uses the same generator.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from prompts import library_template
from ragkit.rag.pipeline import RAGPipeline
from ragkit.rag.schema import Answer

MAX_HISTORY_TURNS = 6


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str


class ChatSession:
    def __init__(self, rag: RAGPipeline, max_new_tokens: int = 48) -> None:
        self.rag = rag
        self.history: list[Turn] = []
        self.template = library_template("condense_question")
        self.max_new_tokens = max_new_tokens

    def standalone_question(self, question: str) -> str:
        """The question rewritten with the history; unchanged on the first turn."""
        if not self.history:
            return question
        history = [t.model_dump() for t in self.history[-MAX_HISTORY_TURNS:]]
        prompt = self.template.render(history=history, question=question)
        result = self.rag.generator.generate(
            [prompt], max_new_tokens=self.max_new_tokens, do_sample=False
        )[0]
        rewritten = result.text.strip().splitlines()[0].strip() if result.text.strip() else ""
        return rewritten or question

    def ask(self, question: str) -> Answer:
        query = self.standalone_question(question)
        answer = self.rag.ask(query)
        if query != question:
            assert answer.trace is not None
            answer.trace.notes.insert(0, f"follow-up rewritten as: {query}")
        self.history.extend(
            [Turn(role="user", content=question), Turn(role="assistant", content=answer.answer)]
        )
        return answer
