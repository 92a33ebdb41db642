"""Atomic writes keep the permissions a plain write would give (umask for new, old bits kept)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from prompts.atomic import atomic_write_text as write_template_text
from ragkit.atomic import atomic_directory, atomic_path, atomic_write_bytes

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_umask_mode_not_0600(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "manifest.json"
    atomic_write_bytes(target, b"{}")
    plain = tmp_path / "plain.json"
    plain.write_bytes(b"{}")
    assert mode(target) == mode(plain) == 0o644


def test_replaced_file_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "rows.sqlite"
    target.write_bytes(b"old")
    target.chmod(0o640)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o640


def test_directory_gets_umask_mode_and_keeps_an_old_ones(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "checkpoint"
    atomic_directory(target, lambda folder: (folder / "weights.safetensors").write_bytes(b"w"))
    assert mode(target) == 0o755
    assert mode(target / "weights.safetensors") == 0o644
    target.chmod(0o750)
    atomic_directory(target, lambda folder: (folder / "weights.safetensors").write_bytes(b"v"))
    assert mode(target) == 0o750
    assert (target / "weights.safetensors").read_bytes() == b"v"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_template_write_gets_umask_mode_and_keeps_an_old_ones(
    tmp_path: Path, umask_022: None
) -> None:
    target = tmp_path / "qa.yaml"
    write_template_text(target, "a: 1\n")
    assert mode(target) == 0o644
    target.chmod(0o600)
    write_template_text(target, "a: 2\n")
    assert mode(target) == 0o600
    assert target.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["qa.yaml"]


def test_a_writer_that_leaves_0600_is_overruled(tmp_path: Path, umask_022: None) -> None:
    # safetensors' save_file writes 0600 whatever it is given; a plain write would give 0644
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    target = tmp_path / "probe.safetensors"
    with atomic_path(target) as tmp:
        safetensors_torch.save_file({"w": torch.zeros(2)}, str(tmp))
    assert mode(target) == 0o644

    def fill(folder: Path) -> None:
        safetensors_torch.save_file({"w": torch.zeros(2)}, str(folder / "trainable.safetensors"))
        (folder / "sub").mkdir(mode=0o700)
        (folder / "sub" / "run.sh").write_text("#!/bin/sh\n")
        (folder / "sub" / "run.sh").chmod(0o755)

    checkpoint = tmp_path / "checkpoint"
    atomic_directory(checkpoint, fill)
    assert mode(checkpoint / "trainable.safetensors") == 0o644
    assert mode(checkpoint / "sub") == 0o755
    assert mode(checkpoint / "sub" / "run.sh") == 0o755  # an executable stays executable
