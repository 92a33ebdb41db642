"""Haystack peer: TextFileToDocument + RecursiveDocumentSplitter + SentenceTransformersDocumentEmbedder + InMemoryDocumentStore.

Haystack 3 moved the sentence-transformers components into the ``sentence-transformers-haystack``
integration package; they keep their names and behaviour. The splitter counts characters
(1000/100, paragraph → line → word separators) to match the other systems; its default list
also splits on sentences with NLTK, whose data would have to be downloaded. Components are run
one after another rather than in a ``Pipeline`` so that each phase can be timed; the pipeline
would only add its own bookkeeping. The store is saved to disk (JSON), as ragkit's index is.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import (
    Phases,
    audit_truncation,
    corpus_files,
    ingest_parser,
    load_queries,
    time_queries,
    write_result,
)

STORE_FILE = "store.json"


def ingest(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        from haystack.components.converters import TextFileToDocument
        from haystack.components.preprocessors import RecursiveDocumentSplitter
        from haystack.components.writers import DocumentWriter
        from haystack.document_stores.in_memory import InMemoryDocumentStore
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersDocumentEmbedder,
        )
    with phases("model_load"):
        embedder = SentenceTransformersDocumentEmbedder(
            model=args.model,
            batch_size=args.batch_size,
            normalize_embeddings=True,
            progress_bar=False,
            local_files_only=True,
        )
        embedder.warm_up()
    with phases("load"):
        documents = TextFileToDocument(encoding="utf-8").run(sources=corpus_files(args.corpus))[
            "documents"
        ]
    with phases("split"):
        splitter = RecursiveDocumentSplitter(
            split_length=args.chunk_size,
            split_overlap=args.chunk_overlap,
            split_unit="char",
            separators=["\n\n", "\n", " "],
        )
        splitter.warm_up()
        chunks = splitter.run(documents=documents)["documents"]
    with phases("embed"):
        embedded = embedder.run(documents=chunks)["documents"]
    with phases("index"):
        store = InMemoryDocumentStore()
        DocumentWriter(document_store=store).run(documents=embedded)
    with phases("persist"):
        args.index_dir.mkdir(parents=True, exist_ok=True)
        store.save_to_disk(str(args.index_dir / STORE_FILE))
    write_result(
        args.result,
        {
            "system": "haystack",
            "files": len(documents),
            "chunks": len(chunks),
            "phases": phases.seconds,
        },
    )


def search(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        from haystack.components.retrievers.in_memory import InMemoryEmbeddingRetriever
        from haystack.document_stores.in_memory import InMemoryDocumentStore
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersTextEmbedder,
        )
    with phases("open"):
        store = InMemoryDocumentStore.load_from_disk(str(args.index_dir / STORE_FILE))
        text_embedder = SentenceTransformersTextEmbedder(
            model=args.model, normalize_embeddings=True, progress_bar=False, local_files_only=True
        )
        text_embedder.warm_up()
        retriever = InMemoryEmbeddingRetriever(document_store=store, top_k=args.k)

    def run_query(query: str) -> list[Any]:
        embedding = text_embedder.run(text=query)["embedding"]
        return retriever.run(query_embedding=embedding)["documents"]

    queries = load_queries(args.queries)
    latencies, hits, cpu_ms = time_queries(run_query, queries, args.warmup)
    with phases("audit"):
        texts = [doc.content or "" for doc in store.filter_documents()]
        truncation = audit_truncation(texts, args.model)
    write_result(
        args.result,
        {
            "system": "haystack",
            "latencies_ms": latencies,
            "cpu_ms": cpu_ms,
            "hits": hits,
            "phases": phases.seconds,
            "truncation": truncation,
        },
    )


def main() -> None:
    args = ingest_parser(__doc__ or "haystack").parse_args()
    (ingest if args.mode == "ingest" else search)(args)


if __name__ == "__main__":
    main()
