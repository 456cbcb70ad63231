"""Downloads into the user's folder: a name from the server never leads outside it, an existing file is never
replaced, and a download is written under a temporary name beside its target and renamed when complete."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import ComfyError, clean

MAX_SUFFIX = 9999  # name-1 ... name-9999, then the download fails
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(item: dict) -> str:
    """``subfolder/filename`` of an output the server listed, cleaned for printing."""
    return clean("/".join(str(p) for p in (item.get("subfolder"), item.get("filename")) if p), 200)


def download_target(folder: Path, item: dict) -> Path:
    """``folder/<subfolder>/<filename>`` for an output the server listed; a :class:`ComfyError` for any name that
    is absolute, has a ``..`` part, holds control characters or resolves (through links too) outside ``folder``."""
    filename, subfolder = item.get("filename"), item.get("subfolder") or ""

    def refuse(why: str) -> ComfyError:
        return ComfyError(f"refusing to download {shown(item)!r} from the server: {why}")

    if not isinstance(filename, str) or not filename or not isinstance(subfolder, str):
        raise refuse("it has no file name")
    if "\0" in filename + subfolder:
        raise refuse("the name holds a NUL character")
    if _CONTROL.search(filename + subfolder):
        raise refuse("the name holds control characters")
    if len(filename) > 255 or len(subfolder) > 1024:
        raise refuse("the name is too long")
    if re.search(r"[\\/]", filename) or filename in (".", ".."):
        raise refuse("the file name is not a plain name")
    for part in (subfolder, filename):
        if PurePosixPath(part).is_absolute() or PureWindowsPath(part).anchor:
            raise refuse("the name is absolute")
    parts = [p for p in re.split(r"[\\/]", subfolder) if p not in ("", ".")]
    if ".." in parts:
        raise refuse("the subfolder has a '..' part")
    root = Path(folder).resolve()
    target = root.joinpath(*parts, filename)
    if not target.resolve().is_relative_to(root):
        raise refuse(f"it resolves outside {folder}")
    return target


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_new(target: Path, fill) -> Path:
    """Create a new file at ``target``, or at ``target`` with the first free numeric suffix (``name-1.mp4``, ...),
    never over an existing file; returns the path written.

    ``fill(handle)`` writes the content into an open binary file: a temporary ``.part`` file beside the target,
    which is removed whatever happens (an error, Ctrl-C) unless it was complete and got its name.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
        os.chmod(tmp, _file_mode())
        return _claim_name(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _claim_name(tmp: str, target: Path) -> Path:
    """Give the complete file ``tmp`` the first free name of ``target``'s series; never replaces a file."""
    for n in range(MAX_SUFFIX + 1):
        candidate = target if n == 0 else target.with_name(f"{target.stem}-{n}{target.suffix}")
        try:
            os.link(tmp, candidate)  # fails, without replacing anything, when the name is taken
            return candidate
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system: exclusive create, then copy
            try:
                with open(candidate, "xb") as out, open(tmp, "rb") as src:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                return candidate
            except FileExistsError:
                continue
    raise ComfyError(f"{target}: this name and its suffixes -1 ... -{MAX_SUFFIX} are all taken")


def save_new(target: Path, data: bytes) -> Path:
    """:func:`write_new` with bytes already in memory."""
    return write_new(target, lambda handle: handle.write(data))


def download(client, folder: Path, item: dict) -> Path:
    """Stream one listed output into ``folder`` (see :func:`download_target` and :func:`write_new`)."""
    target = download_target(folder, item)
    try:
        return write_new(target, lambda handle: client.view(item, handle))
    except OSError as err:
        raise ComfyError(f"downloading {shown(item)} to {target}: {clean(err)}") from None
    except ComfyError as err:
        raise type(err)(f"downloading {shown(item)} to {target}: {err}") from None
