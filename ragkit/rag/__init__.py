"""Retrieval-augmented generation: prompt building, citations and the ready RAG pipeline."""

from ragkit.rag.chat import ChatSession, Turn
from ragkit.rag.citations import CitationStep, CitedAnswer, map_citations
from ragkit.rag.generate_step import Generated, GenerateStep
from ragkit.rag.pipeline import AnswerStream, RAGPipeline
from ragkit.rag.prompt_builder import BuiltPrompt, PromptBuilder
from ragkit.rag.schema import Answer, Citation, Passage
from ragkit.rag.strategies import STRATEGIES, answer_steps, default_examples

__all__ = [
    "STRATEGIES",
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
    "answer_steps",
    "default_examples",
    "map_citations",
]
