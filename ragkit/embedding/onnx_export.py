"""Export a sentence-transformers model to ONNX (fp32 and dynamic int8), cached like GGUF conversions.

Why ONNX: on a CPU, MiniLM-sized encoders are bound by their Linear layers; ONNX Runtime's
fused BERT kernels plus int8 weights (VNNI dot products) run them about twice as fast as fp32
torch. ``optimum``'s exporter pins an older transformers, so the export is done here with
``torch.onnx.export`` on a small wrapper around the whole sentence-transformers module stack
(transformer, pooling, optional dense layers, normalisation), which keeps the exported graph
equal to what ``SentenceTransformer.encode`` computes, whatever the pooling of the model.

Decisions worth knowing:

* The model is exported with *eager* attention: the SDPA graph is not recognised by ONNX
  Runtime's fusion passes, the eager one fuses into a single ``Attention`` op per layer.
* The fused graph is kept only if it reproduces the torch output (cosine >= 0.9999 on probe
  texts); otherwise the plain export is used. A model the optimizer does not understand still
  works, it is only slower.
* int8 is dynamic quantisation (per-channel int8 weights, activations quantised per call), so
  it needs no calibration data; whether its drift is acceptable is decided by the quality guard
  in :mod:`ragkit.embedding.selection`, not here.
* The folder name carries the model's fingerprint, the variant, :data:`EXPORT_FORMAT` and the
  onnxruntime version, so a changed model, recipe or runtime never reuses a stale export; the
  folder is written atomically under a file lock, like converted generator weights.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ragkit.atomic import atomic_directory
from ragkit.errors import ModelNotFoundError

EXPORT_FORMAT = 1
"""Bump when the export recipe or folder layout changes: old cache entries are then ignored."""

OnnxVariant = Literal["fp32", "int8"]
ONNX_FILE = "model.onnx"
METADATA_FILE = "ragkit-onnx.json"
OPSET = 17
FUSED_MIN_COSINE = 0.9999
# Encoder families whose attention/layer-norm patterns ONNX Runtime's "bert" fusion knows.
_FUSABLE_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert", "mpnet"}
)


class OnnxExportInfo(BaseModel):
    """What an ONNX backend needs to run the export without loading torch weights again."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = EXPORT_FORMAT
    source: str
    source_key: str
    variant: OnnxVariant
    dimension: int
    max_seq_length: int
    do_lower_case: bool = False
    input_names: list[str]
    fused: bool
    onnxruntime: str
    torch: str


def model_fingerprint(location: Path) -> str:
    """Size and mtime of every file of the model folder: cheap, and changes with the weights."""
    parts: list[str] = []
    for path in sorted(p for p in location.rglob("*") if p.is_file()):
        stat = path.stat()
        parts.append(f"{path.relative_to(location).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def export_folder(location: Path, variant: OnnxVariant) -> Path:
    """Where the export of ``location`` (a local sentence-transformers folder) is cached."""
    from ragkit.generation.checkpoints import cache_dir

    key = hashlib.sha256(
        f"{location.resolve()}|{model_fingerprint(location)}|{variant}|{EXPORT_FORMAT}|{_ort_version()}".encode()
    ).hexdigest()[:16]
    return cache_dir() / "embedders" / f"{location.name}-onnx-{variant}-{key}"


def read_export(folder: Path) -> OnnxExportInfo | None:
    """The metadata of a complete export (written last), or None when absent or foreign."""
    try:
        raw = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        info = OnnxExportInfo.model_validate(raw)
    except (OSError, ValueError):
        return None
    if info.format_version != EXPORT_FORMAT or not (folder / ONNX_FILE).is_file():
        return None
    return info


def ensure_export(location: Path, variant: OnnxVariant) -> tuple[Path, OnnxExportInfo]:
    """Return the cached export of ``location`` as ``variant``, exporting on first use."""
    if not (location / "modules.json").is_file() and not (location / "config.json").is_file():
        raise ModelNotFoundError(
            f"cannot export {location} to ONNX: not a sentence-transformers or transformers folder"
        )
    target = export_folder(location, variant)
    info = read_export(target)
    if info is not None:
        return target, info
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        info = read_export(target)
        if info is None:
            try:
                atomic_directory(target, lambda tmp: _write_export(location, variant, tmp))
            except ModelNotFoundError:
                raise
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
                raise ModelNotFoundError(
                    f"cannot export embedder {location} to ONNX ({variant}): {message}"
                ) from exc
            info = read_export(target)
    if info is None:  # pragma: no cover - the writer always leaves metadata behind
        raise ModelNotFoundError(f"ONNX export of {location} is incomplete: {target}")
    return target, info


def _load_for_export(location: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(
            str(location), device="cpu", model_kwargs={"attn_implementation": "eager"}
        )
    except (TypeError, ValueError):  # an architecture without an eager switch
        return SentenceTransformer(str(location), device="cpu")


def _write_export(location: Path, variant: OnnxVariant, dest: Path) -> None:
    import torch

    model = _load_for_export(location).eval()
    tokenizer = model.tokenizer
    first = model[0]
    max_seq_length = int(model.max_seq_length or 512)
    do_lower_case = bool(getattr(first, "do_lower_case", False))
    probe = probe_texts()[:4]
    features = tokenizer(
        probe, padding=True, truncation=True, max_length=max_seq_length, return_tensors="pt"
    )
    input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]
    wrapper = _graph_module(model, input_names).eval()
    raw = dest / "raw.onnx"
    args = tuple(features[n] for n in input_names)
    _export_graph(wrapper, args, input_names, raw)
    with torch.inference_mode():
        reference = wrapper(*args).float().numpy()

    config = getattr(getattr(first, "auto_model", None), "config", None)
    fused = _try_fuse(raw, dest / "fused.onnx", config, input_names, features, reference)
    graph = dest / ("fused.onnx" if fused else "raw.onnx")
    if variant == "int8":
        _quantize_int8(graph, dest / ONNX_FILE)
    else:
        graph.replace(dest / ONNX_FILE)
    for leftover in ("raw.onnx", "fused.onnx"):
        with contextlib.suppress(FileNotFoundError):
            (dest / leftover).unlink()
    tokenizer.save_pretrained(str(dest / "tokenizer"))
    info = OnnxExportInfo(
        source=str(location.resolve()),
        source_key=model_fingerprint(location),
        variant=variant,
        dimension=int(reference.shape[1]),
        max_seq_length=max_seq_length,
        do_lower_case=do_lower_case,
        input_names=input_names,
        fused=fused,
        onnxruntime=_ort_version(),
        torch=str(torch.__version__),
    )
    (dest / METADATA_FILE).write_text(info.model_dump_json(indent=2), encoding="utf-8")


def _graph_module(model: Any, input_names: list[str]) -> Any:
    """A module with positional tensor inputs around a SentenceTransformer (which takes a dict)."""
    import torch

    class SentenceEmbeddingGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            out = self.model(dict(zip(input_names, inputs, strict=True)))
            return out["sentence_embedding"]

    return SentenceEmbeddingGraph()


def _export_graph(wrapper: Any, args: tuple[Any, ...], input_names: list[str], out: Path) -> None:
    import torch

    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        try:  # the TorchScript-based exporter: fast, and its BERT graphs fuse in onnxruntime
            torch.onnx.export(
                wrapper,
                args,
                str(out),
                input_names=input_names,
                output_names=["sentence_embedding"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        except (TypeError, RuntimeError, AttributeError):  # a torch without it
            torch.onnx.export(
                wrapper,
                args,
                str(out),
                input_names=input_names,
                output_names=["sentence_embedding"],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=True,
            )


def _run(path: Path, input_names: list[str], features: Any) -> Any:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {n: np.asarray(features[n], dtype=np.int64) for n in input_names})[0]


def _try_fuse(
    raw: Path,
    out: Path,
    config: Any,
    input_names: list[str],
    features: Any,
    reference: Any,
) -> bool:
    """Fuse attention/layer-norm/GELU with onnxruntime's optimizer if the result is faithful."""
    import numpy as np

    model_type = str(getattr(config, "model_type", ""))
    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    if model_type not in _FUSABLE_TYPES or heads <= 0 or hidden <= 0:
        return False
    try:
        from onnxruntime.transformers import optimizer

        with warnings.catch_warnings(), _quiet_logging():
            warnings.simplefilter("ignore")
            fused = optimizer.optimize_model(
                str(raw), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1
            )
            fused.save_model_to_file(str(out))
        got = _run(out, input_names, features)
    except Exception:
        return False
    cosine = (got * reference).sum(1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return bool(float(cosine.min()) >= FUSED_MIN_COSINE)


def _quantize_int8(graph: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings(), _quiet_logging():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(graph),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # fused contrib ops (Attention, SkipLayerNormalization) defeat shape inference
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


@contextlib.contextmanager
def _quiet_logging() -> Any:
    """onnxruntime's optimizer and quantizer log at INFO/WARNING through the root logger."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def probe_texts() -> list[str]:
    """Chunk-sized English technical prose available on every machine: stdlib docstrings.

    Used to check an export, to guard quantisation quality and to time backends when no
    corpus sample is given. Paragraphs are joined to about 1,000 characters, the default
    chunk size, so timings resemble ingestion.
    """
    import argparse
    import collections
    import csv
    import json as json_module
    import logging
    import pathlib
    import sqlite3
    import subprocess
    import textwrap
    import threading
    import unittest
    import urllib.parse

    modules = [
        argparse,
        collections,
        csv,
        json_module,
        logging,
        pathlib,
        sqlite3,
        subprocess,
        textwrap,
        threading,
        unittest,
        urllib.parse,
        os,
    ]
    paragraphs: list[str] = []
    for module in modules:
        for paragraph in (module.__doc__ or "").split("\n\n"):
            text = " ".join(paragraph.split())
            if len(text) >= 40:
                paragraphs.append(text)
    texts: list[str] = []
    current = ""
    for paragraph in paragraphs:
        current = f"{current} {paragraph}".strip()
        if len(current) >= 900:
            texts.append(current[:1100])
            current = ""
    if current:
        texts.append(current)
    short = [p[:200] for p in paragraphs[:: max(1, len(paragraphs) // 8)]][:8]
    return texts + short
