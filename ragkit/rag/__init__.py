"""Retrieval-augmented generation: prompt building, citations and the ready RAG pipeline."""

from ragkit.rag.chat import ChatSession, Turn
from ragkit.rag.citations import CitationStep, CitedAnswer, map_citations
from ragkit.rag.generate_step import Generated, GenerateStep
from ragkit.rag.pipeline import AnswerStream, RAGPipeline
from ragkit.rag.prompt_builder import BuiltPrompt, PromptBuilder
from ragkit.rag.schema import Answer, Citation, Passage

__all__ = [
    "Answer",
    "AnswerStream",
    "BuiltPrompt",
    "ChatSession",
    "Citation",
    "CitationStep",
    "CitedAnswer",
    "GenerateStep",
    "Generated",
    "Passage",
    "PromptBuilder",
    "RAGPipeline",
    "Turn",
    "map_citations",
]
