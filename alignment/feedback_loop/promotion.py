"""Promoting an adapter into the folder ``ragkit serve`` loads, atomically and reversibly.

Layout, for a serving folder ``deploy/adapter``::

    deploy/adapter -> adapter.versions/20260101T120000Z-3f2a9c   (a relative symbolic link)
    deploy/adapter.versions/
        20251230T090000Z-adopted/       the folder that was there before the first promotion
        20260101T120000Z-3f2a9c/        adapter_config.json, adapter_model.safetensors,
                                        model_card.json, README.md
        promotions.jsonl                one line per completed promotion

A promotion (1) writes the new version completely in a temporary folder beside the others,
fsyncs it and renames it into ``*.versions/`` (a version folder is complete or absent), then
(2) points a new link at it and renames that link over ``deploy/adapter`` (``os.replace``, atomic
on POSIX). At every instant ``deploy/adapter`` is the old adapter or the new one; a crash or an
error before (2) leaves it untouched, and the previous versions stay on disk for a roll-back
(:func:`roll_back`). A version is never modified after it is written, and the adapter loader
resolves the link once per load (:func:`ragkit.generation.adapters.resolve_adapter`), so a
server reloading during a promotion reads one version, not a mix.

The first promotion into a plain folder (e.g. an SFT run's ``adapter/``) copies it to
``*-adopted`` and swaps a link to that copy with the folder in one atomic step (Linux
``renameat2(RENAME_EXCHANGE)``, :func:`ragkit.atomic.exchange_paths`), so the serving path never
goes missing; the original stays aside (``.adapter.adopting``) until the promotion completes, and
is put back if it fails. Where no atomic exchange exists, the folder is renamed aside and the link
put in its place; if a crash falls between those two renames, :func:`recover_serving_adapter`
(run by the loop before it reads the serving folder) moves the original back.
tests/alignment/test_promotion_kill.py kills a promotion before every file-system change it makes
and checks that the serving path always resolves to a complete adapter, old or new.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import AlignmentError
from ragkit.atomic import atomic_directory, exchange_paths, fsync_dir

CARD_FILE = "model_card.json"
HISTORY_FILE = "promotions.jsonl"
ADOPTED_SUFFIX = "-adopted"


class PromotionError(AlignmentError):
    """The serving folder is in a state a promotion cannot work from."""


def versions_dir(target: Path) -> Path:
    """``<target>.versions``: every version the serving folder has pointed at."""
    return target.with_name(f"{target.name}.versions")


def _adopting(target: Path) -> Path:
    return target.with_name(f".{target.name}.adopting")


def _stamp(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def live_version(target: Path) -> Path | None:
    """The folder the serving path holds now (the link resolved), or None when there is none."""
    if target.is_symlink():
        resolved = target.resolve()
        return resolved if resolved.is_dir() else None
    return target if target.is_dir() else None


def read_card(folder: Path | None) -> dict[str, Any] | None:
    """The version's ``model_card.json``, or None (no folder, no card, unreadable card)."""
    if folder is None:
        return None
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def recover_serving_adapter(target: str | os.PathLike[str]) -> str | None:
    """Repair what a crash in the middle of adopting a plain folder left; say what was done.

    * the serving path is missing and the moved-aside original exists: move it back;
    * both exist (the crash came after the link was in place): delete the moved-aside copy
      (the adopted version holds the same files);
    * leftover temporary links beside the serving path are removed.

    Returns a one-line description of the repair, or None when nothing needed repairing.
    """
    target = Path(target)
    aside = _adopting(target)
    done: str | None = None
    if aside.exists():
        if not os.path.lexists(target):
            aside.rename(target)
            fsync_dir(target.parent)
            done = f"restored {target} after an interrupted adoption"
        else:
            shutil.rmtree(aside, ignore_errors=True)
            done = f"removed the moved-aside copy of {target} (its adoption had completed)"
    if target.parent.is_dir():
        for leftover in target.parent.glob(f".{target.name}.*.link"):
            with contextlib.suppress(OSError):
                if leftover.is_symlink():
                    leftover.unlink()
                else:  # the original folder just after an exchange: its copy was adopted
                    shutil.rmtree(leftover)
    return done


def _copy_files(source: Path, destination: Path) -> None:
    for item in sorted(source.iterdir()):
        if item.is_file():
            shutil.copy2(item, destination / item.name)


def _point(target: Path, version: Path) -> None:
    """Make ``target`` a link to ``version`` (inside ``versions_dir(target)``) in one rename."""
    link = _link_to(target, version)
    try:
        # os.replace, not Path.replace: the one atomic step of a promotion, called through this
        # module's ``os`` so that tests can make exactly this step fail
        os.replace(link, target)  # noqa: PTH105
    except BaseException:
        with contextlib.suppress(OSError):
            link.unlink()
        raise
    fsync_dir(target.parent)


def _link_to(target: Path, version: Path) -> Path:
    """A new temporary link beside ``target`` pointing at ``version`` (relative)."""
    link = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.link")
    link.symlink_to(os.path.relpath(version, target.parent))
    return link


def _adopt(target: Path, now: float | None) -> Path:
    """Turn a plain serving folder into a link to a copy of itself (see the module docstring).

    The original folder is kept, moved aside, until the promotion that needed the adoption has
    completed (:func:`_finish_adoption`) or failed (:func:`_undo_adoption`).
    """
    versions = versions_dir(target)
    version = versions / f"{_stamp(now)}{ADOPTED_SUFFIX}"
    atomic_directory(version, lambda tmp: _copy_files(target, tmp))
    aside = _adopting(target)
    link = _link_to(target, version)
    try:
        if exchange_paths(link, target):  # one atomic step: target is the link from now on
            link.rename(aside)  # ``link`` now names the original folder
        else:  # no atomic exchange here: two renames, repaired by recover_serving_adapter
            link.unlink()
            target.rename(aside)
            _point(target, version)
    except BaseException:
        with contextlib.suppress(OSError):
            if link.is_symlink():
                link.unlink()
        _undo_adoption(target, version)
        raise
    fsync_dir(target.parent)
    return version


def _undo_adoption(target: Path, version: Path) -> None:
    """Put the moved-aside original back at ``target`` and drop its adopted copy."""
    aside = _adopting(target)
    if aside.is_dir():
        if not os.path.lexists(target):
            aside.rename(target)
        elif target.is_symlink():
            if exchange_paths(aside, target):
                aside.unlink()  # after the exchange ``aside`` is the link
            else:
                target.unlink()
                aside.rename(target)
        fsync_dir(target.parent)
    shutil.rmtree(version, ignore_errors=True)


def _finish_adoption(target: Path) -> None:
    shutil.rmtree(_adopting(target), ignore_errors=True)


def _append_history(versions: Path, record: Mapping[str, Any]) -> None:
    with (versions / HISTORY_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class Promotion:
    """Where a promoted adapter went."""

    serving: Path
    version: Path
    previous: Path | None


def promote_adapter(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    card: Mapping[str, Any],
    *,
    readme: str | None = None,
    keep_versions: int = 5,
    now: float | None = None,
    version_name: str | None = None,
    write_card: Callable[[Path, Mapping[str, Any]], None] | None = None,
) -> Promotion:
    """Make the peft adapter in ``source`` the one served from ``target``, atomically.

    ``card`` is written as ``model_card.json`` in the new version (and ``readme`` as
    ``README.md`` when given, replacing the source's). ``keep_versions``: version folders kept
    in all; the oldest are deleted after the swap, never the live one or the one it replaced.
    ``write_card`` replaces the card writer (tests inject failures through it). Raises
    :class:`PromotionError` when ``source`` is not an adapter folder; any error before the swap
    leaves ``target`` as it was.
    """
    source, target = Path(source), Path(target)
    if not (source / "adapter_config.json").is_file():
        raise PromotionError(f"cannot promote {source}: it holds no adapter_config.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_serving_adapter(target)
    versions = versions_dir(target)
    versions.mkdir(exist_ok=True)
    adopted: Path | None = None
    if os.path.lexists(target) and not target.is_symlink():
        if not target.is_dir():
            raise PromotionError(f"{target} exists and is not an adapter folder")
        adopted = _adopt(target, now)
    elif target.is_symlink() and live_version(target) is None:
        raise PromotionError(f"{target} is a link to a missing folder ({target.readlink()})")
    previous = live_version(target)

    name = version_name or f"{_stamp(now)}-{uuid.uuid4().hex[:6]}"
    version = versions / name
    if version.exists():
        raise PromotionError(f"version {version} exists already")
    writer = write_card or _write_card

    def fill(tmp: Path) -> None:
        _copy_files(source, tmp)
        if readme is not None:
            (tmp / "README.md").write_text(readme, encoding="utf-8")
        writer(tmp, card)

    try:
        atomic_directory(version, fill)
        _point(target, version)
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)  # never served: no reason to keep it
        if adopted is not None:
            _undo_adoption(target, adopted)
        raise
    if adopted is not None:
        _finish_adoption(target)
    _append_history(
        versions,
        {
            "version": name,
            "promoted": _stamp(now),
            "previous": previous.name if previous is not None else None,
        },
    )
    _prune(versions, keep_versions, {name, *([previous.name] if previous else [])})
    return Promotion(serving=target, version=version, previous=previous)


def _write_card(folder: Path, card: Mapping[str, Any]) -> None:
    (folder / CARD_FILE).write_text(
        json.dumps(card, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _prune(versions: Path, keep_versions: int, protected: set[str]) -> None:
    """Delete the oldest version folders until ``keep_versions`` remain (never a protected one).

    Version names start with their UTC time stamp, so name order is age order.
    """
    folders = sorted(
        (p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    surplus = len(folders) - keep_versions
    for old in folders:
        if surplus <= 0:
            break
        if old.name not in protected:
            shutil.rmtree(old, ignore_errors=True)
            surplus -= 1


def roll_back(target: str | os.PathLike[str]) -> Path:
    """Point the serving folder back at the version it replaced last (atomically); return it."""
    target = Path(target)
    current = live_version(target)
    if not target.is_symlink() or current is None:
        raise PromotionError(f"{target} was never promoted by the feedback loop: nothing to undo")
    versions = versions_dir(target)
    previous: str | None = None
    for line in (versions / HISTORY_FILE).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("version") == current.name:
            previous = record.get("previous")
    if not previous or not (versions / previous).is_dir():
        raise PromotionError(f"the version before {current.name} is not kept any more")
    _point(target, versions / previous)
    _append_history(versions, {"version": previous, "promoted": _stamp(), "previous": current.name})
    return versions / previous
