"""Saving and loading pipelines as YAML: components by registered name and init parameters.

Only names registered here (or by the user through :func:`register_component`) can be built
from a file: a pipeline file never names an import path, and nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ragkit.atomic import atomic_write_text
from ragkit.pipeline.pipeline import Pipeline
from ragkit.pipeline.step import PipelineError, step_name

PIPELINE_FORMAT = "ragkit-pipeline"
PIPELINE_VERSION = 1

Factory = Callable[[dict[str, Any]], Any]
_FACTORIES: dict[str, Factory] = {}


def register_component(name: str, factory: Factory) -> None:
    """Make ``name`` loadable from YAML; ``factory(params)`` builds the step."""
    _FACTORIES[name] = factory


def registered_components() -> list[str]:
    _register_builtins()
    return sorted(_FACTORIES)


def _register_builtins() -> None:
    if "dense_retriever" in _FACTORIES:
        return
    from ragkit.generation.backends import generator_from_config
    from ragkit.rag.citations import CitationStep
    from ragkit.rag.generate_step import GenerateStep
    from ragkit.rag.prompt_builder import PromptBuilder
    from ragkit.retrieval import (
        BM25Retriever,
        DenseRetriever,
        HybridRetriever,
        MMRReranker,
        RankFusion,
    )

    def generator(params: dict[str, Any]) -> GenerateStep:
        params = dict(params)
        options = params.pop("options", None)
        # the "backend" key (transformers, openai, vllm) picks the generator backend
        return GenerateStep(generator_from_config({**params, "options": {}}), options=options)

    def prompt_builder(params: dict[str, Any]) -> PromptBuilder:
        from prompts import ChatTemplate, PromptTemplate

        template = params.get("template", "grounded_qa")
        if isinstance(template, dict):
            template = (
                ChatTemplate.model_validate(template)
                if template.get("kind") == "chat"
                else PromptTemplate.model_validate(template)
            )
        return PromptBuilder(template, max_passage_chars=params.get("max_passage_chars"))

    _FACTORIES.setdefault(
        "dense_retriever", lambda p: DenseRetriever(p["index"], k=int(p.get("k", 5)))
    )
    _FACTORIES.setdefault(
        "bm25_retriever", lambda p: BM25Retriever(p["index"], k=int(p.get("k", 5)))
    )
    _FACTORIES.setdefault(
        "hybrid_retriever",
        lambda p: HybridRetriever(
            p["index"],
            k=int(p.get("k", 5)),
            mode=p.get("mode", "rrf"),
            rrf_k=int(p.get("rrf_k", 60)),
            weights=tuple(p.get("weights", (1.0, 1.0))),
            candidates=p.get("candidates"),
        ),
    )
    _FACTORIES.setdefault(
        "rank_fusion", lambda p: RankFusion(k=int(p.get("k", 5)), rrf_k=int(p.get("rrf_k", 60)))
    )
    _FACTORIES.setdefault(
        "mmr",
        lambda p: MMRReranker(
            p["index"], k=int(p.get("k", 5)), diversity=float(p.get("diversity", 0.3))
        ),
    )
    _FACTORIES.setdefault("prompt_builder", prompt_builder)
    _FACTORIES.setdefault("generator", generator)
    _FACTORIES.setdefault("citations", lambda p: CitationStep())


def bind_budgets(steps: list[Any]) -> None:
    """Give prompt builders the pipeline's generator, so prompts are fitted to its context."""
    from ragkit.rag.generate_step import GenerateStep
    from ragkit.rag.prompt_builder import PromptBuilder

    generators = [s.generator for s in steps if isinstance(s, GenerateStep)]
    for step in steps:
        if isinstance(step, PromptBuilder) and step.budget is None and generators:
            step.budget = generators[0]


def pipeline_to_dict(pipeline: Pipeline) -> dict[str, Any]:
    steps = []
    for step in pipeline.steps:
        name = getattr(step, "component_name", None)
        to_config = getattr(step, "to_config", None)
        if name is None or to_config is None:
            raise PipelineError(
                f"step {step_name(step)!r} cannot be saved: it has no component_name/to_config()"
            )
        steps.append({"type": name, "params": to_config()})
    return {
        "format": PIPELINE_FORMAT,
        "version": PIPELINE_VERSION,
        "name": pipeline.name,
        "inputs": {k: "str" for k in pipeline.inputs},
        "steps": steps,
    }


def save_pipeline(pipeline: Pipeline, path: str | Path) -> None:
    atomic_write_text(
        path, yaml.safe_dump(pipeline_to_dict(pipeline), sort_keys=False, allow_unicode=True)
    )


def pipeline_from_dict(data: Any) -> Pipeline:
    _register_builtins()
    if not isinstance(data, dict) or data.get("format") != PIPELINE_FORMAT:
        raise PipelineError(f"not a ragkit pipeline file (format must be {PIPELINE_FORMAT!r})")
    if data.get("version") != PIPELINE_VERSION:
        raise PipelineError(
            f"pipeline file version {data.get('version')!r} is not supported (expected {PIPELINE_VERSION})"
        )
    unknown = set(data) - {"format", "version", "name", "inputs", "steps"}
    if unknown:
        raise PipelineError(f"unknown key in pipeline file: {sorted(unknown)[0]!r}")
    steps = []
    for i, spec in enumerate(data.get("steps") or []):
        if not isinstance(spec, dict) or "type" not in spec:
            raise PipelineError(f"step {i} must be a mapping with a 'type'")
        factory = _FACTORIES.get(spec["type"])
        if factory is None:
            raise PipelineError(
                f"step {i}: unknown component type {spec['type']!r} (registered: {', '.join(sorted(_FACTORIES))})"
            )
        steps.append(factory(dict(spec.get("params") or {})))
    bind_budgets(steps)
    inputs = {k: str for k in (data.get("inputs") or {})} or None
    return Pipeline(steps, inputs=inputs, name=str(data.get("name", "pipeline")))


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"pipeline file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} is not valid YAML: {exc}") from None
    return pipeline_from_dict(data)
