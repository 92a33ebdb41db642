"""A GGUF file with a peft LoRA adapter merged in, for generators that run on llama.cpp.

Why this exists: the transformers path applies an adapter at load time (peft merges it into the
de-quantised weights, see :mod:`ragkit.generation.adapters`), but llama.cpp reads the GGUF file
directly and knows nothing about peft folders. Merging the adapter into a copy of the GGUF keeps
the adapter's answers on the fast path: llama.cpp runs "base + adapter" at the base's speed, with
no runtime LoRA matmuls and no torch/peft/transformers in the process.

Only the tensors the adapter touches change; they are de-quantised, get ``scale * B @ A`` added and
are stored as ``weight_type`` (f16 by default: re-quantising to the base's 4/5-bit types would
throw away most of the small LoRA update; on the 2-core AVX2 CPU of benchmarks/README.md f16
prefills fastest — 476 tokens/s against 421 for q8_0 and 428 for f32 — and still decodes at 0.93x
llama.cpp's speed on the 4-bit base, while q8_0's rounding error, 0.0055, exceeds the largest
single change the adapter makes, 0.0032). Every other tensor is copied byte for byte in its
original quantisation, and all metadata is kept, so the tokenizer, chat template and
hyper-parameters are those of the base.

The merged file is written once into ragkit's cache, atomically and under a file lock (like
:func:`ragkit.generation.checkpoints.convert_gguf`), and its name carries a key of the base
file's path/size/mtime, the adapter's bytes, ``weight_type`` and :data:`MERGE_FORMAT`, so a new
base, a retrained adapter or a new recipe never reuses a stale copy.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragkit.atomic import atomic_path
from ragkit.errors import RagkitError
from ragkit.generation.adapters import AdapterError, adapter_info, resolve_adapter

MERGE_FORMAT = 1
"""Bump when the merge recipe or the output layout changes: old cache entries are ignored."""

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_KEY = "ragkit.adapter"
"""Metadata key recording which adapter (folder name + sha256 prefix) a merged file holds."""

WEIGHT_TYPES: dict[str, str] = {"q8_0": "Q8_0", "f16": "F16", "f32": "F32"}
DEFAULT_WEIGHT_TYPE = "f16"
"""Chosen by measurement (module docstring): the fastest prompt reading, close to the reference."""
"""``weight_type`` → GGML type name of the merged tensors (types gguf can quantise to in numpy)."""

# peft/transformers module name → llama.cpp tensor name (``blk.N.<name>.weight``). These are the
# names llama.cpp's converters give the Llama/Gemma family's linear layers; the one table keeps
# the mapping in one place, and an adapter tensor absent from it is refused, never skipped.
MODULE_TO_GGUF: dict[str, str] = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}

# Architectures whose GGUF layout is known to match the table above, and whether llama.cpp's
# converter permutes the rows of attn_q/attn_k. For "llama" it reorders each head's rows from
# HF's rotate-half RoPE layout into llama.cpp's interleaved one (transformers undoes this when it
# loads such a GGUF), so a LoRA delta trained on HF weights needs the same row permutation.
# Gemma uses the rotate-half layout natively (no permutation). Both were checked against
# transformers conversions of the packaged GGUFs: Gemma 3 matches row for row, SmolLM2 ("llama")
# only after this permutation. Other architectures are refused rather than guessed.
ARCH_PERMUTES_QK: dict[str, bool] = {
    "llama": True,
    "gemma": False,
    "gemma2": False,
    "gemma3": False,
}

_HEADER_FIELDS = frozenset({"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"})
_LORA_KEY = re.compile(
    r"^base_model\.model\.(?P<module>(?:model\.)?layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\."
    r"(?P<proj>[A-Za-z0-9_]+))\.lora_(?P<ab>[AB])\.weight$"
)


class GGUFMergeError(RagkitError):
    """A base GGUF or a merge setting that cannot produce a merged GGUF."""


@dataclass(frozen=True)
class _Update:
    """One LoRA pair aimed at one GGUF tensor (A: r x in, B: out x r)."""

    module: str
    a: npt.NDArray[np.float32]
    b: npt.NDArray[np.float32]
    scale: float


def merged_gguf(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    *,
    weight_type: str = DEFAULT_WEIGHT_TYPE,
) -> Path:
    """Path of a GGUF = base + LoRA adapter merged; written once into ragkit's cache and reused.

    A cache hit costs a stat of the base and a hash of the adapter's two files (a few MB): the
    adapter folder may be retrained in place, while the base is only replaced, never edited.
    """
    from filelock import FileLock

    from ragkit.generation.checkpoints import cache_dir, file_identity

    type_name = _weight_type_name(weight_type)
    source = Path(base).expanduser()
    if not source.is_file():
        raise GGUFMergeError(f"base GGUF file not found: {source}")
    folder = resolve_adapter(adapter)
    info = adapter_info(folder)
    _check_config(folder, info)
    config_bytes = _read(folder / "adapter_config.json")
    weight_bytes = _read(folder / ADAPTER_WEIGHTS)
    adapter_sha = hashlib.sha256(config_bytes + b"\0" + weight_bytes).hexdigest()
    material = "|".join(
        [
            file_identity(source),
            hashlib.sha256(config_bytes).hexdigest(),
            hashlib.sha256(weight_bytes).hexdigest(),
            weight_type.lower(),
            f"v{MERGE_FORMAT}",
        ]
    )
    key = hashlib.sha256(material.encode()).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", source.stem).strip("-").lower() or "model"
    target = cache_dir() / "merged-gguf" / f"{stem}-{key}.gguf"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not target.is_file():  # another process may have written it while we waited
            updates = _updates(_load_adapter(folder, weight_bytes), info, folder)
            label = f"{folder.name}@{adapter_sha[:12]}"
            with atomic_path(target) as tmp:
                _write_merged(source, tmp, updates, _weight_type(type_name), label)
    return target


def _weight_type_name(weight_type: str) -> str:
    """The gguf name of ``weight_type``, checked without importing ``gguf`` (~0.15 s): a cache
    hit, which every cold ``ragkit ask`` on a merged adapter is, needs no more."""
    name = WEIGHT_TYPES.get(str(weight_type).lower())
    if name is None:
        raise GGUFMergeError(
            f"unknown weight_type {weight_type!r}; choose one of {', '.join(WEIGHT_TYPES)}"
        )
    return name


def _weight_type(name: str) -> Any:
    import gguf

    return gguf.GGMLQuantizationType[name]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AdapterError(f"cannot read {path}: {exc}") from None


def _check_config(folder: Path, info: dict[str, Any]) -> None:
    """Refuse adapter features whose merge is not ``W + scale * B @ A`` on a listed module."""
    if info.get("use_dora"):
        raise AdapterError(f"{folder} is a DoRA adapter; merging DoRA into a GGUF is not supported")
    if info.get("fan_in_fan_out"):
        raise AdapterError(f"{folder} sets fan_in_fan_out (Conv1D weights); not supported here")
    if info.get("modules_to_save"):
        raise AdapterError(
            f"{folder} also trains whole modules ({info['modules_to_save']}); "
            "only pure LoRA adapters can be merged into a GGUF"
        )
    if info.get("lora_bias") or info.get("bias", "none") != "none":
        raise AdapterError(f"{folder} trains biases; only bias-free LoRA adapters can be merged")


def _load_adapter(folder: Path, weight_bytes: bytes) -> dict[str, npt.NDArray[np.float32]]:
    from safetensors.numpy import load

    try:
        loaded = load(weight_bytes)
    except Exception as exc:  # safetensors raises its own SafetensorError
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AdapterError(f"cannot read {folder / ADAPTER_WEIGHTS}: {first}") from None
    return {name: np.asarray(value, dtype=np.float32) for name, value in loaded.items()}


def _pattern_value(patterns: dict[str, Any], module: str, default: Any, what: str) -> Any:
    """peft's per-module override: a pattern key matches the module name's dotted suffix."""
    hits = {
        key: value
        for key, value in patterns.items()
        if re.fullmatch(rf"(?:.*\.)?(?:{key})", module)
    }
    if len({float(v) for v in hits.values()}) > 1:
        raise AdapterError(f"{what} keys {sorted(hits)} all match {module} with different values")
    return next(iter(hits.values())) if hits else default


def _updates(
    tensors: dict[str, npt.NDArray[np.float32]], info: dict[str, Any], folder: Path
) -> dict[str, _Update]:
    """GGUF tensor name → its LoRA update; every adapter tensor must land somewhere."""
    pairs: dict[str, dict[str, npt.NDArray[np.float32]]] = {}
    modules: dict[str, str] = {}
    for name, value in tensors.items():
        match = _LORA_KEY.match(name)
        proj = match["proj"] if match else None
        if match is None or proj not in MODULE_TO_GGUF:
            raise AdapterError(
                f"adapter tensor {name!r} in {folder} maps to no GGUF tensor (known modules: "
                f"{', '.join(MODULE_TO_GGUF)})"
            )
        gguf_name = f"blk.{int(match['layer'])}.{MODULE_TO_GGUF[str(proj)]}.weight"
        pairs.setdefault(gguf_name, {})[match["ab"]] = value
        modules[gguf_name] = match["module"]
    alpha = float(info.get("lora_alpha", 8))
    rank = int(info.get("r", 8))
    rank_pattern = info.get("rank_pattern") or {}
    alpha_pattern = info.get("alpha_pattern") or {}
    updates: dict[str, _Update] = {}
    for gguf_name, pair in pairs.items():
        module = modules[gguf_name]
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"adapter {folder} has lora_A or lora_B of {module} but not both")
        a, b = pair["A"], pair["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise AdapterError(
                f"adapter {folder}: {module} has lora_A {a.shape} and lora_B {b.shape}, "
                "not (r, in) and (out, r)"
            )
        r = int(_pattern_value(rank_pattern, module, rank, "rank_pattern"))
        if r != a.shape[0]:
            raise AdapterError(f"adapter {folder}: {module} has rank {a.shape[0]}, config says {r}")
        a_alpha = float(_pattern_value(alpha_pattern, module, alpha, "alpha_pattern"))
        scale = a_alpha / math.sqrt(r) if info.get("use_rslora") else a_alpha / r
        updates[gguf_name] = _Update(module=module, a=a, b=b, scale=scale)
    if not updates:
        raise AdapterError(f"adapter {folder} holds no LoRA tensors")
    return updates


def _permute_qk(delta: npt.NDArray[np.float32], n_head: int) -> npt.NDArray[np.float32]:
    """Rows of an HF q/k projection in llama.cpp's RoPE order (per head: pairs interleaved).

    HF keeps each head's two rotary halves apart (rows 0..d/2-1, then d/2..d-1); llama.cpp's
    "llama" layout interleaves them (row 2i from the first half, 2i+1 from the second).
    """
    out, cols = delta.shape
    if out % (2 * n_head):
        raise AdapterError(f"cannot split {out} rows into {n_head} rotary heads")
    half = out // n_head // 2
    return delta.reshape(n_head, 2, half, cols).swapaxes(1, 2).reshape(out, cols)


def _field_value(field: Any) -> tuple[Any, Any, Any]:
    """(value, type, sub_type) of a reader field, raw enough to write back the same bytes."""
    import gguf

    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]), vtype, None
    if vtype != gguf.GGUFValueType.ARRAY:
        return field.parts[-1].tolist()[0], vtype, None
    if len(field.types) != 2:
        raise GGUFMergeError(f"metadata {field.name!r} is a nested array; cannot copy it")
    sub = field.types[1]
    if not len(field.data):
        raise GGUFMergeError(f"metadata {field.name!r} is an empty array; gguf cannot write it")
    if sub == gguf.GGUFValueType.STRING:
        return [bytes(field.parts[i]) for i in field.data], vtype, sub
    values = np.concatenate([field.parts[i] for i in field.data]).tolist()
    return values, vtype, sub


def _copied_fields(reader: Any) -> Iterator[tuple[str, tuple[Any, Any, Any]]]:
    for name, field in reader.fields.items():
        if name in _HEADER_FIELDS or name in ("general.architecture", ADAPTER_KEY):
            continue
        yield name, _field_value(field)


def _int_field(reader: Any, key: str) -> int | None:
    field = reader.fields.get(key)
    return None if field is None else int(field.parts[-1].tolist()[0])


def _merged_tensor(
    tensor: Any, update: _Update, reader: Any, arch: str, qtype: Any
) -> npt.NDArray[Any]:
    """``tensor`` de-quantised, plus the LoRA delta, re-quantised to ``qtype``."""
    import gguf
    from gguf.quants import dequantize, quantize

    try:
        weight = np.array(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    except NotImplementedError:
        raise GGUFMergeError(
            f"cannot de-quantise {tensor.name} ({tensor.tensor_type.name}) to merge the adapter"
        ) from None
    # numpy's row-major view of a GGUF tensor with dims [in, out] is (out, in): torch's layout
    delta = (update.b @ update.a) * np.float32(update.scale)
    if weight.shape != delta.shape:
        raise AdapterError(
            f"adapter module {update.module} has shape {delta.shape} (out, in) but GGUF tensor "
            f"{tensor.name} has {weight.shape}: the adapter was trained for another model"
        )
    if ARCH_PERMUTES_QK[arch] and (".attn_q." in tensor.name or ".attn_k." in tensor.name):
        n_head = _int_field(reader, f"{arch}.attention.head_count")
        if n_head is None:
            raise GGUFMergeError(f"base GGUF lacks {arch}.attention.head_count")
        if ".attn_k." in tensor.name:
            n_head = _int_field(reader, f"{arch}.attention.head_count_kv") or n_head
        delta = _permute_qk(delta, n_head)
    merged = weight + delta
    if qtype == gguf.GGMLQuantizationType.Q8_0 and merged.shape[-1] % 32:
        raise GGUFMergeError(
            f"{tensor.name} rows hold {merged.shape[-1]} values, not a multiple of 32 "
            "(q8_0 blocks); use weight_type='f16'"
        )
    return np.ascontiguousarray(quantize(merged, qtype))


def _write_merged(
    source: Path,
    dest: Path,
    updates: dict[str, _Update],
    qtype: Any,
    label: str,
) -> None:
    import gguf

    try:
        reader = gguf.GGUFReader(source)
    except (OSError, ValueError, KeyError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GGUFMergeError(f"cannot read base GGUF {source}: {first}") from None
    arch_field = reader.fields.get("general.architecture")
    arch = bytes(arch_field.parts[-1]).decode() if arch_field is not None else ""
    if arch not in ARCH_PERMUTES_QK:
        raise AdapterError(
            f"merging LoRA adapters into {arch or 'unknown'!r} GGUFs is not supported "
            f"(known: {', '.join(ARCH_PERMUTES_QK)})"
        )
    names = {tensor.name for tensor in reader.tensors}
    missing = sorted(set(updates) - names)
    if missing:
        raise AdapterError(
            f"adapter tensors target {missing[0]} ({updates[missing[0]].module}), absent from "
            f"{source.name}: the adapter was trained for another model"
        )
    writer = gguf.GGUFWriter(dest, arch)
    try:
        for key, (value, vtype, sub) in _copied_fields(reader):
            if key == "general.alignment":
                writer.add_custom_alignment(int(value))
            else:
                writer.add_key_value(key, value, vtype, sub_type=sub)
        writer.add_key_value(ADAPTER_KEY, label, gguf.GGUFValueType.STRING)
        for tensor in reader.tensors:
            update = updates.get(tensor.name)
            if update is None:
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
            else:
                merged = _merged_tensor(tensor, update, reader, arch, qtype)
                writer.add_tensor(tensor.name, merged, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
