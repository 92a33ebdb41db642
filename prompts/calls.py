"""Recording every model call of a strategy as a tree, under a token budget.

Multi-call strategies (self-consistency, least-to-most, self-refine, recursive summaries) are
hard to debug from their final answer alone, so each one routes its calls through a
:class:`CallRecorder`: every call becomes a :class:`CallNode` (prompt, output, tokens) under
the node of the stage that made it, and the tree is part of the strategy's result — and so of
the pipeline trace when the strategy runs as a step. The recorder also enforces the token
budget: before each call it checks what was spent and raises :class:`TokenBudgetExhaustedError`, which
the strategies catch to return their best answer so far. The check happens between calls, so
the budget can be overshot by at most one batched call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prompts.protocols import TextGenerator, completion_text, usage


class TokenBudgetExhaustedError(RuntimeError):
    """The strategy's token budget was spent before a call it wanted to make."""


class CallNode(BaseModel):
    """One stage of a strategy (``children`` set) or one model call (``prompt`` set)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="What this node did: 'decompose', 'answer', 'critique' ...")
    label: str = ""
    prompt: Any = None
    output: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    children: list[CallNode] = Field(default_factory=list)

    def walk(self) -> Iterator[CallNode]:
        """This node and every descendant, depth first, in call order."""
        yield self
        for child in self.children:
            yield from child.walk()

    @property
    def calls(self) -> list[CallNode]:
        """The model calls (leaves with a prompt) in the order they were made."""
        return [n for n in self.walk() if n.prompt is not None]

    @property
    def total_tokens(self) -> int:
        return sum(n.prompt_tokens + n.completion_tokens for n in self.calls)

    def depth(self) -> int:
        """Levels below this node (0 for a leaf)."""
        return 1 + max((c.depth() for c in self.children), default=-1)


class CallRecorder:
    """Sends batched calls to a generator, records them, and keeps the token account."""

    def __init__(
        self,
        generator: TextGenerator,
        options: Mapping[str, Any] | None = None,
        max_tokens: int | None = None,
        root: CallNode | None = None,
    ) -> None:
        if max_tokens is not None and max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.generator = generator
        self.options = dict(options or {})
        self.max_tokens = max_tokens
        self.root = root or CallNode(kind="strategy")
        self.batches = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def spent(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def stage(self, kind: str, parent: CallNode | None = None, label: str = "") -> CallNode:
        """A grouping node (no call of its own) under ``parent`` (default: the root)."""
        node = CallNode(kind=kind, label=label)
        (parent or self.root).children.append(node)
        return node

    def generate(
        self,
        prompts: Sequence[Any],
        kind: str,
        parent: CallNode | None = None,
        labels: Sequence[str] | None = None,
        **overrides: Any,
    ) -> list[str]:
        """Complete ``prompts`` in one generator call; one recorded node per prompt."""
        if self.max_tokens is not None and self.spent >= self.max_tokens:
            raise TokenBudgetExhaustedError(
                f"token budget of {self.max_tokens} spent ({self.spent} used)"
            )
        prompts = list(prompts)
        results = list(self.generator.generate(prompts, **{**self.options, **overrides}))
        if len(results) != len(prompts):
            raise RuntimeError(
                f"the generator returned {len(results)} results for {len(prompts)} prompts"
            )
        self.batches += 1
        texts: list[str] = []
        for i, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
            text = completion_text(result)
            p_tokens, c_tokens = usage(result, prompt)
            self.prompt_tokens += p_tokens
            self.completion_tokens += c_tokens
            (parent or self.root).children.append(
                CallNode(
                    kind=kind,
                    label=labels[i] if labels is not None else "",
                    prompt=prompt if isinstance(prompt, str) else [dict(m) for m in prompt],
                    output=text,
                    prompt_tokens=p_tokens,
                    completion_tokens=c_tokens,
                )
            )
            texts.append(text)
        return texts
