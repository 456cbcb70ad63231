"""YOLOX person detector (``yolox_l.onnx``): letterbox preprocessing, batched inference, decoding, NMS.

Model signature (Megvii YOLOX export, as comfyui_controlnet_aux uses it): input ``images``
[N, 3, 640, 640] raw 0..255 pixels in the order received (RGB here, as in the official pipeline),
output ``output`` [N, A, 5 + C] with A = sum((640/s)^2 for s in 8, 16, 32) anchors; per anchor raw
box offsets (x, y, log w, log h), sigmoid objectness, C sigmoid class scores.

Thresholds follow the official SteadyDancer configuration: class-aware candidates, person score
> 0.5, NMS IoU 0.65 (detector), then person NMS IoU 0.7; boxes sorted by descending score.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .onnx_runtime import OnnxModelError, Signature, get_session, run_batched, signature

STRIDES = (8, 16, 32)
PAD_VALUE = 114
PERSON_CLASS = 0


@dataclass(frozen=True)
class DetectorConfig:
    score_threshold: float = 0.5      # person box score (objectness * class)
    nms_iou: float = 0.65             # detector NMS
    person_nms_iou: float = 0.7       # second, person NMS of the official wholebody code

    def __post_init__(self) -> None:
        for name in ("score_threshold", "nms_iou", "person_nms_iou"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"DetectorConfig.{name} must be in [0, 1], got {v}")


def letterbox(image: np.ndarray, input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep-ratio resize (bilinear) into the top-left of a 114-padded canvas.

    Returns (uint8 [h, w, 3], per-axis factors (new_w / w, new_h / h) used to map boxes back).
    """
    h, w = image.shape[:2]
    f = min(input_hw[0] / h, input_hw[1] / w)
    nh, nw = max(1, min(int(h * f + 0.5), input_hw[0])), max(1, min(int(w * f + 0.5), input_hw[1]))
    out = np.full((input_hw[0], input_hw[1], 3), PAD_VALUE, dtype=np.uint8)
    out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, np.array([nw / w, nh / h, nw / w, nh / h])


def _grids(input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    grids, strides = [], []
    for s in STRIDES:
        gh, gw = input_hw[0] // s, input_hw[1] // s
        xv, yv = np.meshgrid(np.arange(gw), np.arange(gh))
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(np.full((gh * gw, 1), s))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, pixel_offset: float = 0.0) -> np.ndarray:
    """Greedy NMS, highest score first; returns kept indices in descending score order."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + pixel_offset) * (y2 - y1 + pixel_offset)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + pixel_offset)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + pixel_offset)
        inter = w * h
        with np.errstate(invalid="ignore", divide="ignore"):
            ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(ovr > iou)]
    return np.asarray(keep, dtype=np.int64)


def decode(output: np.ndarray, input_hw: tuple[int, int], factor: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """One image's raw output [A, 5 + C] -> person boxes [K, 5] (x1, y1, x2, y2, score) in image pixels."""
    grid, stride = _grids(input_hw)
    if output.shape[0] != grid.shape[0] or output.shape[1] < 6:
        raise OnnxModelError(f"detector output has shape {output.shape}, expected [{grid.shape[0]}, 5 + classes] "
                             f"for a YOLOX model with input {input_hw}: use yolox_l.onnx (or another YOLOX export).")
    xy = (output[:, :2] + grid) * stride
    wh = np.exp(output[:, 2:4]) * stride
    cls = output[:, 5:]
    label = np.argmax(cls, axis=1)
    score = output[:, 4] * cls[np.arange(cls.shape[0]), label]
    m = (label == PERSON_CLASS) & (score > cfg.score_threshold)
    if not m.any():
        return np.zeros((0, 5), np.float32)
    boxes = np.concatenate([xy[m] - wh[m] / 2, xy[m] + wh[m] / 2], axis=1) / factor
    score = score[m]
    keep = nms(boxes, score, cfg.nms_iou)
    boxes, score = boxes[keep], score[keep]
    keep = nms(boxes, score, cfg.person_nms_iou, pixel_offset=1.0)
    return np.concatenate([boxes[keep], score[keep, None]], axis=1).astype(np.float32)


class PersonDetector:
    """YOLOX ONNX person detector; ``detect(images)`` batches across images when the model allows."""

    def __init__(self, path, providers: Sequence[str] | None = None, cfg: DetectorConfig = DetectorConfig(),
                 batch_size: int = 8):
        self.path = str(path)
        self.session = get_session(path, providers)
        self.sig: Signature = signature(self.session, path)
        h, w = self.sig.input_shape[2:]
        self.input_hw = (h or 640, w or 640)
        self.cfg = cfg
        self.batch_size = batch_size

    def detect(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """RGB uint8 images -> per image float32 [K, 5] person boxes (x1, y1, x2, y2, score), best first."""
        if not images:
            return []
        boxed = [letterbox(im, self.input_hw) for im in images]
        batch = np.stack([b.transpose(2, 0, 1) for b, _ in boxed]).astype(np.float32)
        out = run_batched(self.session, self.sig, batch, self.batch_size)[0]
        if out.ndim != 3:
            raise OnnxModelError(f"{self.path}: detector output has shape {out.shape}, expected [N, anchors, 5 + classes].")
        return [decode(out[i], self.input_hw, f, self.cfg) for i, (_, f) in enumerate(boxed)]
