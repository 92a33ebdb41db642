"""Retrieval-augmented generation: prompt building, citations and the ready RAG pipeline."""

from ragkit.rag.chat import ChatSession, Turn
from ragkit.rag.citations import CitationStep, CitedAnswer, map_citations
from ragkit.rag.factory import answering_pipeline
from ragkit.rag.generate_step import DECODINGS, Decoding, DecodingError, Generated, GenerateStep
from ragkit.rag.pipeline import AnswerStream, RAGPipeline
from ragkit.rag.profiles import AnsweringProfile, answering_profile
from ragkit.rag.prompt_builder import BuiltPrompt, PromptBuilder
from ragkit.rag.schema import Answer, Citation, Grounding, Passage, Usage
from ragkit.rag.strategies import STRATEGIES, answer_steps, default_examples

__all__ = [
    "DECODINGS",
    "STRATEGIES",
    "Answer",
    "AnswerStream",
    "AnsweringProfile",
    "BuiltPrompt",
    "ChatSession",
    "Citation",
    "CitationStep",
    "CitedAnswer",
    "Decoding",
    "DecodingError",
    "GenerateStep",
    "Generated",
    "Grounding",
    "Passage",
    "PromptBuilder",
    "RAGPipeline",
    "Turn",
    "Usage",
    "answer_steps",
    "answering_pipeline",
    "answering_profile",
    "default_examples",
    "map_citations",
]
