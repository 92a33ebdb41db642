"""merged_gguf on a tiny hand-made GGUF + peft-style adapter (no packaged model needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("safetensors")
pytest.importorskip("filelock")

from gguf.quants import dequantize, quantize  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from ragkit.errors import RagkitError  # noqa: E402
from ragkit.generation.adapters import AdapterError  # noqa: E402
from ragkit.generation.gguf_merge import (  # noqa: E402
    ADAPTER_KEY,
    GGUFMergeError,
    merged_gguf,
)

HIDDEN, FFN, N_HEAD, N_KV, RANK, ALPHA = 64, 96, 4, 2, 4, 8
PREFIX = "base_model.model.model.layers.0"
Q8 = gguf.GGMLQuantizationType.Q8_0


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path / "cache"))


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    head = HIDDEN // N_HEAD
    return {
        "token_embd.weight": rng.normal(size=(32, HIDDEN)).astype(np.float32),
        "blk.0.attn_q.weight": rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32),
        "blk.0.attn_k.weight": rng.normal(size=(N_KV * head, HIDDEN)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.normal(size=(HIDDEN,)).astype(np.float32),
        "blk.0.ffn_down.weight": rng.normal(size=(HIDDEN, FFN)).astype(np.float32),
    }


def _write_base(path: Path, arch: str = "llama", q8: tuple[str, ...] = ()) -> Path:
    """A tiny GGUF; numpy arrays are (out, in) like torch, GGUF dims come out reversed."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_uint32(f"{arch}.attention.head_count", N_HEAD)
    writer.add_uint32(f"{arch}.attention.head_count_kv", N_KV)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_string("general.name", "tiny")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.5, -2.5])
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    for name, value in _weights().items():
        if name in q8:
            writer.add_tensor(name, quantize(value, Q8), raw_dtype=Q8)
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _lora(seed: int = 1, modules: tuple[str, ...] = ("q_proj", "k_proj", "down_proj")) -> dict:
    rng = np.random.default_rng(seed)
    head = HIDDEN // N_HEAD
    shapes = {
        "q_proj": ("self_attn", HIDDEN, HIDDEN),
        "k_proj": ("self_attn", HIDDEN, N_KV * head),
        "down_proj": ("mlp", FFN, HIDDEN),
    }
    tensors = {}
    for module in modules:
        parent, n_in, n_out = shapes[module]
        key = f"{PREFIX}.{parent}.{module}"
        tensors[f"{key}.lora_A.weight"] = rng.normal(size=(RANK, n_in)).astype(np.float32)
        tensors[f"{key}.lora_B.weight"] = rng.normal(size=(n_out, RANK)).astype(np.float32)
    return tensors


def _write_adapter(folder: Path, tensors: dict | None = None, **config: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    info = {
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": ALPHA,
        "target_modules": ["q_proj", "k_proj", "down_proj"],
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "bias": "none",
        "rank_pattern": {},
        "alpha_pattern": {},
    }
    info.update(config)
    (folder / "adapter_config.json").write_text(json.dumps(info), encoding="utf-8")
    save_file(_lora() if tensors is None else tensors, str(folder / "adapter_model.safetensors"))
    return folder


def _delta(tensors: dict, module: str, parent: str, scale: float) -> np.ndarray:
    key = f"{PREFIX}.{parent}.{module}"
    return scale * tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]


def _to_llama_rows(delta: np.ndarray, n_head: int) -> np.ndarray:
    """Reference for llama.cpp's q/k row order, written out head by head (not via reshape)."""
    half = delta.shape[0] // n_head // 2
    rows = []
    for h in range(n_head):
        block = delta[h * 2 * half : (h + 1) * 2 * half]
        for i in range(half):
            rows += [block[i], block[half + i]]
    return np.stack(rows)


def _tensors(path: Path) -> dict[str, Any]:
    return {t.name: t for t in gguf.GGUFReader(path).tensors}


def _dense(tensor: Any) -> np.ndarray:
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)


@pytest.mark.parametrize(("weight_type", "tol"), [("q8_0", 0.01), ("f16", 0.002), ("f32", 1e-6)])
def test_merged_values_are_w_plus_scaled_ba(tmp_path: Path, weight_type: str, tol: float) -> None:
    base = _write_base(tmp_path / "base.gguf", arch="gemma3", q8=("blk.0.ffn_down.weight",))
    _write_adapter(tmp_path / "ad")
    out = merged_gguf(base, tmp_path / "ad", weight_type=weight_type)
    merged, before, lora = _tensors(out), _tensors(base), _lora()
    scale = ALPHA / RANK
    for name, module, parent in [
        ("blk.0.attn_q.weight", "q_proj", "self_attn"),
        ("blk.0.attn_k.weight", "k_proj", "self_attn"),
        ("blk.0.ffn_down.weight", "down_proj", "mlp"),
    ]:
        expected = _dense(before[name]) + _delta(lora, module, parent, scale)
        got = _dense(merged[name])
        assert merged[name].tensor_type.name == weight_type.upper()
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() < tol * np.abs(expected).max()


def test_llama_q_and_k_rows_follow_llama_cpp_rope_order(tmp_path: Path) -> None:
    base = _write_base(tmp_path / "base.gguf", arch="llama")
    _write_adapter(tmp_path / "ad")
    out = merged_gguf(base, tmp_path / "ad", weight_type="f32")
    merged, before, lora = _tensors(out), _tensors(base), _lora()
    scale = ALPHA / RANK
    q = _to_llama_rows(_delta(lora, "q_proj", "self_attn", scale), N_HEAD)
    k = _to_llama_rows(_delta(lora, "k_proj", "self_attn", scale), N_KV)
    down = _delta(lora, "down_proj", "mlp", scale)  # not rotary: never permuted
    for name, delta in [
        ("blk.0.attn_q.weight", q),
        ("blk.0.attn_k.weight", k),
        ("blk.0.ffn_down.weight", down),
    ]:
        np.testing.assert_allclose(
            _dense(merged[name]), _dense(before[name]) + delta, rtol=1e-5, atol=1e-5
        )


def test_untouched_tensors_and_metadata_are_copied(tmp_path: Path) -> None:
    base = _write_base(tmp_path / "base.gguf", q8=("token_embd.weight",))
    _write_adapter(tmp_path / "ad")
    out = merged_gguf(base, tmp_path / "ad")
    src, dst = gguf.GGUFReader(base), gguf.GGUFReader(out)
    assert [t.name for t in dst.tensors] == [t.name for t in src.tensors]
    merged = {t.name: t for t in dst.tensors}
    for name in ("token_embd.weight", "blk.0.attn_norm.weight"):
        before = next(t for t in src.tensors if t.name == name)
        assert merged[name].tensor_type == before.tensor_type
        assert merged[name].data.tobytes() == before.data.tobytes()
    assert set(dst.fields) == set(src.fields) | {ADAPTER_KEY}
    for key, field in src.fields.items():
        if not key.startswith("GGUF."):
            assert dst.fields[key].types == field.types
            assert dst.fields[key].contents() == field.contents(), key
    assert dst.fields[ADAPTER_KEY].contents().startswith("ad@")


def test_cache_is_reused_and_keyed_on_the_adapter(tmp_path: Path) -> None:
    base = _write_base(tmp_path / "base.gguf")
    _write_adapter(tmp_path / "ad")
    first = merged_gguf(base, tmp_path / "ad")
    assert first.parent == tmp_path / "cache" / "merged-gguf"
    assert first.name.startswith("base-")
    stamp = first.stat().st_mtime_ns
    assert merged_gguf(base, tmp_path / "ad") == first
    assert first.stat().st_mtime_ns == stamp
    assert merged_gguf(base, tmp_path / "ad", weight_type="q8_0") != first
    _write_adapter(tmp_path / "ad", tensors=_lora(seed=7))
    assert merged_gguf(base, tmp_path / "ad") != first
    _write_adapter(tmp_path / "ad", lora_alpha=16)
    assert merged_gguf(base, tmp_path / "ad") != first


def test_rank_and_alpha_patterns_and_rslora(tmp_path: Path) -> None:
    base = _write_base(tmp_path / "base.gguf", arch="gemma3")
    _write_adapter(tmp_path / "ad", alpha_pattern={"down_proj": 2}, use_rslora=True)
    out = merged_gguf(base, tmp_path / "ad", weight_type="f32")
    merged, before, lora = _tensors(out), _tensors(base), _lora()
    name = "blk.0.ffn_down.weight"
    expected = _dense(before[name]) + _delta(lora, "down_proj", "mlp", 2 / np.sqrt(RANK))
    np.testing.assert_allclose(_dense(merged[name]), expected, rtol=1e-5, atol=1e-5)
    name = "blk.0.attn_q.weight"
    expected = _dense(before[name]) + _delta(lora, "q_proj", "self_attn", ALPHA / np.sqrt(RANK))
    np.testing.assert_allclose(_dense(merged[name]), expected, rtol=1e-5, atol=1e-5)
    _write_adapter(tmp_path / "bad", rank_pattern={"q_proj": 8})
    with pytest.raises(AdapterError, match="rank 4, config says 8"):
        merged_gguf(base, tmp_path / "bad")


def _one_line(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("config", "tensors", "match"),
    [
        ({"use_dora": True}, None, "DoRA"),
        ({"fan_in_fan_out": True}, None, "fan_in_fan_out"),
        ({"modules_to_save": ["lm_head"]}, None, "whole modules"),
        ({"peft_type": "IA3"}, None, "only LoRA"),
        ({"bias": "lora_only"}, None, "biases"),
        (
            {},
            {**_lora(), f"{PREFIX}.self_attn.rotary.lora_A.weight": np.zeros((RANK, HIDDEN))},
            "maps to no GGUF tensor",
        ),
        ({}, {f"{PREFIX}.self_attn.q_proj.lora_A.weight": np.zeros((RANK, HIDDEN))}, "not both"),
        (
            {},
            {
                "base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight": np.zeros(
                    (RANK, HIDDEN), np.float32
                ),
                "base_model.model.model.layers.5.self_attn.q_proj.lora_B.weight": np.zeros(
                    (HIDDEN, RANK), np.float32
                ),
            },
            "absent from",
        ),
        (
            {},
            {
                f"{PREFIX}.self_attn.q_proj.lora_A.weight": np.zeros(
                    (RANK, 2 * HIDDEN), np.float32
                ),
                f"{PREFIX}.self_attn.q_proj.lora_B.weight": np.zeros((HIDDEN, RANK), np.float32),
            },
            "another model",
        ),
    ],
)
def test_unsupported_adapters_are_refused(
    tmp_path: Path, config: dict, tensors: dict | None, match: str
) -> None:
    base = _write_base(tmp_path / "base.gguf")
    if tensors is not None:
        tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    _write_adapter(tmp_path / "ad", tensors=tensors, **config)
    with pytest.raises(AdapterError, match=match) as excinfo:
        merged_gguf(base, tmp_path / "ad")
    _one_line(excinfo)
    assert not list((tmp_path / "cache").rglob("*.gguf"))


def test_bad_base_or_weight_type_is_a_one_line_error(tmp_path: Path) -> None:
    _write_adapter(tmp_path / "ad")
    with pytest.raises(GGUFMergeError, match="not found") as excinfo:
        merged_gguf(tmp_path / "missing.gguf", tmp_path / "ad")
    _one_line(excinfo)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(GGUFMergeError, match="cannot read base GGUF") as excinfo:
        merged_gguf(junk, tmp_path / "ad")
    _one_line(excinfo)
    base = _write_base(tmp_path / "base.gguf")
    with pytest.raises(GGUFMergeError, match="unknown weight_type") as excinfo:
        merged_gguf(base, tmp_path / "ad", weight_type="q4_k")
    _one_line(excinfo)
    other = _write_base(tmp_path / "phi.gguf", arch="phi3")
    with pytest.raises(AdapterError, match="not supported") as excinfo:
        merged_gguf(other, tmp_path / "ad")
    _one_line(excinfo)
    with pytest.raises(AdapterError):
        merged_gguf(base, tmp_path / "no-such-adapter")
    assert issubclass(GGUFMergeError, RagkitError)
