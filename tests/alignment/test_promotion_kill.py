"""kill -9 during a promotion, before every file-system change it makes (issue 20).

A forked child promotes a candidate adapter into the serving folder while a profiler hook counts
the calls that change the file system (rename, replace, symlink, unlink, mkdir, open, write,
fsync, sendfile, rmdir, and the atomic exchange); at the chosen count it sends itself SIGKILL
before that call runs. After every such kill the serving path must resolve — as
``ragkit serve --adapter`` resolves it, with no repair step — to a complete adapter holding
either the old files or the new ones, never a mix and never nothing; and a rerun of the
promotion after the loop's repair must succeed.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from alignment.feedback_loop import promotion
from alignment.feedback_loop.promotion import promote_adapter, recover_serving_adapter
from ragkit.generation.adapters import resolve_adapter

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")

CHANGES = frozenset(
    {
        "rename",
        "replace",
        "symlink",
        "unlink",
        "remove",
        "rmdir",
        "mkdir",
        "open",
        "write",
        "fsync",
        "sendfile",
        "copy_file_range",
        "truncate",
        "utime",
        "chmod",
    }
)
FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter(folder: Path, tag: str) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    content = {name: f"{tag}:{name}".encode() * 50 for name in FILES}
    for name, data in content.items():
        (folder / name).write_bytes(data)
    return content


def counting_hook(kill_at: int, seen: list[int]) -> Callable[..., Any]:
    """A ``sys.setprofile`` hook: count file-system changes, SIGKILL before number ``kill_at``."""

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "c_call":
            name = getattr(arg, "__name__", "")
        elif event == "call":
            name = frame.f_code.co_name
            name = "exchange" if name == "exchange_paths" else ""
        else:
            return
        if name in CHANGES or name == "exchange":
            seen[0] += 1
            if seen[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def promote_in_child(candidate: Path, serving: Path, kill_at: int, count_file: Path) -> int:
    """Fork; the child promotes (killed at change ``kill_at``, or never for 0). Wait status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            seen = [0]
            sys.setprofile(counting_hook(kill_at, seen))
            promote_adapter(candidate, serving, {"version": "candidate"})
            sys.setprofile(None)
            count_file.write_text(str(seen[0]))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def served_files(serving: Path) -> dict[str, bytes]:
    folder = resolve_adapter(serving)  # what a server starting now would load
    return {name: (folder / name).read_bytes() for name in FILES}


@pytest.mark.parametrize("first_promotion", [True, False], ids=["adopting-a-folder", "relinking"])
def test_a_kill_before_any_change_leaves_a_complete_adapter(
    tmp_path: Path, first_promotion: bool
) -> None:
    candidate = tmp_path / "candidate"
    new = adapter(candidate, "new")
    count_file = tmp_path / "count"

    def fresh_serving(run: str) -> tuple[Path, dict[str, bytes]]:
        serving = tmp_path / run / "deploy" / "adapter"
        if first_promotion:  # a plain folder, e.g. an SFT run's adapter/
            return serving, adapter(serving, "old")
        previous = tmp_path / run / "previous"
        old = adapter(previous, "old")
        promote_adapter(previous, serving, {"version": "previous"})  # now a link
        return serving, old

    serving, _ = fresh_serving("reference")
    assert promote_in_child(candidate, serving, 0, count_file) == 0
    changes = int(count_file.read_text())
    assert served_files(serving) == new
    assert changes >= 5  # the hook sees the promotion's steps (else this test proves nothing)

    outcomes = {"old": 0, "new": 0}
    for kill_at in range(1, changes + 1):
        serving, old = fresh_serving(f"kill-{kill_at}")
        status = promote_in_child(candidate, serving, kill_at, count_file)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, kill_at
        files = served_files(serving)
        assert files in (old, new), f"killed before change {kill_at}: a mixed or broken adapter"
        outcomes["old" if files == old else "new"] += 1
        recover_serving_adapter(serving)  # what the loop runs first, then promote again
        promote_adapter(candidate, serving, {"version": "candidate-again"})
        assert served_files(serving) == new
        leftovers = [p.name for p in serving.parent.iterdir() if p.name.startswith(".")]
        assert leftovers == [], (kill_at, leftovers)
    assert outcomes["old"] > 0 and outcomes["new"] > 0


def test_the_exchange_is_what_keeps_the_serving_path(tmp_path: Path, monkeypatch: Any) -> None:
    """Without an atomic exchange (other systems) the fallback's gap exists and is repaired."""
    monkeypatch.setattr(promotion, "exchange_paths", lambda a, b: False)
    serving = tmp_path / "deploy" / "adapter"
    old = adapter(serving, "old")
    candidate = tmp_path / "candidate"
    new = adapter(candidate, "new")
    calls = {"n": 0}
    real_point = promotion._point

    def crash_in_the_gap(target: Path, version: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the adoption's link: the folder was renamed aside already
            raise KeyboardInterrupt("crash between the two renames (simulated)")
        real_point(target, version)

    monkeypatch.setattr(promotion, "_point", crash_in_the_gap)
    with pytest.raises(KeyboardInterrupt):
        promote_adapter(candidate, serving, {"version": "candidate"})
    assert served_files(serving) == old  # the failure path put the folder back
    promote_adapter(candidate, serving, {"version": "candidate"})
    assert served_files(serving) == new
