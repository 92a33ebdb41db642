"""Stop strings: token-level truncation, generation stopping, score placement, no-EOS penalty."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from alignment import ensure_pad_token
from alignment.ppo import (
    PPOConfig,
    Rollout,
    first_stop_index,
    per_token_rewards,
    sample_responses,
    score_rollout,
    truncate_responses,
)

from .conftest import make_model, make_tokenizer

PAD = 99


def word_ids(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]


def test_first_stop_index_is_the_token_that_completes_the_string() -> None:
    tok = make_tokenizer()
    ids = word_ids(tok, "w1 w2 w3 w4 w3")
    assert first_stop_index(tok, ids, ["w3"]) == 2  # the first occurrence counts
    assert first_stop_index(tok, ids, ["w2 w3"]) == 2  # spread over two tokens
    assert first_stop_index(tok, ids, ["w4", "w2"]) == 1  # the earliest of several
    assert first_stop_index(tok, ids, ["w9"]) is None
    assert first_stop_index(tok, ids, []) is None
    assert first_stop_index(tok, [], ["w1"]) is None


def test_truncation_ends_at_eos_or_stop_whichever_comes_first() -> None:
    tok = make_tokenizer()
    eos = int(tok.eos_token_id)  # type: ignore[attr-defined]
    w = {f"w{i}": word_ids(tok, f"w{i}")[0] for i in range(1, 8)}
    raw = torch.tensor(
        [
            [w["w1"], w["w5"], w["w2"], eos, w["w3"]],  # stop (w5) before EOS
            [w["w1"], eos, w["w5"], w["w2"], w["w3"]],  # EOS before the stop
            [w["w1"], w["w2"], w["w3"], w["w4"], w["w6"]],  # neither: cut by the length
            [w["w7"], w["w6"], w["w7"], w["w3"], w["w4"]],  # two-token stop "w7 w3"
        ]
    )
    ids, mask, has_eos, has_stop = truncate_responses(raw, [eos], PAD, tok, ["w5", "w7 w3"])
    assert mask.tolist() == [
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
    ]
    assert ids[0].tolist() == [w["w1"], w["w5"], PAD, PAD, PAD]  # the stop token is kept
    assert ids[1].tolist() == [w["w1"], eos, PAD, PAD, PAD]
    assert ids[3].tolist()[:4] == [w["w7"], w["w6"], w["w7"], w["w3"]]
    assert has_eos.tolist() == [False, True, False, False]
    assert has_stop.tolist() == [True, False, False, True]
    # without stop strings it is plain EOS truncation
    _, plain_mask, plain_eos, plain_stop = truncate_responses(raw, [eos], PAD)
    assert plain_mask[0].tolist() == [1, 1, 1, 1, 0] and plain_eos[0] and not plain_stop.any()
    with pytest.raises(ValueError, match="tokenizer"):
        truncate_responses(raw, [eos], PAD, None, ["w5"])


def test_score_sits_on_the_last_stop_token_and_stopped_rows_escape_the_no_eos_penalty() -> None:
    tok = make_tokenizer()
    eos = int(tok.eos_token_id)  # type: ignore[attr-defined]
    raw = torch.tensor(
        [
            word_ids(tok, "w1 w7 w3 w4 w4"),
            word_ids(tok, "w1 w2 w2 w2 w2"),
            [*word_ids(tok, "w1"), eos, 9, 9, 9],
        ]
    )
    ids, mask, has_eos, has_stop = truncate_responses(raw, [eos], PAD, tok, ["w7 w3"])
    rollout = Rollout(
        prompts=["a", "b", "c"],
        query_ids=torch.zeros(3, 1, dtype=torch.long),
        query_mask=torch.ones(3, 1, dtype=torch.long),
        response_ids=ids,
        response_mask=mask,
        has_eos=has_eos,
        texts=["x", "y", "z"],
        has_stop=has_stop,
    )
    assert rollout.ended.tolist() == [True, False, True]

    def reward(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return torch.tensor([1.0, 1.0, 1.0])

    scores = score_rollout(reward, rollout, no_eos_penalty=0.5)
    assert scores.tolist() == [1.0, 0.5, 1.0]  # only the row with neither EOS nor stop
    zeros = torch.zeros(3, 5)
    rewards, _ = per_token_rewards(zeros, zeros, scores, mask, kl_coef=0.1)
    assert rewards.nonzero().tolist() == [[0, 2], [1, 4], [2, 1]]  # stop token, last, EOS


def test_sampling_stops_rows_at_the_stop_string_and_leaves_the_rest_alone() -> None:
    """With the same seed, stop strings only shorten rows: prefixes and other rows agree."""
    tok = make_tokenizer()
    model = make_model()
    ensure_pad_token(tok, model)
    pad = int(tok.pad_token_id)  # type: ignore[attr-defined]
    prompts = ["Human : w1 w2 w3 Assistant :", "Human : w4 Assistant :"] * 4
    torch.manual_seed(0)
    free = sample_responses(model, tok, prompts, response_length=6, temperature=1.0)
    # stop strings taken from what the free run said: a two-word one and a single word
    row0 = free.response_ids[0, : int(free.lengths[0])].tolist()
    stops = [tok.decode(row0[1:3]), tok.decode(free.response_ids[5, 2:3].tolist())]
    torch.manual_seed(0)
    cut = sample_responses(
        model, tok, prompts, response_length=6, temperature=1.0, stop_strings=stops
    )
    assert cut.has_stop is not None and int(cut.has_stop.sum()) >= 2
    for row in range(len(prompts)):
        n_free = int(free.lengths[row])
        searched = free.response_ids[row, : n_free - int(free.has_eos[row])].tolist()
        k = first_stop_index(tok, searched, stops)
        if k is None:  # untouched
            assert cut.response_ids[row].tolist() == free.response_ids[row].tolist()
            assert cut.texts[row] == free.texts[row] and not cut.has_stop[row]
            continue
        assert bool(cut.has_stop[row]) and not bool(cut.has_eos[row])
        assert int(cut.lengths[row]) == k + 1
        assert cut.response_ids[row, : k + 1].tolist() == searched[: k + 1]
        assert all(t == pad for t in cut.response_ids[row, k + 1 :].tolist())
        assert not any(s in cut.texts[row] for s in stops)  # the reward never sees the stop
        assert free.texts[row].startswith(cut.texts[row])


def test_trainer_applies_stop_strings_to_rollouts() -> None:
    seen: list[str] = []

    def reward(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        seen.extend(responses)
        return torch.zeros(len(responses))

    from alignment.ppo import PPOTrainer

    config = PPOConfig(
        batch_size=8,
        response_length=8,
        ppo_epochs=1,
        temperature=1.0,
        value="head",
        stop_strings=["w1", "w2", "w3"],  # w1 also matches w10…w19: most rows stop
    )
    trainer = PPOTrainer(make_model(), None, None, reward, make_tokenizer(), config)
    metrics = trainer.step(["Human : w5 Assistant :"] * 8)
    assert metrics["stop_rate"] > 0.2
    assert metrics["eos_rate"] + metrics["stop_rate"] <= 1.0
    assert not any(s in text for text in seen for s in ("w1", "w2", "w3"))


def test_config_rejects_an_empty_stop_string() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="stop string"):
        PPOConfig(stop_strings=["\n\nHuman:", ""])
    assert PPOConfig(stop_strings=["\n\nHuman:"]).stop_strings == ["\n\nHuman:"]
