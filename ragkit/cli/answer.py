"""``ragkit ask`` and ``ragkit chat``: answers from an index, with their sources.

Both build their pipeline with :func:`ragkit.rag.answering_pipeline`, the builder ``serve`` and
``eval --generate`` use too, so a question gets the same answer from every front end.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ragkit.cli.common import err, fail, guard, out, print_json, say, snippet
from ragkit.cli.options import (
    AbstainBelowOption,
    AbstainBiasOption,
    AdapterOption,
    ApiKeyEnvOption,
    BaseUrlOption,
    DecodingOption,
    GeneratorBackendOption,
    GeneratorOption,
    IndexOption,
    MaxNewTokensOption,
    MinRelevanceOption,
    QuantizeOption,
    RetrieverOption,
    StrategyOption,
)
from ragkit.terminal import visible

KOption = Annotated[int, typer.Option("-k", help="Passages to retrieve.")]


def print_sources(answer: Any) -> None:
    """The cited sources, then the trace notes: one account of what is and is not cited."""
    if answer.citations:
        say("\nSources:")
    elif not answer.abstained:
        say("(no sources cited)", console=err)
    for c in answer.citations:
        source = visible(c.source, one_line=True)
        if c.quote is not None:
            quote = snippet(c.quote, 160)
            say(f"  [{c.n}] {source} [{c.quote_start}:{c.quote_end}] quotes: {quote}")
            say(f"      in passage [{c.start}:{c.end}]: {snippet(c.text, 160)}")
            continue
        flag = " (inferred: the passage contains the whole answer)" if c.inferred else ""
        say(f"  [{c.n}] {source} [{c.start}:{c.end}]{flag}: {snippet(c.text, 160)}")
    for note in answer.trace.notes if answer.trace else []:
        say(f"note: {note}", console=err)
    estimate = getattr(answer, "answerability", None)
    if estimate is not None:
        say(f"answerability: {estimate:.2f} (P that the passages hold the answer)", console=err)


def ask_command(
    question: Annotated[str, typer.Argument(help="The question.")],
    index: IndexOption,
    k: KOption = 4,
    generator: GeneratorOption = None,
    generator_backend: GeneratorBackendOption = "auto",
    adapter: AdapterOption = None,
    quantize: QuantizeOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print the answer as it is generated.")
    ] = True,
    max_new_tokens: MaxNewTokensOption = None,
    decoding: DecodingOption = None,
    abstain_below: AbstainBelowOption = None,
    abstain_bias: AbstainBiasOption = None,
    min_relevance: MinRelevanceOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print answer, citations and trace as JSON.")
    ] = False,
    show_trace: Annotated[
        bool, typer.Option("--trace", help="Print the trace (steps, timings, final prompt).")
    ] = False,
    retriever: RetrieverOption = "hybrid",
    strategy: StrategyOption = "plain",
) -> None:
    """Answer QUESTION from the index, citing the passages used."""
    from ragkit.rag import answering_pipeline

    if not question.strip():
        fail("question is empty")

    def run() -> Any:
        rag = answering_pipeline(
            index,
            generator=generator,
            k=k,
            retriever=retriever,
            strategy=strategy,
            decoding=decoding,
            abstain_below=abstain_below,
            abstain_bias=abstain_bias,
            min_relevance=min_relevance,
            adapter=adapter,
            quantize=quantize,
            max_new_tokens=max_new_tokens,
            backend=generator_backend,
            base_url=base_url,
            api_key_env=api_key_env,
        )
        rag.preload()  # the model loads while the index opens and retrieval runs
        if json_output or not stream:
            return rag.ask(question)
        answer_stream = rag.stream(question)
        for piece in answer_stream:
            say(piece, end="")
        out.print()
        return answer_stream.answer

    answer = guard(run)
    if json_output:
        print_json(answer.to_json_dict())
        return
    if not stream:
        say(answer.answer)
    print_sources(answer)
    if show_trace and answer.trace is not None:
        say(answer.trace.to_text(), console=err)


def chat_command(
    index: IndexOption,
    k: KOption = 4,
    generator: GeneratorOption = None,
    max_new_tokens: MaxNewTokensOption = None,
    generator_backend: GeneratorBackendOption = "auto",
    adapter: AdapterOption = None,
    quantize: QuantizeOption = None,
    base_url: BaseUrlOption = None,
    api_key_env: ApiKeyEnvOption = None,
    decoding: DecodingOption = None,
    abstain_below: AbstainBelowOption = None,
    abstain_bias: AbstainBiasOption = None,
    min_relevance: MinRelevanceOption = None,
) -> None:
    """A multi-turn session: follow-up questions are rewritten using the conversation."""
    from ragkit.rag import ChatSession, answering_pipeline

    session = guard(
        lambda: ChatSession(
            answering_pipeline(
                index,
                generator=generator,
                k=k,
                decoding=decoding,
                abstain_below=abstain_below,
                abstain_bias=abstain_bias,
                min_relevance=min_relevance,
                adapter=adapter,
                quantize=quantize,
                max_new_tokens=max_new_tokens,
                backend=generator_backend,
                base_url=base_url,
                api_key_env=api_key_env,
            )
        )
    )
    say("ragkit chat: ask a question (empty line, 'exit' or Ctrl-D to quit)", console=err)
    while True:
        try:
            question = input("> ")
        except EOFError:
            break
        if not question.strip() or question.strip().lower() in {"exit", "quit"}:
            break
        answer = guard(lambda q=question: session.ask(q))  # type: ignore[misc]
        say(answer.answer)
        print_sources(answer)
