"""The one module that talks to ``llama_cpp``: load a GGUF, tokenize, read the vocabulary, score.

Why ragkit drives llama.cpp token by token instead of calling its ``create_completion``: the
answer must keep ragkit's semantics exactly — grounded span decoding masks every step, stop
strings are cut the way the transformers path cuts them, streaming holds back partial stop
strings, and greedy means argmax with no hidden sampler defaults (llama-cpp-python samples with
``top_k=40, top_p=0.95, temp=0.8`` unless told otherwise). So llama.cpp does only what it is best
at — the quantised forward pass and the KV cache — and everything above it is shared Python.

The :class:`LlamaCppModel` protocol is what the engine needs; :class:`LlamaModel` implements it
on ``llama_cpp.Llama``. Tests implement it with a tiny deterministic fake, so the engine's logic
is tested on every machine, with or without the compiled package.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ragkit.generation.backends.base import BackendUnavailableError
from ragkit.generation.backends.llamacpp_vocab import (
    Vocabulary,
    cached_vocabulary,
    save_vocabulary,
)

INSTALL_HINT = (
    "pip install 'ragkit[llamacpp]' (compiles llama.cpp with the machine's cmake and C++ compiler)"
)
FALLBACK_HINT = (
    "use --generator-backend transformers (what the default, auto, falls back to), "
    "which needs no compiler"
)


class LlamaCppModel(Protocol):
    """What :class:`~ragkit.generation.backends.LlamaCppGenerator` needs from a loaded GGUF."""

    @property
    def context_length(self) -> int: ...

    @property
    def metadata(self) -> dict[str, str]: ...

    def vocabulary(self) -> Vocabulary: ...

    def tokenize(self, text: str, add_bos: bool) -> list[int]: ...

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token logits after ``ids`` (float32, one per vocabulary entry)."""
        ...

    @property
    def layer_count(self) -> int:
        """Decoder layers: the final (normalised) hidden state is hidden state ``layer_count``."""
        ...

    def final_state(self, ids: Sequence[int]) -> np.ndarray:
        """The final, normalised hidden state at the last of ``ids`` (what an answerability
        probe of the last layer reads); ``logits(ids)`` right after costs one token."""
        ...


MISSING = (
    f"the llamacpp generator backend needs llama-cpp-python: {INSTALL_HINT}; or {FALLBACK_HINT}"
)


_SILENCE: list[Any] = []
"""The no-op log callback handed to llama.cpp (kept alive here: C holds only a pointer)."""


def _silence(llama_cpp: Any) -> None:
    """Stop llama.cpp writing its own log lines to stderr.

    Even with ``verbose=False`` it prints notes such as "using full-size SWA cache" on every
    load, which would land in the middle of ``ragkit ask``'s output. Failures still reach the
    caller: llama-cpp-python raises them as Python exceptions.
    """
    if _SILENCE or not hasattr(llama_cpp, "llama_log_set"):
        return

    @llama_cpp.llama_log_callback
    def discard(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        return None

    _SILENCE.append(discard)
    llama_cpp.llama_log_set(discard, ctypes.c_void_p(0))


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or a one-line error naming the install and the fallback."""
    try:
        module = importlib.import_module("llama_cpp")
        _silence(module)
        return module
    except ImportError:
        raise BackendUnavailableError(MISSING) from None
    except OSError as exc:  # the package is there but its shared library does not load
        raise BackendUnavailableError(
            f"llama-cpp-python is installed but its library does not load ({exc}); {FALLBACK_HINT}"
        ) from None


def _close(llm: weakref.ref[Any]) -> None:
    live = llm()
    if live is not None:
        live.close()


class LlamaModel:
    """:class:`LlamaCppModel` on ``llama_cpp.Llama`` with KV-cache reuse across calls.

    Each :meth:`logits` call keeps the cached keys/values of the longest prefix it shares with
    the previous call and evaluates only the rest: during decoding that is one token per step,
    and consecutive RAG prompts share their instruction prefix. Not thread-safe (one KV cache):
    the engine serialises calls.
    """

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int, n_threads: int | None) -> None:
        llama_cpp = import_llama_cpp()
        self._lib = llama_cpp
        threads = n_threads or max(1, os.cpu_count() or 1)
        try:
            self._llm = llama_cpp.Llama(
                model_path=os.fspath(path),
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendUnavailableError(
                f"llama.cpp cannot load {os.fspath(path)}: {str(exc).splitlines()[0]}"
            ) from None
        # llama-cpp-python frees the model in __del__, which at interpreter exit runs after
        # its own module globals are gone and prints a traceback: close it while they exist
        atexit.register(_close, weakref.ref(self._llm))
        self._path = Path(path)
        self._vocab_ptr = llama_cpp.llama_model_get_vocab(self._llm.model)
        self._n_vocab = int(self._llm.n_vocab())
        self._evaluated: list[int] = []
        self._vocabulary: Vocabulary | None = None

    @property
    def context_length(self) -> int:
        return int(self._llm.n_ctx())

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._llm.metadata)

    def vocabulary(self) -> Vocabulary:
        """The vocabulary, from ragkit's cache when this file was read before (~1 s saved)."""
        if self._vocabulary is None:
            vocab = cached_vocabulary(self._path)
            if vocab is None or len(vocab.pieces) != self._n_vocab:
                vocab = self._read_vocabulary()
                save_vocabulary(self._path, vocab)
            self._vocabulary = vocab
        return self._vocabulary

    def _read_vocabulary(self) -> Vocabulary:
        lib, vocab = self._lib, self._vocab_ptr
        skip = (
            lib.LLAMA_TOKEN_ATTR_CONTROL
            | lib.LLAMA_TOKEN_ATTR_UNKNOWN
            | lib.LLAMA_TOKEN_ATTR_UNUSED
        )
        buffer = ctypes.create_string_buffer(256)
        pieces: list[bytes | None] = []
        eos: set[int] = set()
        for token in range(self._n_vocab):
            if lib.llama_vocab_is_eog(vocab, token):
                eos.add(token)
            if lib.llama_vocab_get_attr(vocab, token) & skip:
                pieces.append(None)
                continue
            size = lib.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, False)
            pieces.append(buffer.raw[:size] if size > 0 else None)
        bos = int(lib.llama_vocab_bos(vocab))
        eos_id = int(lib.llama_vocab_eos(vocab))

        def special_text(token: int) -> str:
            if token < 0:
                return ""
            size = lib.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
            return buffer.raw[: max(size, 0)].decode("utf-8", errors="replace")

        return Vocabulary(
            pieces=tuple(pieces),
            eos_ids=frozenset(eos),
            bos_id=bos if bos >= 0 else None,
            add_bos=bool(lib.llama_vocab_get_add_bos(vocab)),
            bos_text=special_text(bos),
            eos_text=special_text(eos_id),
        )

    def reset(self) -> None:
        """Forget the KV cache: the next :meth:`logits` call evaluates every token (benchmarks)."""
        self._evaluated = []

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        # special=True: a rendered chat template writes its turn markers as text
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        wanted = list(ids)
        if not wanted:
            raise ValueError("cannot score an empty sequence")
        shared = 0
        for old, new in zip(self._evaluated, wanted, strict=False):
            if old != new:
                break
            shared += 1
        shared = min(shared, len(wanted) - 1)  # the last token must run to produce logits
        self._llm.n_tokens = shared  # eval() drops the cache beyond n_tokens first
        self._evaluated = wanted[:shared]
        self._llm.eval(wanted[shared:])
        self._evaluated = wanted
        row = self._lib.llama_get_logits_ith(self._llm.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self._n_vocab,)).copy()

    @property
    def layer_count(self) -> int:
        return int(self._lib.llama_model_n_layer(self._llm.model))

    def final_state(self, ids: Sequence[int]) -> np.ndarray:
        wanted = list(ids)
        if len(wanted) > 1:
            self.logits(wanted[:-1])  # the prefix the ordinary way (cache reused)
        self._llm.n_tokens = len(wanted) - 1
        self._evaluated = wanted[:-1]
        # embeddings only for the one last token: switched on for a longer batch, llama.cpp
        # would output (and project onto the vocabulary) every position
        self._lib.llama_set_embeddings(self._llm.ctx, True)
        try:
            self._llm.eval(wanted[-1:])
            row = self._lib.llama_get_embeddings_ith(self._llm.ctx, -1)
            width = int(self._lib.llama_model_n_embd(self._llm.model))
            state = np.ctypeslib.as_array(row, shape=(width,)).copy()
        finally:
            self._lib.llama_set_embeddings(self._llm.ctx, False)
        self._evaluated = wanted
        return state
