"""Promotion into the serving folder (atomic, reversible) and the paired bootstrap behind it.

No model is trained here: an "adapter" is a folder with an ``adapter_config.json`` and a
weights file whose bytes name it, which is all the promotion code reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from alignment.feedback_loop import (
    CARD_FILE,
    PromotionError,
    live_version,
    paired_bootstrap,
    promote_adapter,
    read_card,
    recover_serving_adapter,
    roll_back,
    versions_dir,
)
from alignment.feedback_loop import promotion as promotion_module
from alignment.feedback_loop.promotion import HISTORY_FILE


def fake_adapter(folder: Path, tag: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "tag": tag}))
    (folder / "adapter_model.safetensors").write_bytes(tag.encode() * 100)
    return folder


def served_tag(serving: Path) -> str:
    return json.loads((serving / "adapter_config.json").read_text())["tag"]


def snapshot(serving: Path) -> tuple[str | None, dict[str, bytes]]:
    """Where the serving path points and the bytes it serves."""
    link = str(serving.readlink()) if serving.is_symlink() else None
    return link, {p.name: p.read_bytes() for p in sorted(serving.iterdir())}


def test_promotions_swap_a_link_and_keep_the_versions(tmp_path: Path) -> None:
    serving = fake_adapter(tmp_path / "deploy" / "adapter", "sft")  # a plain folder at first
    first = promote_adapter(
        fake_adapter(tmp_path / "c1", "c1"), serving, {"version": "v1"}, version_name="2-v1"
    )
    assert serving.is_symlink() and not serving.readlink().is_absolute()  # a relative link
    assert served_tag(serving) == "c1" and read_card(serving) == {"version": "v1"}
    assert first.previous is not None and first.previous.name.endswith("-adopted")
    assert served_tag(first.previous) == "sft"  # the original, kept as a version
    second = promote_adapter(fake_adapter(tmp_path / "c2", "c2"), serving, {}, version_name="3-v2")
    assert served_tag(serving) == "c2" and second.previous == first.version.resolve()
    history = [json.loads(line) for line in (versions_dir(serving) / HISTORY_FILE).open()]
    assert [(h["version"], h["previous"]) for h in history] == [
        ("2-v1", first.previous.name),
        ("3-v2", "2-v1"),
    ]
    # roll back: the version it replaced is served again, atomically (one more link swap)
    assert roll_back(serving).name == "2-v1" and served_tag(serving) == "c1"
    assert not list(serving.parent.glob(".*.link"))


def test_old_versions_are_pruned_but_never_the_live_one_or_its_parent(tmp_path: Path) -> None:
    serving = tmp_path / "adapter"
    for i in range(5):
        promote_adapter(
            fake_adapter(tmp_path / f"c{i}", f"c{i}"),
            serving,
            {},
            keep_versions=2,
            version_name=f"{i}-v",
        )
    kept = sorted(p.name for p in versions_dir(serving).iterdir() if p.is_dir())
    assert kept == ["3-v", "4-v"] and served_tag(serving) == "c4"


def test_a_failing_card_write_leaves_the_serving_folder_unchanged(tmp_path: Path) -> None:
    serving = tmp_path / "adapter"
    promote_adapter(fake_adapter(tmp_path / "c1", "c1"), serving, {"v": 1}, version_name="1-v")
    before = snapshot(serving)

    def broken(folder: Path, card: Any) -> None:
        (folder / CARD_FILE).write_text('{"half": ')
        raise OSError("no space left on device (injected)")

    with pytest.raises(OSError, match="injected"):
        promote_adapter(fake_adapter(tmp_path / "c2", "c2"), serving, {}, write_card=broken)
    assert snapshot(serving) == before
    leftovers = [p.name for p in versions_dir(serving).iterdir() if p.name != HISTORY_FILE]
    assert leftovers == ["1-v"]  # no half-written version, no temporary folder


def test_a_failing_link_swap_leaves_the_serving_folder_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serving = tmp_path / "adapter"
    promote_adapter(fake_adapter(tmp_path / "c1", "c1"), serving, {}, version_name="1-v")
    before = snapshot(serving)

    class FailingRename:
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def replace(src: Any, dst: Any) -> None:
            raise OSError("injected")

    monkeypatch.setattr(promotion_module, "os", FailingRename())
    with pytest.raises(OSError, match="injected"):
        promote_adapter(fake_adapter(tmp_path / "c2", "c2"), serving, {}, version_name="2-v")
    monkeypatch.undo()
    assert snapshot(serving) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "adapter.versions", "c1", "c2"]
    assert not (versions_dir(serving) / "2-v").exists()  # never served, not kept


def test_a_crash_in_the_middle_of_an_adoption_is_repaired(tmp_path: Path) -> None:
    serving = fake_adapter(tmp_path / "adapter", "sft")
    before = snapshot(serving)
    # the state a kill -9 between "move the folder aside" and "put the link in place" leaves
    serving.rename(tmp_path / ".adapter.adopting")
    (tmp_path / ".adapter.1234abcd.link").symlink_to("adapter.versions/x")
    assert live_version(serving) is None
    message = recover_serving_adapter(serving)
    assert message is not None and "restored" in message
    assert snapshot(serving) == before and not list(tmp_path.glob(".adapter.*"))
    assert recover_serving_adapter(serving) is None  # nothing left to repair


def test_a_source_without_an_adapter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromotionError, match=r"adapter_config\.json"):
        promote_adapter(tmp_path / "empty", tmp_path / "adapter", {})
    with pytest.raises(PromotionError, match="never promoted"):
        roll_back(fake_adapter(tmp_path / "plain", "p"))


# --------------------------------------------------------------------------- the bootstrap


def test_the_paired_bootstrap_is_seeded_and_paired() -> None:
    current = [0.1, 0.9, 0.4, 0.6, 0.2, 0.8, 0.3, 0.7]
    # a constant gain: every resample has the same mean difference, whatever the spread of scores
    constant = paired_bootstrap([c + 0.05 for c in current], current, samples=500)
    assert constant.low == pytest.approx(0.05) and constant.wins()
    assert not constant.wins(min_gain=0.05)
    same = paired_bootstrap(current, current, samples=500)
    assert (same.low, same.gain, same.high) == (0.0, 0.0, 0.0) and not same.wins()
    noisy = [
        c + d for c, d in zip(current, [0.3, -0.3, 0.2, -0.1, 0.1, -0.2, 0.2, -0.1], strict=True)
    ]
    a = paired_bootstrap(noisy, current, samples=3000, seed=7)
    assert a == paired_bootstrap(noisy, current, samples=3000, seed=7)
    assert a.low < a.gain < a.high and not a.wins()
    assert "95% paired-bootstrap interval" in a.describe()
    with pytest.raises(Exception, match="same questions"):
        paired_bootstrap([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(Exception, match="2 or more"):
        paired_bootstrap([0.1], [0.2])
