"""SFT: the loss covers response tokens only, training lowers it, LoRA saves a merged model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment import (
    Demonstration,
    PromptResponseEncoder,
    SFTJobConfig,
    collate_demonstrations,
    ensure_pad_token,
    tokenize_demonstrations,
    train_sft,
)
from alignment.checkpoint import checkpoint_dirs
from alignment.errors import AlignmentError
from alignment.job_loop import Interrupted
from alignment.sft import ResponseOnlyLM


def test_loss_is_the_cross_entropy_of_response_tokens_only(tiny_lm: Any, tokenizer: Any) -> None:
    ensure_pad_token(tokenizer, tiny_lm)
    encoder = PromptResponseEncoder(tokenizer, max_length=32, min_prompt_tokens=1)
    demos = [
        Demonstration(prompt="Human : w1 w2 w3 Assistant :", response="w7 w8"),
        Demonstration(prompt="Human : w4 Assistant :", response="w9 w10 w11 w12"),
    ]
    tokenized, _ = tokenize_demonstrations(demos, encoder)
    batch = collate_demonstrations(tokenized, tokenizer.pad_token_id)
    assert batch.labels is not None
    with torch.no_grad():
        total, count = ResponseOnlyLM(tiny_lm)(
            batch.input_ids, batch.attention_mask, batch.position_ids, batch.labels
        )
        logits = tiny_lm(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).logits
    # by hand: log-softmax at each position that predicts a response token (EOS included)
    expected, n = 0.0, 0
    for row, demo in enumerate(tokenized):
        ids = demo.example.input_ids
        for t in range(demo.example.response_start, len(ids)):
            expected -= torch.log_softmax(logits[row, t - 1], -1)[ids[t]].item()
            n += 1
    assert int(count) == n == (2 + 1) + (4 + 1)
    assert total.item() == pytest.approx(expected, rel=1e-5)


def _demos_file(path: Path, n: int, seed: int = 0) -> Path:
    """A learnable task: the response repeats the prompt's last word three times."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [f"w{rng.randrange(20)}" for _ in range(rng.randint(2, 5))]
        rows.append(
            {
                "prompt": "Human : " + " ".join(words) + " Assistant :",
                "response": " ".join([words[-1]] * 3),
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _config(tiny_model_dir: Path, data: Path, out: Path, **overrides: Any) -> SFTJobConfig:
    training = {
        "batch_size": 8,
        "learning_rate": 3e-3,
        "progress": False,
        **overrides.pop("training", {}),
    }
    return SFTJobConfig.model_validate(
        {
            "model": {"name_or_path": str(tiny_model_dir), "finetune": "full"},
            "data": {"path": str(data), "format": "jsonl", "validation_fraction": 0.2},
            "training": training,
            "max_length": 48,
            "min_prompt_tokens": 2,
            "output_dir": str(out),
            **overrides,
        }
    )


def test_sft_lowers_the_validation_loss_and_saves_a_loadable_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = _demos_file(tmp_path / "demos.jsonl", 160)
    config = _config(
        tiny_model_dir,
        data,
        tmp_path / "run",
        training={"epochs": 4, "eval_every": 5, "learning_rate": 1e-2},
    )
    result = train_sft(config)
    evals = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in evals if r["split"] == "eval"]
    assert evals[0]["loss"] > result.validation["loss"]
    assert result.validation["loss"] < 0.5 * evals[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    info = json.loads((result.model_dir / "alignment_sft.json").read_text())
    assert info["steps"] == result.loop.steps and "loss" in info["validation"]
    assert "Validation" in (result.model_dir / "README.md").read_text()


def test_sft_lora_trains_the_adapter_only_and_resumes_exactly(
    # LoRA dropout makes the run depend on the RNG: resuming must restore it too
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    data = _demos_file(tmp_path / "demos.jsonl", 48)
    lora = {
        "name_or_path": str(tiny_model_dir),
        "finetune": "lora",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.2},
    }
    training = {"max_steps": 4, "checkpoint_every": 2, "learning_rate": 1e-2}
    straight = _config(tiny_model_dir, data, tmp_path / "a", training=training, model=lora)
    broken = _config(tiny_model_dir, data, tmp_path / "b", training=training, model=lora)
    train_sft(straight)

    def stop(step: int) -> None:
        if step == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_sft(broken, on_step=stop)
    saved = load_file(str(checkpoint_dirs(broken.output_dir)[-1][1] / "trainable.safetensors"))
    assert saved and all("lora_" in name for name in saved)  # only the adapter is trained
    train_sft(broken, resume=True)
    a = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model" / "model.safetensors"))
    assert not any("lora" in k for k in a)  # merged into plain weights
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(a[key], base[key])  # the merged adapter did change the weights


def test_lora_sft_saves_an_adapter_the_generator_applies_to_the_unmodified_base(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from ragkit.generation import Generator

    data = _demos_file(tmp_path / "demos.jsonl", 32)
    lora = {"name_or_path": str(tiny_model_dir), "finetune": "lora", "lora": {"r": 4, "alpha": 8}}
    config = _config(
        tiny_model_dir,
        data,
        tmp_path / "run",
        training={"max_steps": 3, "learning_rate": 1e-2},
        model=lora,
    )
    result = train_sft(config)
    assert result.adapter_dir == tmp_path / "run" / "adapter"
    assert result.summary()["adapter"] == str(result.adapter_dir)
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert weights and all("lora_" in k for k in weights)  # no resized embeddings inside
    adapter_config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_model_dir)
    assert "Validation" in (result.adapter_dir / "README.md").read_text()

    # base + adapter (vocabulary untouched) == the merged model over the base vocabulary
    generator = Generator(str(tiny_model_dir), device="cpu", adapter=str(result.adapter_dir))
    merged = AutoModelForCausalLM.from_pretrained(result.model_dir).eval()
    base_vocab = generator.model.get_input_embeddings().num_embeddings
    assert base_vocab == merged.get_input_embeddings().num_embeddings - 1  # SFT's pad token
    ids = torch.tensor([[3, 4, 5, 12, 13, 14, 4, 5]])
    with torch.no_grad():
        ours = generator.model(ids).logits
        theirs = merged(ids).logits[..., :base_vocab]
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert not torch.allclose(ours, plain, atol=1e-3)  # the adapter did something
    assert generator.generate(["w1 w2"], max_new_tokens=3)[0].text is not None
    assert "adapter=" in repr(generator)


def test_sft_continues_an_existing_adapter_with_its_own_rank(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """``init_adapter``: the served adapter trains on (the control run PPO is compared with);
    its rank and target modules are kept, and it starts from its trained weights, not zero."""
    from safetensors.torch import load_file

    data = _demos_file(tmp_path / "demos.jsonl", 32)
    lora = {"name_or_path": str(tiny_model_dir), "finetune": "lora", "lora": {"r": 4, "alpha": 8}}

    def run(name: str, steps: int, rate: float, model: dict[str, Any], **extra: Any) -> Any:
        training = {"max_steps": steps, "learning_rate": rate}
        return train_sft(
            _config(tiny_model_dir, data, tmp_path / name, training=training, model=model, **extra)
        )

    first = run("first", 3, 1e-2, lora)
    assert first.adapter_dir is not None
    other_rank = {**lora, "lora": {"r": 2, "alpha": 4}}  # ignored: the adapter's own rank rules
    second = run("second", 2, 1e-6, other_rank, init_adapter=str(first.adapter_dir))
    assert second.adapter_dir is not None
    config = json.loads((second.adapter_dir / "adapter_config.json").read_text())
    assert config["r"] == 4
    before = load_file(str(first.adapter_dir / "adapter_model.safetensors"))
    after = load_file(str(second.adapter_dir / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and any(before[k].abs().max() > 1e-3 for k in lora_b)  # trained, not zero
    assert all(torch.allclose(before[k], after[k], atol=1e-4) for k in before)  # continued
    assert any(not torch.equal(before[k], after[k]) for k in before)  # and trained further


def test_sft_init_adapter_errors_are_one_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = _demos_file(tmp_path / "demos.jsonl", 16)
    lora = {"name_or_path": str(tiny_model_dir), "finetune": "lora"}
    missing = _config(
        tiny_model_dir, data, tmp_path / "run", model=lora, init_adapter=str(tmp_path / "nope")
    )
    with pytest.raises(AlignmentError, match=r"^init_adapter: adapter .* is neither") as caught:
        train_sft(missing)
    assert "\n" not in str(caught.value)
    with pytest.raises(ValueError, match=r"init_adapter needs model\.finetune: lora"):
        _config(tiny_model_dir, data, tmp_path / "run", init_adapter="grounded-qa-gemma")
