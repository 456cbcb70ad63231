"""Pose containers shared by extraction, alignment, augmentation and rendering.

Coordinates are always normalised to the image they refer to (x / W, y / H), float32, in the
OpenPose-18 body layout (0 nose, 1 neck, 2 R-shoulder, ... 17 L-ear) with two 21-point hands and a
68-point face per person.

Conventions (those of the official SteadyDancer preprocessing):
  * body points keep real coordinates even when not visible; visibility is ``body_visible``;
  * hand / face points below the keypoint threshold are exactly (-1, -1);
  * ``hands[n, 0]`` is person n's COCO *left* hand (attached to body point 7, L-wrist),
    ``hands[n, 1]`` its right hand (attached to body point 4, R-wrist).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import numpy as np

NUM_BODY = 18
NUM_HAND = 21
NUM_FACE = 68


def _f32(a, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"PoseFrame.{name} must have shape {shape}, got {arr.shape}")
    return arr


@dataclass(frozen=True, eq=False)
class PoseFrame:
    """Poses of N persons in one image (N may be 0: no person).

    bodies        float32 [N, 18, 2]   normalised (x/W, y/H)
    body_visible  bool    [N, 18]      official ``subset != -1`` (score > 0.35)
    hands         float32 [N, 2, 21, 2] (-1, -1) where missing
    faces         float32 [N, 68, 2]    (-1, -1) where missing
    scores        float32 [N]           person (box) score, best first when from extraction
    image_hw      (H, W) of the image the coordinates are normalised to
    """

    bodies: np.ndarray
    body_visible: np.ndarray
    hands: np.ndarray
    faces: np.ndarray
    image_hw: tuple[int, int]
    scores: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        bodies = np.asarray(self.bodies, dtype=np.float32)
        if bodies.ndim != 3 or bodies.shape[1:] != (NUM_BODY, 2):
            raise ValueError(f"PoseFrame.bodies must have shape [N, 18, 2], got {bodies.shape}")
        n = bodies.shape[0]
        object.__setattr__(self, "bodies", bodies)
        vis = np.asarray(self.body_visible, dtype=bool)
        if vis.shape != (n, NUM_BODY):
            raise ValueError(f"PoseFrame.body_visible must have shape {(n, NUM_BODY)}, got {vis.shape}")
        object.__setattr__(self, "body_visible", vis)
        object.__setattr__(self, "hands", _f32(self.hands, (n, 2, NUM_HAND, 2), "hands"))
        object.__setattr__(self, "faces", _f32(self.faces, (n, NUM_FACE, 2), "faces"))
        scores = np.ones(n, np.float32) if self.scores is None else _f32(self.scores, (n,), "scores")
        object.__setattr__(self, "scores", scores)
        h, w = (int(v) for v in self.image_hw)
        if h <= 0 or w <= 0:
            raise ValueError(f"PoseFrame.image_hw must be positive (H, W), got {self.image_hw}")
        object.__setattr__(self, "image_hw", (h, w))

    @property
    def num_persons(self) -> int:
        return int(self.bodies.shape[0])

    @classmethod
    def empty(cls, image_hw: tuple[int, int]) -> "PoseFrame":
        """A frame with no person (renders as a black canvas)."""
        return cls(
            np.zeros((0, NUM_BODY, 2), np.float32),
            np.zeros((0, NUM_BODY), bool),
            np.zeros((0, 2, NUM_HAND, 2), np.float32),
            np.zeros((0, NUM_FACE, 2), np.float32),
            image_hw,
            np.zeros(0, np.float32),
        )

    def select(self, indices: Sequence[int]) -> "PoseFrame":
        """The persons ``indices`` (in that order)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        return PoseFrame(self.bodies[idx], self.body_visible[idx], self.hands[idx], self.faces[idx],
                         self.image_hw, self.scores[idx])

    def replace(self, **changes) -> "PoseFrame":
        values = dict(bodies=self.bodies, body_visible=self.body_visible, hands=self.hands,
                      faces=self.faces, image_hw=self.image_hw, scores=self.scores)
        values.update(changes)
        return PoseFrame(**values)

    # ---- official pose-dict interchange (the format of the official DWposeDetector) -------------
    @classmethod
    def from_official(cls, pose: Mapping, image_hw: tuple[int, int]) -> "PoseFrame":
        """From ``{'bodies': {'candidate' [N*18,2], 'subset' [N,18]}, 'hands' [2N,21,2], 'faces' [N,68,2]}``."""
        cand = np.asarray(pose["bodies"]["candidate"], dtype=np.float32).reshape(-1, NUM_BODY, 2)
        subset = np.asarray(pose["bodies"]["subset"], dtype=np.float32).reshape(-1, NUM_BODY)
        n = cand.shape[0]
        hands = np.asarray(pose["hands"], dtype=np.float32).reshape(2, n, NUM_HAND, 2).transpose(1, 0, 2, 3)
        faces = np.asarray(pose["faces"], dtype=np.float32).reshape(n, NUM_FACE, 2)
        return cls(cand, subset != -1, hands, faces, image_hw)

    def to_official(self) -> dict:
        """The official pose dict (subset holds ``18*n + j`` or -1; hands = all left, then all right)."""
        n = self.num_persons
        index = np.arange(n * NUM_BODY, dtype=np.float32).reshape(n, NUM_BODY)
        return {
            "bodies": {"candidate": self.bodies.reshape(n * NUM_BODY, 2).copy(),
                       "subset": np.where(self.body_visible, index, np.float32(-1))},
            "hands": np.concatenate([self.hands[:, 0], self.hands[:, 1]], axis=0),
            "faces": self.faces.copy(),
        }


@dataclass
class PoseSequence:
    """Per-frame poses of a driving video (keypoints only: cheap to hold for any length).

    frames          one PoseFrame per video frame
    image_hw        (H, W) of the source frames
    missing_frames  indices of frames where no person was found (as detected, before filling)
    filled_frames   indices whose pose was filled in from a neighbour (``no_person="hold"``)
    """

    frames: list[PoseFrame]
    image_hw: tuple[int, int]
    missing_frames: tuple[int, ...] = ()
    filled_frames: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[PoseFrame]:
        return iter(self.frames)

    def __getitem__(self, i: int) -> PoseFrame:
        return self.frames[i]

    @classmethod
    def from_official(cls, poses: Sequence[Mapping], image_hw: tuple[int, int]) -> "PoseSequence":
        return cls([PoseFrame.from_official(p, image_hw) for p in poses], tuple(image_hw))
