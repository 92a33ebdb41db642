"""Device and dtype policy, with CUDA availability mocked (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

from ragkit.generation import DeviceError, Generator, select_device, select_dtype


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Pretend one GPU is visible; tests set ``state['bf16']`` / ``state['capability']``."""
    state: dict[str, object] = {"bf16": True, "capability": (8, 0)}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: state["bf16"])
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: state["capability"])
    return state


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cpu_without_gpu_in_fp32(no_cuda: None) -> None:
    assert select_device(None) == "cpu"
    assert select_device("auto") == "cpu"
    assert select_dtype("cpu") == torch.float32


def test_gpu_is_preferred_in_bf16(fake_cuda: dict[str, object]) -> None:
    assert select_device(None) == "cuda"
    assert select_dtype("cuda") == torch.bfloat16


def test_fp16_where_bf16_is_unsupported(fake_cuda: dict[str, object]) -> None:
    fake_cuda["bf16"] = False
    assert select_dtype("cuda") == torch.float16
    fake_cuda["capability"] = (7, 5)  # e.g. a T4
    assert select_dtype("cuda:0") == torch.float16
    fake_cuda["capability"] = (9, 0)
    assert select_dtype("cuda:0") == torch.bfloat16


def test_explicit_choices_override_the_policy(fake_cuda: dict[str, object]) -> None:
    assert select_device("cpu") == "cpu"
    assert select_device("cuda:0") == "cuda:0"
    assert select_dtype("cuda", "float32") == torch.float32
    assert select_dtype("cpu", "bf16") == torch.bfloat16
    assert select_dtype("cpu", "half") == torch.float16


def test_unavailable_or_unknown_choices_fail_in_one_line(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU") as excinfo:
        select_device("cuda")
    assert "\n" not in str(excinfo.value)
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu-ish")
    with pytest.raises(DeviceError, match="unknown dtype"):
        select_dtype("cpu", "int3")


def test_gpu_index_out_of_range(fake_cuda: dict[str, object]) -> None:
    with pytest.raises(DeviceError, match="only 1 GPU"):
        select_device("cuda:3")


def test_generator_resolves_device_and_dtype_without_loading(
    fake_cuda: dict[str, object],
) -> None:
    gen = Generator("some/model")  # nothing is resolved or loaded by these properties
    assert (gen.device, gen.dtype, gen.batch_size) == ("cuda", torch.bfloat16, 64)
    assert not gen.is_loaded
    gen_cpu = Generator("some/model", device="cpu", batch_size=3)
    assert (gen_cpu.device, gen_cpu.dtype, gen_cpu.batch_size) == ("cpu", torch.float32, 3)
    assert Generator("some/model", dtype="float16").dtype == torch.float16
