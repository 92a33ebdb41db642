"""Composable pipelines: typed steps, checked wiring, batching, streaming, traces, YAML."""

from ragkit.pipeline.component import (
    Component,
    LoadContext,
    TraceSlot,
    component,
    component_class,
    component_spec,
)
from ragkit.pipeline.pipeline import Parallel, Pipeline, PipelineResult, PipelineStream
from ragkit.pipeline.registry import (
    load_pipeline,
    register_component,
    register_resource,
    registered_components,
    save_pipeline,
)
from ragkit.pipeline.step import PipelineError, Step, StepSignature, StepStream, signature_of
from ragkit.pipeline.trace import StepTrace, Trace

__all__ = [
    "Component",
    "LoadContext",
    "Parallel",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "PipelineStream",
    "Step",
    "StepSignature",
    "StepStream",
    "StepTrace",
    "Trace",
    "TraceSlot",
    "component",
    "component_class",
    "component_spec",
    "load_pipeline",
    "register_component",
    "register_resource",
    "registered_components",
    "save_pipeline",
    "signature_of",
]
