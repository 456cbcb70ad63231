"""``DecodedSegments``: the segments ``generate`` already decoded while sampling, kept on disk so that decoding the
result afterwards reads them instead of running the VAE a second time.

A long video is sampled segment by segment, and each segment but the last is decoded during sampling (its last
frames are the next segment's known frames, and its colours are matched to them). Those frames are what the final
video shows, so they are written here, one raw file per segment, and ``iter_decoded`` reads them back one segment
at a time: memory stays at one segment whatever the video's length.

Frames are stored as float16: half the disk of float32 (832x480: 2.4 MB a frame), and the rounding (at most
2.4e-4 in [0, 1]) is a sixteenth of an 8-bit step, so neither a written video nor an IMAGE converted to 8 bits
changes; uint8 would quantise the IMAGE output the nodes hand on. The files live in a folder of their own, created
inside the given directory (ComfyUI's temp folder for the nodes) and removed when this object is garbage-collected,
``close()``d, or the process exits. Nothing outside that folder is ever written or removed. A missing or damaged
file is not an error: that segment is decoded again.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Optional

import numpy as np
import torch

log = logging.getLogger(__name__)

STORE_DTYPE = np.float16
FOLDER_PREFIX = "steadydancer-decoded-"


class DecodedSegments:
    """Decoded frames [n, H, W, 3] in [0, 1] of some of a result's segments, by segment index, on disk."""

    def __init__(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=directory))
        self._shapes: dict = {}
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def __contains__(self, index: int) -> bool:
        return index in self._shapes and self._file(index).is_file()

    def __len__(self) -> int:
        return len(self._shapes)

    def __deepcopy__(self, memo):      # the files are read-only once written: copies of a result share them
        return self

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def _file(self, index: int) -> Path:
        return self.path / f"segment_{index:05d}.f16"

    def put(self, index: int, frames: torch.Tensor) -> bool:
        """Keep ``frames`` [n, H, W, 3] of segment ``index``; False (with a warning) when they could not be
        written (disk full, folder removed): the segment is then decoded again later."""
        if self.closed:
            return False
        data = frames.detach().to(torch.float16).cpu().numpy()
        tmp = self.path / f".segment_{index:05d}.tmp"
        try:
            data.tofile(tmp)
            os.replace(tmp, self._file(index))
        except OSError as err:
            log.warning("could not keep decoded segment %d in %s (%s); it will be decoded again when the video "
                        "is decoded. Free some disk space in that folder to avoid the second decode.",
                        index + 1, self.path, err)
            tmp.unlink(missing_ok=True)
            return False
        self._shapes[index] = tuple(data.shape)
        return True

    def get(self, index: int) -> Optional[torch.Tensor]:
        """Frames [n, H, W, 3] float32 of segment ``index``, or None when they are not (or no longer) kept."""
        shape = self._shapes.get(index)
        if shape is None or self.closed:
            return None
        try:
            data = np.fromfile(self._file(index), dtype=STORE_DTYPE)
        except OSError:
            return None
        if data.size != int(np.prod(shape)):
            return None
        return torch.from_numpy(data.reshape(shape)).float()

    def handover(self) -> tuple:
        """(folder, {index: shape}) for another process to ``adopt``; this object no longer removes the folder (a
        worker process hands its result's segments to the client that shows them)."""
        self._finalizer.detach()
        return str(self.path), {int(i): tuple(int(n) for n in shape) for i, shape in self._shapes.items()}

    @classmethod
    def adopt(cls, folder, shapes: dict) -> "DecodedSegments":
        """The segments a ``handover`` gave, owned (and removed in the end) by the new object."""
        if not Path(folder).name.startswith(FOLDER_PREFIX):
            raise ValueError(f"{folder} is not a folder of decoded segments ({FOLDER_PREFIX}...)")
        store = cls.__new__(cls)
        store.path = Path(folder)
        store._shapes = {int(i): tuple(shape) for i, shape in shapes.items()}
        store._finalizer = weakref.finalize(store, shutil.rmtree, str(store.path), True)
        return store

    def close(self) -> None:
        """Remove the folder and its files now (idempotent)."""
        self._finalizer()
        self._shapes.clear()
