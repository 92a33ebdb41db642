"""Saving and loading pipelines as YAML: components by registered name and their own config.

Only registered names can be built from a file: a pipeline file never names an import path, and
nothing is unpickled. Components register themselves where they are defined
(:func:`~ragkit.pipeline.component.component`); the ``prompts`` package, which may not import
ragkit, lists its savable steps in ``prompts.COMPONENTS`` and they are registered here. How
shared, non-serialisable resources (the generator, the index) are re-attached at load time is
described in :mod:`ragkit.pipeline.component`.

A file (version 2; version 1 files, without ``resources``, still load)::

    format: ragkit-pipeline
    version: 2
    name: rag
    inputs: {question: str}
    resources:                # optional: shared resources, by kind (see register_resource)
      generator: {model: ..., device: ...}
    steps:
      - type: dense_retriever
        params: {index: ..., k: 4}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import prompts
from ragkit.atomic import atomic_write_text
from ragkit.pipeline.component import (
    Factory,
    LoadContext,
    build_component,
    component_spec,
    plain,
    register_class,
    registered_names,
)
from ragkit.pipeline.component import (
    register_component as register_component,
)
from ragkit.pipeline.pipeline import Pipeline
from ragkit.pipeline.step import PipelineError

PIPELINE_FORMAT = "ragkit-pipeline"
PIPELINE_VERSION = 2
READABLE_VERSIONS = (1, 2)

__all__ = [
    "PIPELINE_FORMAT",
    "PIPELINE_VERSION",
    "Factory",
    "load_pipeline",
    "pipeline_from_dict",
    "pipeline_to_dict",
    "register_component",
    "register_resource",
    "registered_components",
    "save_pipeline",
]

for _cls in prompts.COMPONENTS:
    register_class(_cls)


@dataclass(frozen=True)
class ResourceKind:
    """How a shared resource is written to a pipeline file and rebuilt from it."""

    dump: Callable[[Any], dict[str, Any]]
    build: Callable[[dict[str, Any]], Any]


_RESOURCES: dict[str, ResourceKind] = {}
_INPUT_TYPES: dict[Any, str] = {str: "str", int: "int", float: "float", bool: "bool"}
"""Pipeline inputs are saved by these type names; any other annotation is saved as ``any``."""
_INPUT_ANNOTATIONS: dict[str, Any] = {name: t for t, name in _INPUT_TYPES.items()}


def register_resource(
    name: str, dump: Callable[[Any], dict[str, Any]], build: Callable[[dict[str, Any]], Any]
) -> None:
    """Let pipeline files carry the shared resource ``name``: ``dump(obj)`` → config → ``build``."""
    _RESOURCES[name] = ResourceKind(dump=dump, build=build)


def _dump_generator(generator: Any) -> dict[str, Any]:
    config = getattr(generator, "config", None)
    if config is None or not callable(getattr(config, "model_dump", None)):
        raise PipelineError(
            f"the generator {type(generator).__name__} cannot be saved: it has no config"
        )
    data: dict[str, Any] = config.model_dump(mode="json")
    return data


def _build_generator(config: dict[str, Any]) -> Any:
    from ragkit.generation.backends import generator_from_config

    return generator_from_config(config)


register_resource("generator", _dump_generator, _build_generator)


def registered_components() -> list[str]:
    return registered_names()


def pipeline_to_dict(
    pipeline: Pipeline, resources: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The file form of ``pipeline``; ``resources`` (live objects by kind) are dumped too."""
    data: dict[str, Any] = {
        "format": PIPELINE_FORMAT,
        "version": PIPELINE_VERSION,
        "name": pipeline.name,
        "inputs": {
            name: _INPUT_TYPES.get(port.annotation, "any")
            for name, port in pipeline.inputs.items()
            if port.required
        },
    }
    if resources:
        dumped: dict[str, Any] = {}
        for name, value in resources.items():
            kind = _RESOURCES.get(name)
            if kind is None:
                raise PipelineError(
                    f"resource {name!r} cannot be saved (known: {', '.join(sorted(_RESOURCES))})"
                )
            dumped[name] = plain(kind.dump(value), f"resources.{name}")
        data["resources"] = dumped
    data["steps"] = [component_spec(step) for step in pipeline.steps]
    return data


def save_pipeline(
    pipeline: Pipeline, path: str | Path, resources: Mapping[str, Any] | None = None
) -> None:
    """Write ``pipeline`` as YAML; ``resources`` such as ``{"generator": gen}`` are saved too,
    so that steps that share them (strategies, budgets) can be rebuilt around them."""
    data = pipeline_to_dict(pipeline, resources)
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def pipeline_from_dict(
    data: Any, context: LoadContext | Mapping[str, Any] | None = None
) -> Pipeline:
    """Build a pipeline from its file form; ``context`` holds live resources to re-attach."""
    if not isinstance(data, dict) or data.get("format") != PIPELINE_FORMAT:
        raise PipelineError(f"not a ragkit pipeline file (format must be {PIPELINE_FORMAT!r})")
    if data.get("version") not in READABLE_VERSIONS:
        raise PipelineError(
            f"pipeline file version {data.get('version')!r} is not supported (expected one of "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    unknown = set(data) - {"format", "version", "name", "inputs", "resources", "steps"}
    if unknown:
        raise PipelineError(f"unknown key in pipeline file: {sorted(unknown)[0]!r}")
    ctx = context if isinstance(context, LoadContext) else LoadContext(context)
    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise PipelineError("'resources' must be a mapping")
    for name, config in resources.items():
        if name in ctx:  # a live resource from the caller wins over the file's
            continue
        kind = _RESOURCES.get(name)
        if kind is None:
            raise PipelineError(
                f"unknown resource {name!r} (known: {', '.join(sorted(_RESOURCES))})"
            )
        if not isinstance(config, dict):
            raise PipelineError(f"resource {name!r} must be a mapping")
        try:
            ctx.provide(name, kind.build(dict(config)))
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"resource {name!r}: {exc}") from None
    steps = [
        build_component(spec, ctx, f"step {i}") for i, spec in enumerate(data.get("steps") or [])
    ]
    saved_inputs = data.get("inputs") or {}
    if not isinstance(saved_inputs, dict):
        raise PipelineError("'inputs' must be a mapping of name to type")
    inputs = {k: _INPUT_ANNOTATIONS.get(str(v), Any) for k, v in saved_inputs.items()} or None
    return Pipeline(steps, inputs=inputs, name=str(data.get("name", "pipeline")))


def load_pipeline(
    path: str | Path, context: LoadContext | Mapping[str, Any] | None = None
) -> Pipeline:
    """Load a pipeline file; ``context`` (e.g. ``{"generator": gen}``) re-attaches live objects."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"pipeline file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} is not valid YAML: {exc}") from None
    return pipeline_from_dict(data, context)
