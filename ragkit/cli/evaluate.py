"""``ragkit eval``: retrieval (and, with ``--generate``, answer) quality on a dataset.

The set-up (indexing the dataset's corpus, the reranker, the answering pipeline) is
:func:`ragkit.evaluation.run_evaluation`'s; this module parses options and prints the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ragkit.cli.common import err, fail, guard, out, print_json, say, text
from ragkit.cli.options import (
    AbstainBelowOption,
    AbstainBiasOption,
    AdapterOption,
    DecodingOption,
    GeneratorBackendOption,
    GeneratorOption,
    MaxNewTokensOption,
    MinRelevanceOption,
    QuantizeOption,
    RetrieverOption,
    StrategyOption,
)
from ragkit.evaluation.datasets import DatasetFormat


def eval_command(
    dataset: Annotated[
        Path, typer.Argument(help="SQuAD JSON, a BEIR folder, or a JSONL of questions.")
    ],
    dataset_format: Annotated[
        DatasetFormat | None,
        typer.Option("--format", help="squad, beir or jsonl (default: from the path)."),
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            "--index",
            "-i",
            help="Evaluate against this index (default: index the dataset's own corpus).",
        ),
    ] = None,
    retriever: RetrieverOption = "hybrid",
    rerank: Annotated[
        str | None, typer.Option(help="Cross-encoder model (HF id or local path) to rerank with.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="Passages retrieved per question (scored).")] = 10,
    generate: Annotated[
        bool,
        typer.Option(
            "--generate", help="Also answer with the generator: EM/F1, abstention, citations."
        ),
    ] = False,
    generate_k: Annotated[
        int, typer.Option(help="Passages the generator reads (as `ask -k`).")
    ] = 4,
    generator: GeneratorOption = None,
    generator_backend: GeneratorBackendOption = "auto",
    adapter: AdapterOption = None,
    quantize: QuantizeOption = None,
    strategy: StrategyOption = "plain",
    decoding: DecodingOption = None,
    abstain_below: AbstainBelowOption = None,
    abstain_bias: AbstainBiasOption = None,
    min_relevance: MinRelevanceOption = None,
    max_new_tokens: MaxNewTokensOption = None,
    embedder: Annotated[
        str | None, typer.Option(help="Embedder when indexing the dataset's corpus.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate only the first N questions.")
    ] = None,
    failures: Annotated[
        Path | None, typer.Option(help="Write per-question failures as JSONL here.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Measure retrieval (recall@1/5/10, MRR@10, nDCG@10) and, with --generate, answers.

    Answers are produced exactly as `ragkit ask` produces them (same pipeline builder, one
    question at a time), so the reported latency percentiles are `ask`'s.
    """
    from ragkit.evaluation import run_evaluation, write_failures

    if k <= 0:
        fail(f"-k must be positive, got {k}")
    if failures is not None:  # before the run, not after it: a folder given here fails at once
        from ragkit.atomic import checked_file_target

        guard(lambda: checked_file_target(failures))
    reported: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        # always on stderr (also with --json): a long generation run must not look hung
        step = done * 20 // max(total, 1)
        if step != reported.get(phase) or done == total:
            reported[phase] = step
            err.print(f"evaluating, {phase}: {done}/{total}", highlight=False, markup=False)

    def run() -> Any:
        return run_evaluation(
            dataset,
            dataset_format=dataset_format,
            index=index,
            retriever=retriever,
            rerank=rerank,
            k=k,
            generate=generate,
            generate_k=generate_k,
            generator=generator,
            adapter=adapter,
            quantize=quantize,
            strategy=strategy,
            decoding=decoding,
            abstain_below=abstain_below,
            abstain_bias=abstain_bias,
            min_relevance=min_relevance,
            backend=generator_backend,
            max_new_tokens=max_new_tokens,
            embedder=embedder,
            limit=limit,
            progress=progress,
        )

    report = guard(run)
    if failures is not None:
        guard(lambda: write_failures(report, failures))
    if json_output:
        print_json(report.model_dump_json(exclude={"failures"}))
        return
    table = Table(
        title=text(
            f"{report.dataset}: {report.questions} questions ({report.unanswerable} unanswerable), retriever {report.retriever}",
            one_line=True,
        )
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in report.retrieval.items():
        table.add_row(name, f"{value:.3f}" if name != "questions_scored" else str(int(value)))
    for name, value in (report.generation or {}).items():
        if value is None:  # a rate over no questions (e.g. abstention with none unanswerable)
            shown = "n/a"
        elif name in ("answered", "unanswerable"):
            shown = str(int(value))
        else:
            shown = f"{value:.3f}"
        table.add_row(name, shown)
    out.print(table)
    say(f"{len(report.failures)} failure(s); {report.seconds:.1f} s")
