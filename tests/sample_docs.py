"""Small numbered corpora shared by the index, PostgreSQL-store and store-contract tests."""

from __future__ import annotations

from ragkit.schema import Document


def numbered_docs(prefix: str, n: int, topic: str = "river") -> list[Document]:
    """``n`` documents ``<prefix>0``... of three repeated sentences (several chunks each at an
    80-character chunk size), with metadata ``{"group": prefix, "n": i}``."""
    return [
        Document(
            id=f"{prefix}{i}",
            text=f"the {topic} number {i} flows to the city {i}. " * 3,
            source=f"{prefix}{i}.txt",
            metadata={"group": prefix, "n": i},
        )
        for i in range(n)
    ]
