"""Fixtures: a tiny random Llama (2 layers, hidden 64) with a byte-level BPE tokenizer, built here.

Nothing is downloaded. The tokenizer mirrors SmolLM2's quirks that matter for batching: it has a
chat template and its pad token *is* its EOS token. A random model almost never emits EOS, so
the fixture rewires the EOS row of the output layer to 1.1 × the row of a token that greedy
decoding reaches for some prompts but not others: those prompts then finish with ``"stop"`` at
different steps while the rest run to ``"length"``, exercising finished rows inside a batch.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "Retrieval augmented generation answers questions from passages.",
    "Who wrote the report? The committee did.",
    "Tokens are produced one at a time by the model.",
    "user: hi\nassistant: hello\nsystem: be brief",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

PROMPTS = [
    "Paris is",
    "The quick brown fox jumps over the lazy dog. Who wrote the report?",
    "Who wrote the report?",
    "Tokens",
    "Retrieval augmented generation answers questions from passages. The capital of France",
    "brown fox",
]
"""Prompts of clearly different token lengths, so batches need left padding."""

MAX_NEW_TOKENS = 24


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=200,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",  # pad == eos, as in SmolLM2
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _greedy_new_tokens(model: Any, tokenizer: Any, prompt: str) -> list[int]:
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **ids,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    return list(out[0, ids["input_ids"].shape[1] :].tolist())


def _pick_stop_token(continuations: list[list[int]], specials: set[int]) -> int:
    """A token first reached at step >= 2 by some prompts (at varied steps) but not by all."""
    best: tuple[int, int] | None = None
    candidates = {t for c in continuations for t in c} - specials
    for token in sorted(candidates):
        firsts = [c.index(token) for c in continuations if token in c]
        if not 0 < len(firsts) < len(continuations) or min(firsts) < 2:
            continue
        score = len(set(firsts))
        if best is None or score > best[0]:
            best = (score, token)
    assert best is not None, "no suitable token to turn into EOS; change the seed"
    return best[1]


def build_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """Write a tiny random Llama checkpoint + tokenizer to ``folder`` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    continuations = [_greedy_new_tokens(model, tokenizer, p) for p in PROMPTS]
    specials = set(tokenizer.all_special_ids)
    token = _pick_stop_token(continuations, specials)
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = 1.1 * model.lm_head.weight[token]
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny Llama (with a chat template, pad == eos)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_llama_no_template_dir(
    tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same checkpoint whose tokenizer has no chat template (plain-prompt fallback)."""
    import json

    folder = tmp_path_factory.mktemp("tiny-llama-plain") / "model"
    shutil.copytree(tiny_llama_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_generator(tiny_llama_dir: Path) -> Iterator[Any]:
    """A loaded Generator on the tiny Llama, shared by the session (loading is the slow part)."""
    from ragkit.generation import Generator

    generator = Generator(
        str(tiny_llama_dir), device="cpu", options={"max_new_tokens": MAX_NEW_TOKENS}
    )
    generator.warm_up()
    yield generator


@pytest.fixture(scope="session")
def greedy_results(tiny_generator: Any) -> list[Any]:
    """Greedy results of the tiny generator on ``PROMPTS`` (computed once, compared often)."""
    return list(tiny_generator.generate(PROMPTS))


@pytest.fixture(scope="session")
def one_by_one_results(tiny_generator: Any) -> list[Any]:
    """The same prompts sent one per call (no padding at all)."""
    return [tiny_generator.generate([p])[0] for p in PROMPTS]


@pytest.fixture
def prompts() -> list[str]:
    """Prompts of different token lengths (a fresh list: tests may reorder it)."""
    return list(PROMPTS)


@pytest.fixture
def max_new_tokens() -> int:
    """The tiny generator's default ``max_new_tokens``."""
    return MAX_NEW_TOKENS
