"""Fixtures for pipeline tests: a tiny index (tiny embedder) and a tiny random Llama generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ragkit import ChunkingSettings, Index
from ragkit.embedding import Embedder
from ragkit.schema import Document

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = {
    "strasbourg": "Strasbourg is the capital of Alsace. The Rhine river flows past Strasbourg.",
    "paris": "Paris is the capital of France. The Seine river flows through Paris.",
    "war": "The war on terror began in 2001 after the attacks on the United States.",
    "culture": "Culture includes music, art, language and the history of people.",
}


def build_llama(folder: Path, max_positions: int = 4096) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        show_progress=False,
    )
    backend.train_from_iterator(list(TEXTS.values()) * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("rag-llama"))


@pytest.fixture(scope="session")
def short_context_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("rag-llama-short"), max_positions=480)


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Embedder) -> Path:
    directory = tmp_path_factory.mktemp("rag-index") / "idx"
    with Index.create(
        directory, tiny_embedder, ChunkingSettings(unit="chars", chunk_size=200, chunk_overlap=0)
    ) as index:
        index.add_documents(
            [
                Document(id=k, text=v, source=f"{k}.txt", metadata={"topic": k})
                for k, v in TEXTS.items()
            ]
        )
        index.commit()
    return directory


@pytest.fixture(scope="session")
def tiny_generator(tiny_llama_path: Path) -> Any:
    from ragkit.generation import Generator

    return Generator(str(tiny_llama_path), device="cpu", options={"max_new_tokens": 12}).warm_up()
