"""Shared fixtures: a tiny random sentence-transformers model built in-process (no downloads)."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

from ragkit.embedding import Embedder

# Deterministic vectors across the suite: "auto" would time backends and could pick a different
# one from run to run. Backend selection and the ONNX backends have their own tests.
os.environ.setdefault("RAGKIT_EMBED_BACKEND", "torch")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "and",
    "is",
    "was",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "city",
    "capital",
    "river",
    "france",
    "germany",
    "alsace",
    "strasbourg",
    "paris",
    "europe",
    "war",
    "terror",
    "culture",
    "materialism",
    "music",
    "art",
    "history",
    "people",
    "language",
    "parliament",
    "bridge",
    "cathedral",
]


def build_tiny_sentence_transformer(directory: Path, max_seq_length: int = 64) -> Path:
    """A 2-layer BERT with a small WordPiece vocabulary, saved as a sentence-transformers folder."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab += chars + ["##" + c for c in string.ascii_lowercase + string.digits] + _WORDS
    hf_dir = directory / "hf"
    hf_dir.mkdir(parents=True)
    (hf_dir / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(hf_dir / "vocab.txt"), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    transformer = Transformer(str(hf_dir), max_seq_length=max_seq_length)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st_dir = directory / "st"
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(st_dir))
    return st_dir


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture(scope="session")
def tiny_embedder(tiny_model_path: Path) -> Embedder:
    return Embedder(str(tiny_model_path), device="cpu", batch_size=16).warm_up()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
