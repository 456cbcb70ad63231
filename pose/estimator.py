"""DWPose whole-body estimator (RTMPose, SimCC head; ``dw-ll_ucoco_384.onnx``).

Model signature: input ``input`` [N, 3, H, W] (288x384 for the 384 model, 192x256 for the small one),
outputs ``simcc_x`` [N, 133, 2W] and ``simcc_y`` [N, 133, 2H] (split ratio = bins / input size).

Configured as the official pipeline configures mmpose: box centre/scale with padding 1.25, scale fixed
to the input aspect ratio, affine crop without rotation (bilinear, border 0), the RGB crop swapped
to BGR (the official ``bgr_to_rgb`` on an RGB array) and normalised with the ImageNet RGB statistics,
flip test on (logits averaged with the flipped pass), SimCC decoding by argmax with score
``min(max_x, max_y)`` and locations set to -1 where the score is <= 0.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .onnx_runtime import OnnxModelError, Signature, get_session, run_batched, signature

NUM_KEYPOINTS = 133
BOX_PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
DEFAULT_INPUT_WH = (288, 384)


def _flip_indices() -> np.ndarray:
    """COCO-WholeBody left/right permutation (body, feet, 68-point face, hands)."""
    idx = np.arange(NUM_KEYPOINTS)
    pairs = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),   # body
             (17, 20), (18, 21), (19, 22)]                                          # feet
    face = [(0, 16), (1, 15), (2, 14), (3, 13), (4, 12), (5, 11), (6, 10), (7, 9),
            (17, 26), (18, 25), (19, 24), (20, 23), (21, 22), (31, 35), (32, 34),
            (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
            (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    pairs += [(23 + a, 23 + b) for a, b in face]
    pairs += [(91 + k, 112 + k) for k in range(21)]                                 # hands
    for a, b in pairs:
        idx[a], idx[b] = b, a
    return idx


FLIP_INDICES = _flip_indices()


def box_center_scale(box: np.ndarray, aspect_wh: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre and (padded, aspect-fixed) scale (w, h) of an xyxy box, float32."""
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    center = np.array([(x1 + x2) * 0.5, (y1 + y2) * 0.5], dtype=np.float32)
    w, h = (x2 - x1) * BOX_PADDING, (y2 - y1) * BOX_PADDING
    if w > h * aspect_wh:
        h = w / aspect_wh
    else:
        w = h * aspect_wh
    return center, np.array([w, h], dtype=np.float32)


def crop_matrix(center: np.ndarray, scale: np.ndarray, input_wh: tuple[int, int]) -> np.ndarray:
    """Affine (no rotation) mapping the box to the input: uniform scale W/scale_w, centre -> input centre."""
    w, h = input_wh
    half = np.float32(scale[0] * -0.5)
    src = np.array([center, center + [0, half], center + [half, half]], dtype=np.float32)
    dst = np.array([[w * 0.5, h * 0.5], [w * 0.5, h * 0.5 - w * 0.5], [0.0, h * 0.5 - w * 0.5]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst)


def preprocess(image: np.ndarray, boxes: np.ndarray, input_wh: tuple[int, int]):
    """RGB uint8 image + boxes [K, >=4] -> (crops float32 [K, 3, H, W], centres [K, 2], scales [K, 2])."""
    crops, centers, scales = [], [], []
    for box in boxes:
        c, s = box_center_scale(box, input_wh[0] / input_wh[1])
        crop = cv2.warpAffine(image, crop_matrix(c, s, input_wh), input_wh, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        crop = (crop[:, :, ::-1].astype(np.float32) - MEAN) / STD  # network sees BGR order (official quirk)
        crops.append(crop.transpose(2, 0, 1))
        centers.append(c)
        scales.append(s)
    return np.stack(crops), np.stack(centers), np.stack(scales)


def decode(simcc_x: np.ndarray, simcc_y: np.ndarray, input_wh: tuple[int, int], centers: np.ndarray,
           scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimCC logits [K, 133, bins] -> keypoints [K, 133, 2] in image pixels, scores [K, 133] (float32)."""
    split = simcc_x.shape[-1] / input_wh[0]
    locs = np.stack([np.argmax(simcc_x, -1), np.argmax(simcc_y, -1)], -1).astype(np.float32)
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1)).astype(np.float32)
    locs[scores <= 0] = -1
    locs /= np.float32(split)
    kp = locs / np.array(input_wh, np.float32) * scales[:, None] + centers[:, None] - scales[:, None] / 2
    return kp.astype(np.float32), scores


class WholeBodyEstimator:
    """DWPose ONNX estimator; ``estimate`` batches all boxes of several images together."""

    def __init__(self, path, providers: Sequence[str] | None = None, flip_test: bool = True, batch_size: int = 16):
        self.path = str(path)
        self.session = get_session(path, providers)
        self.sig: Signature = signature(self.session, path)
        h, w = self.sig.input_shape[2:]
        self.input_wh = (w, h) if (h and w) else DEFAULT_INPUT_WH
        self.flip_test = flip_test
        self.batch_size = batch_size
        names = self.sig.output_names
        if "simcc_x" in names and "simcc_y" in names:
            self._order = (names.index("simcc_x"), names.index("simcc_y"))
        elif len(names) == 2:
            self._order = (0, 1)
        else:
            raise OnnxModelError(f"{path}: expected outputs simcc_x and simcc_y, got {list(names)}. "
                                 f"Use a DWPose / RTMPose SimCC export such as dw-ll_ucoco_384.onnx.")

    def _run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = run_batched(self.session, self.sig, crops, self.batch_size)
        sx, sy = outs[self._order[0]], outs[self._order[1]]
        w, h = self.input_wh
        if sx.shape[-1] * h != sy.shape[-1] * w and sy.shape[-1] * h == sx.shape[-1] * w:
            sx, sy = sy, sx  # unnamed outputs in (y, x) order: the x vector has W * split bins
        if sx.ndim != 3 or sy.ndim != 3 or sx.shape[1] != NUM_KEYPOINTS:
            raise OnnxModelError(f"{self.path}: SimCC outputs have shapes {sx.shape}, {sy.shape}; expected "
                                 f"[N, {NUM_KEYPOINTS}, bins]: this is not a COCO-WholeBody (DWPose) model.")
        return sx, sy

    def estimate(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]):
        """Per image: (keypoints float32 [K, 133, 2] in pixels, scores float32 [K, 133])."""
        per = [preprocess(im, b, self.input_wh) for im, b in zip(images, boxes) if len(b)]
        if not per:
            return [(np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros((0, NUM_KEYPOINTS), np.float32))
                    for _ in images]
        crops = np.concatenate([p[0] for p in per])
        centers = np.concatenate([p[1] for p in per])
        scales = np.concatenate([p[2] for p in per])
        k = crops.shape[0]
        if self.flip_test:
            sx, sy = self._run(np.concatenate([crops, crops[..., ::-1]]))
            sx = (sx[:k] + sx[k:, FLIP_INDICES, ::-1]) * 0.5
            sy = (sy[:k] + sy[k:, FLIP_INDICES]) * 0.5
        else:
            sx, sy = self._run(crops)
        kp, sc = decode(sx, sy, self.input_wh, centers, scales)
        out, start = [], 0
        for b in boxes:
            n = len(b)
            out.append((kp[start:start + n], sc[start:start + n]))
            start += n
        return out
