"""LangChain peer: DirectoryLoader(TextLoader) + RecursiveCharacterTextSplitter + HuggingFaceEmbeddings + FAISS.

Configured the way its documentation presents the pipeline, with the benchmark's shared knobs:
1000-character chunks with 100 characters of overlap, batch 64, L2-normalised vectors and an
inner-product FAISS index (the same exact search as the floor). The store is saved to disk
because ragkit's ingest produces a persistent index too.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import Phases, audit_truncation, ingest_parser, load_queries, time_queries, write_result


def _embeddings(args: argparse.Namespace) -> Any:
    from langchain_huggingface import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(
        model_name=args.model,
        encode_kwargs={"batch_size": getattr(args, "batch_size", 64), "normalize_embeddings": True},
    )


def ingest(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        from langchain_community.document_loaders import DirectoryLoader, TextLoader
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    with phases("model_load"):
        embeddings = _embeddings(args)
    with phases("load"):
        loader = DirectoryLoader(
            str(args.corpus),
            glob="**/*.txt",
            loader_cls=TextLoader,
            loader_kwargs={"encoding": "utf-8"},
            show_progress=False,
        )
        documents = loader.load()
    with phases("split"):
        splitter = RecursiveCharacterTextSplitter(
            chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap
        )
        chunks = splitter.split_documents(documents)
    with phases("embed_and_index"):
        store = FAISS.from_documents(
            chunks, embeddings, distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT
        )
    with phases("persist"):
        store.save_local(str(args.index_dir))
    write_result(
        args.result,
        {
            "system": "langchain",
            "files": len(documents),
            "chunks": len(chunks),
            "phases": phases.seconds,
        },
    )


def search(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        from langchain_community.vectorstores import FAISS
        from langchain_community.vectorstores.utils import DistanceStrategy
    with phases("open"):
        embeddings = _embeddings(args)
        # The saved docstore is a pickle; we wrote it ourselves a moment ago, so loading is safe.
        store = FAISS.load_local(
            str(args.index_dir),
            embeddings,
            allow_dangerous_deserialization=True,
            distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        )
    k = args.k

    def run_query(query: str) -> list[Any]:
        return store.similarity_search(query, k=k)

    queries = load_queries(args.queries)
    latencies, hits, cpu_ms = time_queries(run_query, queries, args.warmup)
    with phases("audit"):
        texts = [doc.page_content for doc in store.docstore._dict.values()]
        truncation = audit_truncation(texts, args.model)
    write_result(
        args.result,
        {
            "system": "langchain",
            "latencies_ms": latencies,
            "cpu_ms": cpu_ms,
            "hits": hits,
            "phases": phases.seconds,
            "truncation": truncation,
        },
    )


def main() -> None:
    args = ingest_parser(__doc__ or "langchain").parse_args()
    (ingest if args.mode == "ingest" else search)(args)


if __name__ == "__main__":
    main()
