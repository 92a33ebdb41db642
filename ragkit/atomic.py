"""Atomic file writes: a reader or a crash never observes a half-written file.

Everything ragkit persists (index files, manifests, converted model weights, checkpoints) goes
through here, so that a kill at any moment leaves either the old or the new version on disk.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory entry so a completed rename survives a power loss."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _sibling(target: Path, create: Callable[[Path], None]) -> Path:
    """Create a fresh hidden sibling of ``target`` with ``create`` (a name clash retries).

    Not ``tempfile.mkstemp``/``mkdtemp``: those create mode 0600/0700 whatever the umask, so a
    file renamed over ``target`` would become unreadable to the group and others who could
    read what it replaced (an index built by one user and served by another).
    ``os.open(..., 0o666)`` and ``os.mkdir(..., 0o777)`` let the umask decide, as ``open`` does.
    """
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(errno.EEXIST, "no free temporary name beside", os.fspath(target))


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _settle_mode(tmp: Path, target: Path, default: int) -> None:
    """Give the replacement the permission bits of what it replaces, else ``default``.

    Set after the caller's writer ran, because some writers replace the file they are given:
    safetensors' ``save_file`` leaves 0600 whatever the umask or the file's mode before.
    """
    try:
        mode = _mode(target)
    except FileNotFoundError:
        mode = default
    tmp.chmod(mode)


def _settle_and_sync(folder: Path, folder_mode: int) -> None:
    """Give what a ``fill`` wrote the modes a plain write would, and flush every file.

    One walk for both. ``folder_mode`` is 0777 under the umask; files get it without execute
    bits unless a writer set one (an executable stays executable). Links are left alone: a
    chmod would follow them out of the folder, and what they point at is not this write's.
    """
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(folder_mode)
        elif path.is_file():
            if not _mode(path) & 0o111:
                path.chmod(folder_mode & 0o666)
            with path.open("rb+") as fh:
                os.fsync(fh.fileno())


def checked_file_target(target: str | os.PathLike[str]) -> Path:
    """``target`` as a Path, if a file can be written there; else a one-line OutputPathError.

    Checked before any work, so a command given a folder (or "") as its output fails at once,
    not with a rename error after it has done its work.
    """
    from ragkit.errors import OutputPathError

    text = os.fspath(target)
    if not text.strip():
        raise OutputPathError("the output file path is empty")
    path = Path(text)
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder, not a file")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputPathError(f"cannot write {path}: {path.parent} is a file, not a folder")
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is fsynced and renamed over it.

    The caller writes the file however it likes (``faiss.write_index``, ``save_file`` ...).
    On an exception the temporary file is removed and ``target`` is untouched.
    """
    target = checked_file_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, _create_file)
    default = _mode(tmp)  # 0666 under the umask
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        _settle_mode(tmp, target, default)
        tmp.replace(target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``target`` with ``data`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(first: str | os.PathLike[str], second: str | os.PathLike[str]) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    The only way to replace a directory by a symbolic link (or by another non-empty directory)
    without an instant where neither exists: a plain rename refuses a non-empty directory as
    its destination, so the alternative is two renames with a gap a crash can fall into.
    Returns False where the system cannot exchange (not Linux, an old kernel or C library, a
    file system without support); the caller then falls back to its two-step way.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    renameat2.restype = ctypes.c_int
    if (
        renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
        == 0
    ):
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(first))


def atomic_write_text(target: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Replace ``target`` with ``text`` atomically."""
    atomic_write_bytes(target, text.encode(encoding))


def atomic_directory(target: str | os.PathLike[str], fill: Callable[[Path], None]) -> Path:
    """Build a directory in a temporary sibling with ``fill`` and rename it into place.

    Used for multi-file artefacts (a converted model folder, a checkpoint): the directory
    appears complete or not at all. An existing ``target`` is replaced only after ``fill``
    succeeded; the old copy is moved aside first and removed afterwards.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, lambda path: path.mkdir(mode=0o777))
    default = _mode(tmp)  # 0777 under the umask
    try:
        fill(tmp)
        _settle_and_sync(tmp, default)
        if target.is_dir() and not target.is_symlink():  # a replaced folder keeps its mode
            tmp.chmod(_mode(target))
        old: Path | None = None
        if target.exists():
            if exchange_paths(tmp, target):  # no instant without a complete target
                old = tmp
            else:
                old = target.with_name(f".{target.name}.old-{os.getpid()}")
                target.rename(old)
                tmp.rename(target)
        else:
            tmp.rename(target)
        fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
