"""The worst frames of one measure, kept as small pictures while the frames stream past."""
from __future__ import annotations

import heapq
import math

import cv2
import numpy as np


def thumbnail(frame: np.ndarray, height: int) -> np.ndarray:
    """uint8 [H, W, 3] (or float in [0, 1]) -> uint8 [height, W * height / H, 3] (area resampling)."""
    h, w = frame.shape[:2]
    width = max(int(round(w * height / h)), 1)
    image = frame if frame.dtype == np.uint8 else (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) if (height, width) != (h, w) else image


class WorstFrames:
    """Keeps the ``k`` highest-scored frames (a NaN score is never kept): ``offer(score, index, frame)``."""

    def __init__(self, k: int, height: int):
        self.k, self.height = int(k), int(height)
        self._heap: list = []          # (score, index, thumbnail), smallest score first

    def offer(self, score: float, index: int, frame: np.ndarray) -> None:
        if self.k == 0 or score is None or math.isnan(score):
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (float(score), int(index), thumbnail(frame, self.height)))
        elif score > self._heap[0][0]:
            heapq.heapreplace(self._heap, (float(score), int(index), thumbnail(frame, self.height)))

    def ranked(self) -> list:
        """[[frame, score], ...], worst first."""
        return [[i, s] for s, i, _ in sorted(self._heap, key=lambda e: (-e[0], e[1]))]

    def thumbnails(self) -> dict:
        return {i: th for _, i, th in self._heap}
