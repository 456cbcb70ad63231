"""Writing files without destroying anyone's: through a temporary name beside the target, renamed into place only
when complete, with the permissions a plain ``open()`` would give, and never over a file that appeared meanwhile.

Used by the CLI, the nodes that write videos, the quality report and the tiny kit. ``write_beside(target, writer,
replace)`` is the one entry point; ``check_writable(target)`` says before any long work whether it can succeed.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional


class TargetExistsError(FileExistsError):
    """The target appeared while it was being written; nothing was replaced."""


TEMP_NAME_EXTRA = 16          # what write_beside's temporary name adds to the target's name (a dot, ".", the
                              # random part and ".tmp")
MIN_FREE_BYTES = 64 << 20     # a video needs room; refuse a folder with less than this free before starting


class NotWritableError(ValueError):
    """The target cannot be written (folder not writable, name too long, disk full); the message says why."""


def check_writable(target: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """Raise ``NotWritableError`` unless ``write_beside(target, ...)`` can create its temporary file beside
    ``target``: the nearest existing folder accepts a new file (tried for real), the names fit the file system, and
    ``min_free_bytes`` are free there."""
    target = Path(target)
    folder = next((p for p in target.parents if p.exists()), Path("."))
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        name_max = 255
    for part in target.relative_to(folder).parts:
        limit = name_max - (TEMP_NAME_EXTRA if part == target.name else 0)   # the file's temporary name is longer
        if len(os.fsencode(part)) > limit:
            raise NotWritableError(f"{target}: the name {part[:40]}... is too long for the file system "
                                   f"({len(os.fsencode(part))} bytes; at most {limit}); choose a shorter name")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        why = "is full" if err.errno == errno.ENOSPC else "does not accept new files" if err.errno in (
            errno.EACCES, errno.EPERM, errno.EROFS) else f"cannot be written ({err.strerror})"
        raise NotWritableError(f"{folder} {why}; choose another output folder") from None
    free = shutil.disk_usage(folder).free
    if free < min_free_bytes:
        raise NotWritableError(f"{folder} has only {free / 2**20:.0f} MB free; free some space (at least "
                               f"{min_free_bytes / 2**20:.0f} MB) or choose another output folder")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_umask_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux), else set and restored under
    a lock (a file another thread creates meanwhile gets the usual 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (0644 under the usual 022)."""
    return 0o666 & ~_umask()


def write_beside(target: Path, writer: Callable[[Path], object], replace: bool = False,
                 digest: bool = False) -> Optional[str]:
    """Write ``target`` through ``writer(temp_path)`` (a temporary dot-name beside it, same suffix, so writers that
    pick the format from the suffix work), then rename it into place. Returns the file's SHA-256 with ``digest``
    (read back once; a video can be large, so only when asked), else None.

    replace=False never overwrites: a target that exists (or appears meanwhile) raises ``TargetExistsError`` and
    the temporary file is removed. On any error the target is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        os.chmod(tmp, file_mode())
        hexdigest = sha256(tmp) if digest else None
        _publish(tmp, target, replace)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    return hexdigest


def _publish(tmp: Path, target: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``target``; without ``replace``, never over a file that appeared meanwhile."""
    if replace:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # fails when the target exists: no window in which a new file could be replaced
    except FileExistsError:
        raise TargetExistsError(f"{target} (appeared while it was being written)") from None
    except OSError:  # no hard links on this file system
        if os.path.lexists(target):
            raise TargetExistsError(f"{target} (appeared while it was being written)") from None
        os.replace(tmp, target)
