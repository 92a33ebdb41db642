"""Adapter resolution errors: named before any model loads, in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragkit.generation import PACKAGED_ADAPTERS, AdapterError, Generator, resolve_adapter
from ragkit.generation.adapters import adapter_info


def test_an_unknown_adapter_is_refused_when_the_generator_is_built(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"neither a packaged adapter .*grounded-qa"):
        Generator(adapter="no-such-adapter")
    with pytest.raises(AdapterError, match=r"adapter_config\.json"):
        Generator(adapter=str(tmp_path))


def test_only_lora_adapters_are_accepted(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(AdapterError, match="only LoRA"):
        adapter_info(resolve_adapter(tmp_path))


def test_the_adapter_is_part_of_the_saved_generator_config(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    generator = Generator("some/model", adapter=tmp_path)
    config = generator.config.model_dump()
    assert config["adapter"] == str(tmp_path)
    assert Generator.from_config(config).config.adapter == str(tmp_path)


def test_packaged_adapters_are_shipped() -> None:
    for name in PACKAGED_ADAPTERS:
        folder = resolve_adapter(name)
        assert adapter_info(folder)["peft_type"] == "LORA"
        assert (folder / "adapter_model.safetensors").stat().st_size > 100_000
        assert (folder / "README.md").is_file()


def test_an_adapter_for_another_base_model_is_refused_naming_both() -> None:
    from ragkit.generation.adapters import apply_adapter

    class LlamaForCausalLM:  # the class name is what the check compares
        pass

    with pytest.raises(AdapterError) as excinfo:
        apply_adapter(LlamaForCausalLM(), "grounded-qa-gemma")
    message = str(excinfo.value)
    assert "Gemma3ForCausalLM" in message and "LlamaForCausalLM" in message
    assert "\n" not in message


def test_grounded_qa_names_the_adapter_of_the_chosen_packaged_model() -> None:
    from ragkit.generation.adapters import packaged_adapter_name

    assert packaged_adapter_name("grounded-qa", None) == "grounded-qa-gemma"
    assert packaged_adapter_name("grounded-qa", "smollm2") == "grounded-qa-smollm2"
    assert packaged_adapter_name("grounded-qa", "Gemma3-270M") == "grounded-qa-gemma"
    with pytest.raises(AdapterError, match="packaged models only"):
        packaged_adapter_name("grounded-qa", "some-org/other-model")


def test_the_sft_and_rlhf_stages_of_the_default_adapter_are_both_shipped() -> None:
    """grounded-qa names the stage that measured better (SFT); -rlhf is the PPO run's policy."""
    from safetensors import safe_open

    from ragkit.generation.adapters import packaged_adapter_name

    sft, rlhf = resolve_adapter("grounded-qa-sft"), resolve_adapter("grounded-qa-rlhf")
    assert resolve_adapter(packaged_adapter_name("grounded-qa", None)) == sft
    assert resolve_adapter("grounded-qa-gemma") == sft
    assert rlhf != sft
    for key in ("r", "lora_alpha", "auto_mapping"):
        assert adapter_info(rlhf)[key] == adapter_info(sft)[key]
    # PPO trained the SFT adapter's own LoRA weights: the same tensors, other values
    with (
        safe_open(str(sft / "adapter_model.safetensors"), "pt") as a,
        safe_open(str(rlhf / "adapter_model.safetensors"), "pt") as b,
    ):
        names = sorted(a.keys())
        assert names == sorted(b.keys())
        moved = [k for k in names if not a.get_tensor(k).equal(b.get_tensor(k))]
    assert moved
    # the PPO candidate inherits its parent's answerability probe, byte for byte
    probe = "answerability_probe.safetensors"
    assert (rlhf / probe).read_bytes() == (sft / probe).read_bytes()
