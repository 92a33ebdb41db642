"""Shared fixtures: a tiny random Llama with a word-level tokenizer, built in-process.

The tokenizer mimics SmolLM2's trap on purpose: its pad token *is* its EOS token, so every test
that goes through the jobs also exercises the dedicated-pad-token fix.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from alignment import PreferencePair, RewardJobConfig

WORDS = [f"w{i}" for i in range(60)]
SPECIAL = ["<eos>", "<unk>"]
VOCAB = [*SPECIAL, "Human", "Assistant", ":", "user", "assistant", "system", "good", "bad", *WORDS]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def make_tokenizer() -> object:
    """A word-level fast tokenizer whose pad token equals its EOS (like SmolLM2's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(seed: int = 0) -> torch.nn.Module:
    """A 2-layer Llama, hidden size 64, over the tiny vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face folder (causal LM + tokenizer) the jobs can load like any local model."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    make_model().save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


@pytest.fixture
def tokenizer() -> object:
    """A fresh tiny tokenizer (pad == EOS until ``ensure_pad_token``)."""
    return make_tokenizer()


def synthetic_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Pairs whose chosen response contains the word ``good`` and whose rejected one does not."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        prompt = "Human : " + " ".join(rng.choices(WORDS, k=rng.randint(3, 8))) + " Assistant :"
        chosen = rng.choices(WORDS, k=rng.randint(2, 6))
        chosen.insert(rng.randint(0, len(chosen)), "good")
        rejected = rng.choices(WORDS, k=rng.randint(2, 6))
        if rng.random() < 0.5:
            rejected.insert(rng.randint(0, len(rejected)), "bad")
        pairs.append(
            PreferencePair(prompt=prompt, chosen=" ".join(chosen), rejected=" ".join(rejected))
        )
    return pairs


@pytest.fixture
def make_pairs() -> Callable[..., list[PreferencePair]]:
    """Factory of synthetic preference pairs."""
    return synthetic_pairs


def write_pairs_jsonl(path: Path, pairs: list[PreferencePair]) -> Path:
    """Write pairs as prompt/chosen/rejected JSONL lines."""
    import json

    path.write_text(
        "".join(json.dumps(p.model_dump(exclude={"metadata"})) + "\n" for p in pairs),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def write_pairs() -> Callable[[Path, list[PreferencePair]], Path]:
    """Factory writing pairs as a prompt/chosen/rejected JSONL file."""
    return write_pairs_jsonl


@pytest.fixture
def tiny_lm() -> torch.nn.Module:
    """A fresh tiny causal LM (same weights every time)."""
    return make_model()


@pytest.fixture
def reward_config(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., RewardJobConfig]:
    """Factory of a small reward job on synthetic pairs: ``reward_config(n_pairs, **training)``."""

    def build(n_pairs: int = 64, *, seed: int = 0, **training: object) -> RewardJobConfig:
        data = write_pairs_jsonl(
            tmp_path / f"pairs-{n_pairs}-{seed}.jsonl", synthetic_pairs(n_pairs, seed)
        )
        settings = {"batch_size": 8, "learning_rate": 1e-3, "progress": False, **training}
        return RewardJobConfig.model_validate(
            {
                "model": {"name_or_path": str(tiny_model_dir)},
                "data": {"path": str(data), "format": "fields", "validation_fraction": 0.25},
                "training": settings,
                "max_length": 64,
                "min_prompt_tokens": 2,
                "output_dir": str(tmp_path / "run"),
            }
        )

    return build


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the test machine is shared: use one, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
