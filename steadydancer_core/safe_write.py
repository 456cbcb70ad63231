"""Writing files without destroying anyone's: through a temporary name beside the target, renamed into place only
when complete, with the permissions a plain ``open()`` would give, and never over a file that appeared meanwhile.

Used by the tiny kit and the CLI. ``write_beside(target, writer, replace)`` is the one entry point.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


class TargetExistsError(FileExistsError):
    """The target appeared while it was being written; nothing was replaced."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (0644 under the usual 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_beside(target: Path, writer: Callable[[Path], object], replace: bool = False) -> str:
    """Write ``target`` through ``writer(temp_path)`` (a temporary dot-name beside it, same suffix, so writers that
    pick the format from the suffix work), then rename it into place. Returns the file's SHA-256.

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
        digest = sha256(tmp)
        _publish(tmp, target, replace)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
    return digest


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
