"""ragkit: retrieval-augmented question answering.

Importing ragkit is cheap: models and indexes load on first use.
"""

from ragkit.chunking import ChunkingSettings, RecursiveSplitter
from ragkit.embedding import Embedder
from ragkit.errors import (
    IndexFormatError,
    InvalidQueryError,
    LoaderError,
    ModelNotFoundError,
    OutputPathError,
    RagkitError,
)
from ragkit.generation import GeneratorBackend, make_generator
from ragkit.index import Index, IngestReport, index_paths
from ragkit.loaders import default_registry, discover_files, load_documents
from ragkit.query_transforms import HyDERetriever, MultiQueryRetriever
from ragkit.rag import Answer, Citation, RAGPipeline, answering_pipeline
from ragkit.retrieval import BM25Retriever, DenseRetriever, HybridRetriever, MMRReranker, Retriever
from ragkit.schema import Chunk, Document, Hit

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "BM25Retriever",
    "Chunk",
    "ChunkingSettings",
    "Citation",
    "DenseRetriever",
    "Document",
    "Embedder",
    "GeneratorBackend",
    "Hit",
    "HyDERetriever",
    "HybridRetriever",
    "Index",
    "IndexFormatError",
    "IngestReport",
    "InvalidQueryError",
    "LoaderError",
    "MMRReranker",
    "ModelNotFoundError",
    "MultiQueryRetriever",
    "OutputPathError",
    "RAGPipeline",
    "RagkitError",
    "RecursiveSplitter",
    "Retriever",
    "__version__",
    "answering_pipeline",
    "default_registry",
    "discover_files",
    "index_paths",
    "load_documents",
    "make_generator",
]
