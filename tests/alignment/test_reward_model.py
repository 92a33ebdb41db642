"""RewardModel: head initialisation, last-non-pad-token scoring, normalisation, save/load."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment import CheckpointError, RewardModel, collate_pairs, tokenize_pairs
from alignment.collate import pad_examples
from alignment.reward_model import init_head, last_token_index


@pytest.fixture
def reward_model(tiny_model_dir: Path) -> RewardModel:
    torch.manual_seed(0)
    return RewardModel.from_backbone(str(tiny_model_dir), max_length=64, min_prompt_tokens=2)


def test_head_is_drawn_from_normal_with_std_one_over_sqrt_d_plus_one() -> None:
    torch.manual_seed(0)
    head = init_head(4095)
    assert torch.count_nonzero(head.bias) == 0
    std = head.weight.std().item()
    assert std == pytest.approx(1 / math.sqrt(4096), rel=0.05)  # 1/64; 4095 draws: ~1% noise
    assert abs(head.weight.mean().item()) < 3 / 64 / math.sqrt(4095)


def test_head_init_uses_exactly_std_one_over_sqrt_d_plus_one() -> None:
    head = init_head(64, generator=torch.Generator().manual_seed(5))
    expected = torch.empty(1, 64).normal_(
        0.0, 1 / math.sqrt(65), generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(head.weight.data, expected)


def test_dropout_is_disabled_even_inside_attention_kernels() -> None:
    from transformers import LlamaConfig, LlamaModel

    from alignment.backbone import disable_dropout

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        attention_dropout=0.5,
    )
    config._attn_implementation = "eager"
    model = LlamaModel(config).train()
    ids = torch.randint(0, 32, (2, 12))
    torch.manual_seed(0)
    assert not torch.equal(
        model(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state
    )
    disable_dropout(model)
    assert torch.equal(
        model(input_ids=ids).last_hidden_state, model(input_ids=ids).last_hidden_state
    )
    layers = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5)).train()
    disable_dropout(layers)
    x = torch.ones(3, 4)
    assert torch.equal(layers(x), layers(x))


def test_fresh_model_has_the_checklist_head_and_a_dedicated_pad(reward_model: RewardModel) -> None:
    assert reward_model.head.weight.shape == (1, 64)
    assert torch.count_nonzero(reward_model.head.bias) == 0
    assert reward_model.pad_token_id != reward_model.tokenizer.eos_token_id
    assert reward_model.backbone.config.pad_token_id == reward_model.pad_token_id
    dropouts = [m.p for m in reward_model.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(p == 0.0 for p in dropouts)


def test_a_tokenizer_whose_pad_is_eos_is_refused(tiny_model_dir: Path, tokenizer: Any) -> None:
    from transformers import AutoModel

    backbone = AutoModel.from_pretrained(tiny_model_dir)
    with pytest.raises(ValueError, match="distinct from EOS"):
        RewardModel(backbone, tokenizer)


def test_last_token_index_under_left_and_right_padding() -> None:
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 4, 0]


def _pairs(reward_model: RewardModel, make_pairs: Any, n: int = 6) -> list[Any]:
    tokenized, _ = tokenize_pairs(make_pairs(n, 3), reward_model.encoder)
    assert len(tokenized) == n
    return tokenized


def test_score_is_read_at_the_last_real_token_whatever_the_padding(
    reward_model: RewardModel, make_pairs: Any
) -> None:
    pairs = _pairs(reward_model, make_pairs)
    pad = reward_model.pad_token_id
    with torch.no_grad():
        right = collate_pairs(pairs, pad, "right")
        left = collate_pairs(pairs, pad, "left")
        assert (right.attention_mask == 0).any()  # there is padding to get wrong
        s_right = reward_model(right.input_ids, right.attention_mask, right.position_ids)
        s_left = reward_model(left.input_ids, left.attention_mask, left.position_ids)
        alone = torch.cat(
            [
                reward_model(b.input_ids, b.attention_mask, b.position_ids)
                for b in (pad_examples([e], pad) for p in pairs for e in [p.chosen])
            ]
        )
        # equals the head applied to the hidden state of the final (EOS) token, by hand
        seq = pairs[0].chosen.input_ids
        hidden = reward_model.backbone(input_ids=torch.tensor([seq])).last_hidden_state
        manual = reward_model.head(hidden[0, -1]).item()
    assert torch.allclose(s_right, s_left, atol=1e-5)
    assert torch.allclose(s_right[: len(pairs)], alone, atol=1e-5)
    assert s_right[0].item() == pytest.approx(manual, abs=1e-5)
    assert torch.isfinite(s_left).all()


def test_pad_positions_do_not_influence_the_score(
    reward_model: RewardModel, make_pairs: Any
) -> None:
    pairs = _pairs(reward_model, make_pairs)
    batch = collate_pairs(pairs, reward_model.pad_token_id, "right")
    noisy = batch.input_ids.clone()
    noisy[batch.attention_mask == 0] = 7  # garbage where the padding is
    with torch.no_grad():
        a = reward_model(batch.input_ids, batch.attention_mask, batch.position_ids)
        b = reward_model(noisy, batch.attention_mask, batch.position_ids)
    assert torch.allclose(a, b, atol=1e-5)


def test_batched_score_equals_one_by_one_and_adds_the_bias(
    reward_model: RewardModel, make_pairs: Any
) -> None:
    pairs = make_pairs(7, 5)
    prompts = [p.prompt for p in pairs]
    responses = [p.chosen for p in pairs]
    batched = reward_model.score(prompts, responses, batch_size=3)
    single = torch.cat(
        [reward_model.score([p], [r]) for p, r in zip(prompts, responses, strict=True)]
    )
    assert batched.shape == (7,) and batched.dtype == torch.float32
    assert torch.allclose(batched, single, atol=1e-5)
    reward_model.normalisation_bias = 1.5
    assert torch.allclose(reward_model.score(prompts, responses), batched + 1.5, atol=1e-5)
    assert torch.allclose(reward_model.raw_score(prompts, responses), batched, atol=1e-5)
    with pytest.raises(ValueError):
        reward_model.score(prompts, responses[:-1])


def test_normalisation_makes_reference_responses_average_zero(
    reward_model: RewardModel, make_pairs: Any
) -> None:
    pairs = make_pairs(20, 9)
    prompts = [p.prompt for p in pairs]
    responses = [p.chosen for p in pairs]
    raw_mean = reward_model.raw_score(prompts, responses).mean().item()
    bias = reward_model.fit_normalisation(prompts, responses)
    assert bias == pytest.approx(-raw_mean, abs=1e-6)
    assert abs(reward_model.score(prompts, responses).mean().item()) < 1e-5


def test_save_and_load_round_trip_without_pickle(
    reward_model: RewardModel, make_pairs: Any, tmp_path: Path
) -> None:
    pairs = make_pairs(5, 2)
    prompts, responses = [p.prompt for p in pairs], [p.rejected for p in pairs]
    reward_model.normalisation_bias = -0.25
    with torch.no_grad():
        reward_model.head.bias.fill_(0.125)
    before = reward_model.score(prompts, responses)
    folder = reward_model.save(tmp_path / "rm", extra_files={"README.md": "card"})
    files = {p.name for p in folder.rglob("*") if p.is_file()}
    assert {"reward_model.json", "head.safetensors", "README.md"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pth"))]
    assert not list(tmp_path.glob(".rm*"))  # no temporary folder left behind
    loaded = RewardModel.load(folder)
    assert loaded.normalisation_bias == -0.25
    assert loaded.pad_token_id == reward_model.pad_token_id != loaded.tokenizer.eos_token_id
    assert torch.allclose(loaded.score(prompts, responses), before, atol=1e-5)


def test_load_refuses_unknown_format_and_missing_folder(
    reward_model: RewardModel, tmp_path: Path
) -> None:
    folder = reward_model.save(tmp_path / "rm")
    meta = json.loads((folder / "reward_model.json").read_text())
    meta["format_version"] = 99
    (folder / "reward_model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format 99"):
        RewardModel.load(folder)
    with pytest.raises(CheckpointError, match="not a reward model folder"):
        RewardModel.load(tmp_path / "elsewhere")


def test_lora_backbone_is_merged_on_save(
    reward_model: RewardModel, make_pairs: Any, tmp_path: Path
) -> None:
    from alignment.backbone import apply_lora

    reward_model.backbone = apply_lora(reward_model.backbone, 4, 8, 0.0, "all-linear")
    for name, p in reward_model.backbone.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # make the adapter non-trivial
    pairs = make_pairs(4, 1)
    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    before = reward_model.score(prompts, responses)
    loaded = RewardModel.load(reward_model.save(tmp_path / "rm"))
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    assert torch.allclose(loaded.score(prompts, responses), before, atol=1e-4)
