"""Generator backends: transformers (default), llama.cpp, an OpenAI-compatible server, vLLM.

All four satisfy :class:`GeneratorBackend`, the interface RAG pipelines, ``prompts``
strategies and the server use, and are built by :func:`make_generator` (the CLI's
``--generator-backend``). Importing this package imports neither torch, ``llama_cpp``,
``openai`` nor ``vllm``; each loads when its backend first needs it. See docs/backends.md.
"""

from ragkit.generation.backends.auto import BackendVerdict, auto_generator
from ragkit.generation.backends.base import (
    BackendSettings,
    BackendUnavailableError,
    FinishedStream,
    GenerationStream,
    GeneratorBackend,
    GeneratorBackendError,
    UnsupportedOptionError,
)
from ragkit.generation.backends.factory import (
    BACKENDS,
    DEFAULT_BACKEND,
    BackendName,
    backend_options,
    generator_from_config,
    make_generator,
)
from ragkit.generation.backends.llamacpp_engine import (
    LlamaCppGenerator,
    LlamaCppGeneratorConfig,
    resolve_gguf,
)
from ragkit.generation.backends.llamacpp_model import LlamaCppModel, LlamaModel
from ragkit.generation.backends.llamacpp_vocab import Vocabulary
from ragkit.generation.backends.openai_api import (
    OpenAIGenerator,
    OpenAIGeneratorConfig,
    OpenAIStream,
    openai_request_options,
)
from ragkit.generation.backends.vllm_engine import (
    VLLMGenerator,
    VLLMGeneratorConfig,
    vllm_engine_kwargs,
    vllm_result,
    vllm_sampling_kwargs,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "BackendName",
    "BackendSettings",
    "BackendUnavailableError",
    "BackendVerdict",
    "FinishedStream",
    "GenerationStream",
    "GeneratorBackend",
    "GeneratorBackendError",
    "LlamaCppGenerator",
    "LlamaCppGeneratorConfig",
    "LlamaCppModel",
    "LlamaModel",
    "OpenAIGenerator",
    "OpenAIGeneratorConfig",
    "OpenAIStream",
    "UnsupportedOptionError",
    "VLLMGenerator",
    "VLLMGeneratorConfig",
    "Vocabulary",
    "auto_generator",
    "backend_options",
    "generator_from_config",
    "make_generator",
    "openai_request_options",
    "resolve_gguf",
    "vllm_engine_kwargs",
    "vllm_result",
    "vllm_sampling_kwargs",
]
