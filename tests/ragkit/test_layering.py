"""The dependency direction, read from the source: pipeline below rag, prompts below ragkit.

Every import statement counts, including imports inside functions: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ragkit
from ragkit.pipeline import component_class, registered_components

ROOT = Path(ragkit.__file__).resolve().parents[1]

PIPELINE_MUST_NOT_IMPORT = (
    "ragkit.rag",
    "ragkit.server",
    "ragkit.cli",
    "ragkit.evaluation",
    "ragkit.retrieval",
    "ragkit.query_transforms",
    "alignment",
)


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    if package is None:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def modules_under(folder: str) -> list[Path]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    return files


def offending(path: Path, forbidden: tuple[str, ...], package: str | None = None) -> list[str]:
    return sorted(
        name
        for name in imported_modules(path, package)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("path", modules_under("ragkit/pipeline"), ids=lambda p: p.name)
def test_the_pipeline_package_imports_nothing_above_it(path: Path) -> None:
    assert offending(path, PIPELINE_MUST_NOT_IMPORT) == []


@pytest.mark.parametrize(
    "path", modules_under("prompts"), ids=lambda p: str(p.relative_to(ROOT / "prompts"))
)
def test_prompts_imports_nothing_from_ragkit_or_alignment(path: Path) -> None:
    assert offending(path, ("ragkit", "alignment")) == []


# the stores are built on ragkit.index (its VectorStore contract and shared staging); the index
# knows no store, retriever or caller above it
INDEX_MUST_NOT_IMPORT = (
    "ragkit.stores",
    "ragkit.retrieval",
    "ragkit.rag",
    "ragkit.server",
    "ragkit.cli",
)


@pytest.mark.parametrize("path", modules_under("ragkit/index"), ids=lambda p: p.name)
def test_the_index_package_imports_no_store_or_caller(path: Path) -> None:
    assert offending(path, INDEX_MUST_NOT_IMPORT) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from ..rag import pipeline\n    import ragkit.cli\n")
    assert offending(probe, PIPELINE_MUST_NOT_IMPORT, "ragkit.pipeline") == [
        "ragkit.cli",
        "ragkit.rag",
        "ragkit.rag.pipeline",
    ]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


@pytest.mark.parametrize(
    "path",
    [
        p
        for folder in ("ragkit", "prompts", "alignment")
        for p in modules_under(folder)
        if not module_name(p).startswith(("ragkit.cli", "ragkit.__main__"))
    ],
    ids=module_name,
)
def test_nothing_below_the_cli_imports_it(path: Path) -> None:
    """The CLI (ragkit/cli/) is the top of the graph: library code never reaches back into it."""
    assert offending(path, ("ragkit.cli",)) == []


# Loaded by the commands that need them, never when the CLI starts (``--help`` stays instant).
CLI_LOADS_LAZILY = (
    "torch",
    "transformers",
    "sentence_transformers",
    "alignment",
    "fastapi",
    "uvicorn",
    "ragkit.server",
)


def module_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported (not inside functions or classes)."""
    found: set[str] = set()

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level:
                found.add(node.module or "")
            elif isinstance(node, ast.Try | ast.If):
                for block in (
                    node.body,
                    node.orelse,
                    *([h.body for h in node.handlers] if isinstance(node, ast.Try) else []),
                    *([node.finalbody] if isinstance(node, ast.Try) else []),
                ):
                    visit(block)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


@pytest.mark.parametrize("path", modules_under("ragkit/cli"), ids=lambda p: p.name)
def test_the_cli_loads_model_libraries_and_the_server_only_in_commands(path: Path) -> None:
    heavy = sorted(
        name
        for name in module_level_imports(path)
        if any(name == f or name.startswith(f + ".") for f in CLI_LOADS_LAZILY)
    )
    assert heavy == []


def declared_components() -> list[tuple[str, str]]:
    """(module, class) of every class in ragkit/ and prompts/ that sets ``component_name``."""
    out = []
    for folder in ("ragkit", "prompts"):
        for path in modules_under(folder):
            module = module_name(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                    continue
                if any(isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases):
                    continue  # the contract itself
                for item in node.body:
                    targets = (
                        item.targets
                        if isinstance(item, ast.Assign)
                        else [item.target]
                        if isinstance(item, ast.AnnAssign)
                        else []
                    )
                    if any(isinstance(t, ast.Name) and t.id == "component_name" for t in targets):
                        out.append((module, node.name))
    return out


def test_every_class_that_names_itself_a_component_is_registered() -> None:
    registered = {
        (cls.__module__, cls.__qualname__)
        for name in registered_components()
        if (cls := component_class(name)) is not None
    }
    declared = declared_components()
    assert len(declared) >= 19
    assert [d for d in declared if d not in registered] == []


def test_importing_the_pipeline_package_alone_registers_every_builtin_component() -> None:
    """Components register where they are defined; ``import ragkit`` must import them all."""
    expected = sorted(
        name
        for name in registered_components()
        if (cls := component_class(name)) is not None
        and cls.__module__.split(".")[0] in {"ragkit", "prompts"}
    )
    code = "from ragkit.pipeline import registered_components; print(*registered_components())"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, timeout=300, capture_output=True, text=True
    )
    assert sorted(out.stdout.split()) == expected
