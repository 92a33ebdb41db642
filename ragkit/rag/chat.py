"""Multi-turn question answering: follow-ups are rewritten into standalone queries first.

Retrieval sees one query at a time, so "and when was it built?" must become "when was
Strasbourg cathedral built?" before searching. The rewrite uses the same generator.

Decisions:

- **The prompt.** Local models (the packaged 135M–270M ones above all) continue a pattern far
  more reliably than they follow an instruction, so by default the generator gets a
  completion-style, few-shot prompt sent verbatim (``apply_chat_template=False``): worked
  examples of "conversation, last question, standalone question", then the real conversation and
  the new question, ending right where the rewritten question starts, decoded greedily up to the
  end of the line. An OpenAI-compatible backend gets the chat form (the ``condense_question``
  library template) instead, because chat-only servers have no endpoint for verbatim prompts
  (``rewrite_style`` overrides either). Turns are flattened to one line each and shortened, so
  text in a conversation cannot pose as the prompt's own labels.
- **The guard.** A small model asked to rewrite a follow-up often rewrites the conversation's
  last *answer* instead ("The official seat of the European Parliament is Strasbourg, France.
  [2]" for "When was its historic centre listed by UNESCO?"). The rewrite is used only if it is
  still a question about the new turn: not empty, no citation markers (they come from answers),
  not (nearly) a previous answer, not much longer than the new turn and the previous question
  together, and it keeps most of the new turn's content words. A follow-up that leans on the
  conversation ("its", "and of …?") must also gain a content word from the conversation: a
  "rewrite" that only echoes the follow-up resolves nothing (the 270M model often does that).
- **The fallback** when the guard rejects a rewrite is deterministic: a follow-up that leans on
  the conversation (a pronoun such as "it"/"its", a leading "and", "what about", or fewer than two
  content words) is searched as the new turn plus the previous query's content words in
  parentheses — crude, but it keeps retrieval on the conversation's subject; any other turn is
  used as asked. The trace notes which query was used and why.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from prompts import library_template
from ragkit.rag.pipeline import RAGPipeline
from ragkit.rag.schema import Answer

MAX_HISTORY_TURNS = 6
PROMPT_TURNS = 4
"""Turns shown in the completion prompt (the last two exchanges): small models copy from
whatever is in front of them, so older turns are left out."""
MAX_TURN_WORDS = 60
NEAR_EQUAL_RATIO = 0.8

RewriteStyle = Literal["auto", "completion", "chat"]
RewriteSource = Literal["first-turn", "model", "fallback-keywords", "question"]


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _word_set(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves also else ever many much may might must one ones shall still tell us whose"""
)
REFERRING = _word_set(
    """it its it's itself he him his she her hers they them their theirs this that these those
    there then one ones former latter"""
)
LEANING_STARTS = ("and ", "and,", "but ", "what about", "how about", "also ", "or ")

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_MARKER = re.compile(r"\[\d+\]")
_LABEL = re.compile(r"^\s*(?:standalone|rewritten|new|last)?\s*(?:question|query)\s*:\s*", re.I)

FEW_SHOT: tuple[tuple[str, str, str, str], ...] = (
    # (previous question, its answer, follow-up, standalone follow-up)
    (
        "When was the Eiffel Tower built?",
        "It was built from 1887 to 1889. [1]",
        "Who designed it?",
        "Who designed the Eiffel Tower?",
    ),
    (
        "Who wrote the novel Germinal?",
        "Émile Zola, in 1885. [2]",
        "Where was he born?",
        "Where was Émile Zola born?",
    ),
    (
        "What is the capital of Alsace?",
        "Strasbourg. [1]",
        "and of Lorraine?",
        "What is the capital of Lorraine?",
    ),
    (
        "How long is the Danube?",
        "About 2,850 km. [3]",
        "Which river flows through Prague?",
        "Which river flows through Prague?",
    ),
)
INSTRUCTION = (
    "Rewrite the last question so that it can be understood without the conversation: replace "
    "words such as it, its, he or there with what they refer to. Keep the question's meaning and "
    "do not answer it."
)


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: str
    content: str


class Rewrite(BaseModel):
    """How one question became the query that was searched and answered."""

    model_config = ConfigDict(extra="forbid")

    question: str
    query: str
    source: RewriteSource
    candidate: str | None = None
    """What the model wrote (None on the first turn)."""
    rejected: str | None = None
    """Why the guard refused ``candidate`` (None if it was used)."""

    def note(self) -> str | None:
        """The trace note for this rewrite (None when the question was searched unchanged)."""
        if self.source == "model":
            return f"follow-up rewritten as: {self.query}" if self.query != self.question else None
        if self.rejected is None:
            return None
        used = (
            f"searched as the question plus the previous query's keywords: {self.query}"
            if self.source == "fallback-keywords"
            else "searched as asked"
        )
        return f"follow-up rewrite rejected ({self.rejected}): {self.candidate!r}; {used}"


def _one_line(text: str, max_words: int = MAX_TURN_WORDS) -> str:
    words = text.split()
    return " ".join(words[:max_words]) + (" …" if len(words) > max_words else "")


def words(text: str) -> list[str]:
    """Lower-cased words without possessive endings."""
    found = [w.lower() for w in _WORD.findall(text)]
    return [w[:-2] if w.endswith("'s") else w for w in found]


def content_words(text: str) -> list[str]:
    """Words that carry the subject (stopwords dropped, crude plural folding), in order."""
    seen: dict[str, None] = {}
    for word in words(text):
        if word in STOPWORDS or word in REFERRING:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        seen.setdefault(word, None)
    return list(seen)


def completion_prompt(history: Sequence[Turn], question: str) -> str:
    """The few-shot rewrite prompt, ending where the standalone question starts."""
    blocks = [INSTRUCTION]
    for previous, answer, follow_up, standalone in FEW_SHOT:
        blocks.append(
            f"Conversation:\nUser: {previous}\nAssistant: {answer}\n"
            f"Last question: {follow_up}\nStandalone question: {standalone}"
        )
    labels = {"user": "User", "assistant": "Assistant"}
    lines = [
        f"{labels.get(t.role, t.role.title())}: {_one_line(t.content)}"
        for t in history[-PROMPT_TURNS:]
    ]
    conversation = "\n".join(lines)
    blocks.append(
        f"Conversation:\n{conversation}\nLast question: {_one_line(question)}\nStandalone question:"
    )
    return "\n\n".join(blocks)


def parse_rewrite(text: str) -> str:
    """The first non-empty line of the model's output, without a label or quotes."""
    for line in text.splitlines():
        line = _LABEL.sub("", line).strip().strip("\"'“”").strip()
        if line:
            return " ".join(line.split())
    return ""


def check_rewrite(candidate: str, question: str, history: Sequence[Turn]) -> str | None:
    """Why ``candidate`` is not a usable standalone version of ``question`` (None if it is)."""
    if not candidate:
        return "empty"
    if _MARKER.search(candidate):
        return "it carries citation markers, so it was copied from an answer"
    cand_words = words(candidate)
    for turn in history:
        if turn.role != "assistant":
            continue
        ratio = difflib.SequenceMatcher(None, cand_words, words(turn.content)).ratio()
        if ratio >= NEAR_EQUAL_RATIO:
            return "it repeats an earlier answer"
    previous = next((t.content for t in reversed(history) if t.role == "user"), "")
    limit = 2 * (len(words(question)) + len(words(previous))) + 8
    if len(cand_words) > limit:
        return f"{len(cand_words)} words, more than {limit}"
    wanted = content_words(question)
    kept = set(content_words(candidate))
    if wanted:
        shared = sum(w in kept for w in wanted)
        if shared * 2 <= len(wanted):
            return (
                f"it keeps {shared} of the {len(wanted)} content words of the new question "
                f"({', '.join(wanted)})"
            )
    if leans_on_conversation(question):
        context = {w for t in history for w in content_words(t.content)}
        if not (kept - set(wanted)) & context:
            return "it takes nothing from the conversation that the question refers to"
    return None


def leans_on_conversation(question: str) -> bool:
    """Whether a question needs the conversation to be understood (pronouns, "and …?")."""
    lowered = " ".join(question.lower().split())
    if lowered.startswith(LEANING_STARTS):
        return True
    if any(w in REFERRING for w in words(question)):
        return True
    return len(content_words(question)) < 2


def fallback_query(question: str, previous_query: str) -> tuple[str, RewriteSource]:
    """The deterministic rewrite: the question, plus the previous query's content words when it
    leans on the conversation."""
    if not previous_query or not leans_on_conversation(question):
        return question, "question"
    own = set(content_words(question))
    extra = [w for w in content_words(previous_query) if w not in own]
    if not extra:
        return question, "question"
    # the previous query's own spelling of those words (capitals help the reader, not BM25)
    spelled = {w.lower(): w for w in _WORD.findall(previous_query)}
    shown = [spelled.get(w, spelled.get(w + "s", w)) for w in extra]
    return f"{question.strip()} ({' '.join(shown)})", "fallback-keywords"


class ChatSession:
    def __init__(
        self, rag: RAGPipeline, max_new_tokens: int = 48, rewrite_style: RewriteStyle = "auto"
    ) -> None:
        if rewrite_style not in ("auto", "completion", "chat"):
            raise ValueError(
                f"rewrite_style must be auto, completion or chat, got {rewrite_style!r}"
            )
        self.rag = rag
        self.history: list[Turn] = []
        self.template = library_template("condense_question")
        self.max_new_tokens = max_new_tokens
        self.rewrite_style = rewrite_style
        self.last_rewrite: Rewrite | None = None
        self._previous_query = ""

    @property
    def style(self) -> Literal["completion", "chat"]:
        """The prompt form used: ``auto`` is chat for OpenAI-compatible servers only."""
        if self.rewrite_style != "auto":
            return self.rewrite_style
        from ragkit.generation.backends.openai_api import OpenAIGenerator

        return "chat" if isinstance(self.rag.generator, OpenAIGenerator) else "completion"

    def _generate(self, question: str) -> str:
        overrides: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        prompt: Any
        if self.style == "completion":
            prompt = completion_prompt(self.history, question)
            overrides.update(apply_chat_template=False, stop=["\n"])
        else:
            history = [
                {"role": t.role, "content": _one_line(t.content)}
                for t in self.history[-MAX_HISTORY_TURNS:]
            ]
            prompt = self.template.render(history=history, question=_one_line(question))
        result = self.rag.generator.generate([prompt], **overrides)[0]
        return str(result.text)

    def rewrite(self, question: str) -> Rewrite:
        """The query to search and answer for ``question``, and how it was obtained."""
        if not self.history:
            return Rewrite(question=question, query=question, source="first-turn")
        candidate = parse_rewrite(self._generate(question))
        reason = check_rewrite(candidate, question, self.history[-MAX_HISTORY_TURNS:])
        if reason is None:
            return Rewrite(question=question, query=candidate, source="model", candidate=candidate)
        query, source = fallback_query(question, self._previous_query)
        return Rewrite(
            question=question, query=query, source=source, candidate=candidate, rejected=reason
        )

    def standalone_question(self, question: str) -> str:
        """The question rewritten with the history; unchanged on the first turn."""
        return self.rewrite(question).query

    def ask(self, question: str) -> Answer:
        rewrite = self.rewrite(question)
        self.last_rewrite = rewrite
        answer = self.rag.ask(rewrite.query)
        note = rewrite.note()
        if note is not None:
            assert answer.trace is not None
            answer.trace.notes.insert(0, note)
        self.history.extend(
            [Turn(role="user", content=question), Turn(role="assistant", content=answer.answer)]
        )
        self._previous_query = rewrite.query
        return answer
