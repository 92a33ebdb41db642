"""Prompt templates and prompting strategies.

``prompts`` sits below ragkit and imports nothing from it: strategies take any object with
``generate(prompts, **options)`` (ragkit's ``Generator`` among them) and any embedding
callable (``Embedder.encode``). Every strategy works standalone and as a pipeline step (a
typed ``run`` returning a pydantic model).
"""

from prompts.budget import FitReport, Fitted, PromptBudgetError, fit_ranked
from prompts.builtin import LIBRARY, library_names, library_template
from prompts.calls import CallNode, CallRecorder, TokenBudgetExhaustedError
from prompts.examples import Example, insert_examples
from prompts.fewshot import FewShotPrompt, FewShotStep, FewShotTemplate
from prompts.jsontext import first_json_object, json_objects
from prompts.parsers import (
    AnswerParser,
    ChoiceParser,
    JsonFieldParser,
    LastNumberParser,
    MarkerParser,
)
from prompts.protocols import (
    Completion,
    EmbedFn,
    Prompt,
    PromptValue,
    TextGenerator,
    text_token_counter,
    token_counter,
    whitespace_tokens,
)
from prompts.reasoning import (
    ChainOfThought,
    Reasoned,
    Sample,
    SelfConsistency,
    Voted,
    normalize_answer,
)
from prompts.recursive import (
    LeastToMost,
    LeastToMostResult,
    RecursiveSummary,
    Refined,
    RefineRound,
    SelfRefine,
    SubAnswer,
    Summary,
    parse_subquestions,
    split_to_fit,
)
from prompts.selectors import (
    EmbeddingCache,
    ExampleSelector,
    FixedSelector,
    LengthSelector,
    MMRSelector,
    RandomSelector,
    SemanticSelector,
)
from prompts.structured import (
    Parsed,
    StructuredOutputError,
    StructuredResult,
    StructuredStep,
    parse_as,
    parse_with_attempts,
)
from prompts.template import (
    RESERVED_NAMES,
    ChatTemplate,
    PromptTemplate,
    TemplateSecurityError,
    TemplateSyntaxError,
    TemplateVariableError,
    load_template,
)

COMPONENTS: tuple[type, ...] = (
    FewShotStep,
    ChainOfThought,
    SelfConsistency,
    LeastToMost,
    SelfRefine,
    RecursiveSummary,
    StructuredStep,
)
"""The savable pipeline steps (``component_name``, ``to_config``, ``from_config``): ragkit's
pipeline registry registers them, since ``prompts`` may not import ragkit (see
:mod:`prompts.config`)."""

__all__ = [
    "COMPONENTS",
    "LIBRARY",
    "RESERVED_NAMES",
    "AnswerParser",
    "CallNode",
    "CallRecorder",
    "ChainOfThought",
    "ChatTemplate",
    "ChoiceParser",
    "Completion",
    "EmbedFn",
    "EmbeddingCache",
    "Example",
    "ExampleSelector",
    "FewShotPrompt",
    "FewShotStep",
    "FewShotTemplate",
    "FitReport",
    "Fitted",
    "FixedSelector",
    "JsonFieldParser",
    "LastNumberParser",
    "LeastToMost",
    "LeastToMostResult",
    "LengthSelector",
    "MMRSelector",
    "MarkerParser",
    "Parsed",
    "Prompt",
    "PromptBudgetError",
    "PromptTemplate",
    "PromptValue",
    "RandomSelector",
    "Reasoned",
    "RecursiveSummary",
    "RefineRound",
    "Refined",
    "Sample",
    "SelfConsistency",
    "SelfRefine",
    "SemanticSelector",
    "StructuredOutputError",
    "StructuredResult",
    "StructuredStep",
    "SubAnswer",
    "Summary",
    "TemplateSecurityError",
    "TemplateSyntaxError",
    "TemplateVariableError",
    "TextGenerator",
    "TokenBudgetExhaustedError",
    "Voted",
    "first_json_object",
    "fit_ranked",
    "insert_examples",
    "json_objects",
    "library_names",
    "library_template",
    "load_template",
    "normalize_answer",
    "parse_as",
    "parse_subquestions",
    "parse_with_attempts",
    "split_to_fit",
    "text_token_counter",
    "token_counter",
    "whitespace_tokens",
]
