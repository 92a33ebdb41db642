"""On the real data and the packaged SmolLM2 (marked ``integration``; skipped without them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment import read_hh_jsonl, train_validation_split

ROOT = Path(__file__).resolve().parents[2]
HH = ROOT / ".." / "shared" / "data" / "hh_harmless_test.jsonl.gz"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hh_pairs() -> list:
    if not HH.is_file():
        pytest.skip(f"shared data not available at {HH}")
    loaded = read_hh_jsonl(HH)
    assert loaded.report.total == 2312
    assert loaded.report.dropped == {"prompt_mismatch": 5}
    return loaded.records


def test_all_hh_pairs_are_read_and_split_deterministically(hh_pairs: list) -> None:
    assert len(hh_pairs) == 2307
    assert all(
        p.prompt.endswith("\n\nAssistant:") and p.prompt.startswith("\n\nHuman:") for p in hh_pairs
    )
    split = train_validation_split(hh_pairs, validation_fraction=0.1, seed=0)
    again = train_validation_split(hh_pairs, validation_fraction=0.1, seed=0)
    assert [p.metadata["source"] for p in split.validation] == [
        p.metadata["source"] for p in again.validation
    ]
    assert len(split.validation) in (230, 231, 232)
    assert not {p.prompt for p in split.train} & {p.prompt for p in split.validation}


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> object:
    from alignment.backbone import load_tokenizer, resolve_backbone
    from ragkit.errors import RagkitError

    try:
        path = resolve_backbone(None)
    except RagkitError as exc:
        pytest.skip(f"packaged SmolLM2 not available: {exc}")
    return load_tokenizer(path)


def test_hh_tokenised_with_smollm2_reports_every_dropped_pair(
    hh_pairs: list, smollm2_tokenizer: object
) -> None:
    from alignment import PromptResponseEncoder, ensure_pad_token, tokenize_pairs

    tokenizer = smollm2_tokenizer
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2  # type: ignore[attr-defined]
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id  # type: ignore[attr-defined]
    encoder = PromptResponseEncoder(tokenizer, max_length=384, min_prompt_tokens=8)
    kept, report = tokenize_pairs(hh_pairs, encoder)
    assert report.dropped.get("empty_response") == 4
    assert report.total == 2307 and report.kept == len(kept) == 2307 - report.n_dropped
    assert report.kept > 2250 and report.notes["prompt_truncated"] > 0
    assert all(len(p.chosen.input_ids) <= 384 and len(p.rejected.input_ids) <= 384 for p in kept)


def test_a_few_steps_of_the_reward_job_on_smollm2(
    smollm2_tokenizer: object, tmp_path: Path
) -> None:
    """The whole job on the real backbone, kept tiny (one step, short sequences)."""
    import torch

    from alignment import RewardJobConfig, RewardModel, train_reward_model

    if not HH.is_file():  # its data is the shared HH file, like the tests above
        pytest.skip(f"shared data not available at {HH}")

    config = RewardJobConfig.model_validate(
        {
            "model": {"freeze_layers": 28},
            "data": {"path": str(HH), "limit": 12, "validation_fraction": 0.34},
            "training": {"batch_size": 4, "max_steps": 1, "progress": False, "threads": 1},
            "normalisation": {"max_samples": 4},
            "max_length": 96,
            "output_dir": str(tmp_path / "run"),
        }
    )
    result = train_reward_model(config)
    assert result.loop.steps == 1 and 0.0 <= result.validation["accuracy"] <= 1.0
    model = RewardModel.load(result.model_dir)
    assert model.tokenizer.pad_token_id != model.tokenizer.eos_token_id
    assert model.backbone.get_input_embeddings().num_embeddings == len(model.tokenizer) == 49153
    scores = model.score(["\n\nHuman: hi\n\nAssistant:"] * 2, [" Hello!", " Go away."])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
