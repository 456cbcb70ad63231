"""Pose preparation: the photo + the driving poses -> the aligned pose frames and their augmented negatives.

``prepare`` is the one place where the photo's pose is detected, the driving poses are aligned to it (the official
retarget), the canvas is chosen and the negative poses are augmented; the ComfyUI nodes, the CLI and the demo all
call it. Nothing is rendered here: ``PreparedPoses.sources()`` gives the frames rendered on demand.

Vocabularies (the first word of each is the default, the official behaviour):
  ``CANVAS_MODES``     2x: pose frames drawn at twice the resized photo, as the official code; 1x: at its size (a
                       quarter of the pixels)
  ``SCALE_FALLBACKS``  official: limb scales exactly as the official code; visible: limbs not visible in the
                       photo (upper-body photos) use the mean scale of the visible ones
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .align import SCALE_FALLBACKS, AlignedPoses, align
from .sources import RenderedFrames, pose_sources
from .types import PoseFrame, PoseSequence
from .wholebody import MISSING_MODES, WholeBody
from .wholebody import extract_reference as _extract_reference

CANVAS_MODES = ("2x", "1x")
PREPARE_DEFAULTS = {"augment_seed": 0, "canvas": CANVAS_MODES[0], "scale_fallback": SCALE_FALLBACKS[0]}


def output_size(canvas: str, canvas_hw: tuple[int, int]) -> tuple[int, int] | None:
    """The rendered frames' (H, W) for a ``canvas`` mode: None (the official canvas itself) for 2x, half of it for
    1x."""
    if canvas not in CANVAS_MODES:
        raise ValueError(f"canvas must be one of {', '.join(CANVAS_MODES)}, got {canvas!r}")
    return None if canvas == "2x" else (canvas_hw[0] // 2, canvas_hw[1] // 2)


def missing_note(sequence: PoseSequence, no_person: str) -> str:
    """'no person in 3 of 81 frames (held the nearest pose)', or '' when every frame has one."""
    if not sequence.missing_frames:
        return ""
    if no_person not in MISSING_MODES:
        raise ValueError(f"no_person must be one of {', '.join(MISSING_MODES)}, got {no_person!r}")
    how = "held the nearest pose" if no_person == "hold" else "left empty"
    return f"no person in {len(sequence.missing_frames)} of {len(sequence)} frames ({how})"


@dataclass
class PreparedPoses:
    """What ``prepare`` made.

    photo      uint8 [h, w, 3]: the photo resized as the official code does (``reference_size``)
    reference  the photo's pose
    aligned    the driving poses aligned to it, normalised to ``aligned.canvas_hw`` (2x the resized photo)
    augment_seed, output_hw: how the negative poses are augmented and the frames' size (None = the canvas)
    notes      what the user should know (e.g. body points without coordinates)
    """

    photo: np.ndarray
    reference: PoseFrame
    aligned: AlignedPoses
    augment_seed: int
    output_hw: tuple[int, int] | None
    notes: list = field(default_factory=list)

    def sources(self) -> tuple[RenderedFrames, RenderedFrames]:
        """(positive, negative) pose frames rendered on demand (``pose_sources``)."""
        return pose_sources(self.aligned, self.augment_seed, output_hw=self.output_hw)


def prepare(photo: np.ndarray, driving: PoseSequence | Sequence[PoseFrame], models: WholeBody, *,
            augment_seed: int = PREPARE_DEFAULTS["augment_seed"], canvas: str = PREPARE_DEFAULTS["canvas"],
            scale_fallback: str = PREPARE_DEFAULTS["scale_fallback"]) -> PreparedPoses:
    """Detect the photo's pose with ``models`` (``load_models``), align ``driving`` to it and choose the canvas.

    photo: uint8 [H, W, 3] RGB (one photo). augment_seed: seed of the negative-pose augmentation (0..2**64-1).
    canvas: one of ``CANVAS_MODES``; scale_fallback: one of ``SCALE_FALLBACKS``.
    """
    if not isinstance(photo, np.ndarray) or photo.dtype != np.uint8 or photo.ndim != 3 or photo.shape[-1] != 3:
        raise ValueError(f"prepare needs one photo as uint8 [H, W, 3], got "
                         f"{getattr(photo, 'dtype', type(photo).__name__)} {getattr(photo, 'shape', '')}")
    if scale_fallback not in SCALE_FALLBACKS:
        raise ValueError(f"scale_fallback must be one of {', '.join(SCALE_FALLBACKS)}, got {scale_fallback!r}")
    if canvas not in CANVAS_MODES:
        raise ValueError(f"canvas must be one of {', '.join(CANVAS_MODES)}, got {canvas!r}")
    if isinstance(augment_seed, bool) or not isinstance(augment_seed, (int, np.integer)) \
            or not 0 <= augment_seed <= 2 ** 64 - 1:
        raise ValueError(f"augment_seed must be an integer from 0 to 2**64-1, got {augment_seed!r}")
    reference, resized = _extract_reference(photo, models)
    aligned = align(reference, driving, scale_fallback=scale_fallback)
    notes = []
    first = next((f for f in driving if f.num_persons), None)
    blank = 0 if first is None else int((~first.body_visible[0] & (first.bodies[0] == 0).all(-1)).sum())
    if blank and scale_fallback == "official":
        notes.append(f"{blank} body points of the first driving pose have no coordinates, so their limb scales are "
                     "not measurable: set scale_fallback to 'visible'")
    return PreparedPoses(photo=resized, reference=reference, aligned=aligned, augment_seed=int(augment_seed),
                         output_hw=output_size(canvas, aligned.canvas_hw), notes=notes)
