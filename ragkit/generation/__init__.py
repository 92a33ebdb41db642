"""Text generation with causal language models.

``Generator`` loads lazily: importing this package does not import torch or transformers.

>>> from ragkit.generation import Generator
>>> Generator().generate(["What is the capital of France?"])[0].text
"""

from ragkit.generation.adapters import PACKAGED_ADAPTERS, AdapterError, resolve_adapter
from ragkit.generation.backends import (
    BACKENDS,
    GenerationStream,
    GeneratorBackend,
    GeneratorBackendError,
    OpenAIGenerator,
    UnsupportedOptionError,
    VLLMGenerator,
    make_generator,
)
from ragkit.generation.chat import ChatMessage, Prompt
from ragkit.generation.checkpoints import resolve_causal_lm
from ragkit.generation.device import DeviceError, select_device, select_dtype
from ragkit.generation.generator import ContextLengthError, Generator, GeneratorConfig
from ragkit.generation.options import GenerationOptions
from ragkit.generation.quantization import QUANTIZATIONS, Quantization, QuantizationError
from ragkit.generation.results import FinishReason, GenerationResult
from ragkit.generation.streaming import TextStream

__all__ = [
    "BACKENDS",
    "PACKAGED_ADAPTERS",
    "QUANTIZATIONS",
    "AdapterError",
    "ChatMessage",
    "ContextLengthError",
    "DeviceError",
    "FinishReason",
    "GenerationOptions",
    "GenerationResult",
    "GenerationStream",
    "Generator",
    "GeneratorBackend",
    "GeneratorBackendError",
    "GeneratorConfig",
    "OpenAIGenerator",
    "Prompt",
    "Quantization",
    "QuantizationError",
    "TextStream",
    "UnsupportedOptionError",
    "VLLMGenerator",
    "make_generator",
    "resolve_adapter",
    "resolve_causal_lm",
    "select_device",
    "select_dtype",
]
