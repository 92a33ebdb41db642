"""LlamaIndex peer: SimpleDirectoryReader + SentenceSplitter + HuggingFaceEmbedding + VectorStoreIndex.

The splitter's size is counted in characters (a per-character tokenizer) so that its 1000/100
means the same as everyone else's; with its default tiktoken tokenizer 1000 would mean about
4,000 characters, far past what MiniLM reads (256 word pieces). Everything else is LlamaIndex's
default behaviour, including the file metadata it prepends to each chunk before embedding and
its default in-memory vector store, persisted with ``storage_context.persist``.
"""

from __future__ import annotations

import argparse
from typing import Any

from common import Phases, audit_truncation, ingest_parser, load_queries, time_queries, write_result


def _char_tokens(text: str) -> list[str]:
    """One token per character: sizes in characters, comparable with the other systems."""
    return list(text)


def _embed_model(args: argparse.Namespace) -> Any:
    from llama_index.core import Settings
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    model = HuggingFaceEmbedding(
        model_name=args.model,
        embed_batch_size=getattr(args, "batch_size", 64),
        normalize=True,
    )
    # No LLM is needed for indexing or retrieval; make sure nothing reaches for a hosted default.
    Settings.embed_model = model
    Settings.llm = None
    return model


def ingest(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
        from llama_index.core.node_parser import SentenceSplitter
    with phases("model_load"):
        embed_model = _embed_model(args)
    with phases("load"):
        # exclude_hidden looks at every part of the absolute path, and the benchmark's work
        # folder is ``benchmarks/.work``: without this it would find no files at all.
        reader = SimpleDirectoryReader(
            input_dir=str(args.corpus),
            recursive=True,
            required_exts=[".txt"],
            exclude_hidden=False,
        )
        documents = reader.load_data()
    with phases("split"):
        splitter = SentenceSplitter(
            chunk_size=args.chunk_size,
            chunk_overlap=args.chunk_overlap,
            tokenizer=_char_tokens,
        )
        nodes = splitter.get_nodes_from_documents(documents)
    with phases("embed_and_index"):
        index = VectorStoreIndex(nodes, embed_model=embed_model, show_progress=False)
    with phases("persist"):
        index.storage_context.persist(persist_dir=str(args.index_dir))
    write_result(
        args.result,
        {
            "system": "llamaindex",
            "files": len(documents),
            "chunks": len(nodes),
            "phases": phases.seconds,
        },
    )


def search(args: argparse.Namespace) -> None:
    phases = Phases()
    with phases("import"):
        from llama_index.core import StorageContext, load_index_from_storage
    with phases("open"):
        embed_model = _embed_model(args)
        storage = StorageContext.from_defaults(persist_dir=str(args.index_dir))
        index = load_index_from_storage(storage, embed_model=embed_model)
        retriever = index.as_retriever(similarity_top_k=args.k)

    def run_query(query: str) -> list[Any]:
        return retriever.retrieve(query)

    queries = load_queries(args.queries)
    latencies, hits, cpu_ms = time_queries(run_query, queries, args.warmup)
    with phases("audit"):
        # What LlamaIndex embeds: the node text with its embed-visible metadata prepended.
        from llama_index.core.schema import MetadataMode

        texts = [
            node.get_content(metadata_mode=MetadataMode.EMBED)
            for node in index.docstore.docs.values()
        ]
        truncation = audit_truncation(texts, args.model)
    write_result(
        args.result,
        {
            "system": "llamaindex",
            "latencies_ms": latencies,
            "cpu_ms": cpu_ms,
            "hits": hits,
            "phases": phases.seconds,
            "truncation": truncation,
        },
    )


def main() -> None:
    args = ingest_parser(__doc__ or "llamaindex").parse_args()
    (ingest if args.mode == "ingest" else search)(args)


if __name__ == "__main__":
    main()
