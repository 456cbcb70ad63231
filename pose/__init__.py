"""Pose pipeline (numpy / OpenCV / onnxruntime): DWPose extraction, official alignment, rendering, augmentation.

Never imports ComfyUI or torch (an already imported torch is asked whether a GPU is present). Images are numpy uint8 [H, W, 3] RGB; keypoints are normalised
(x / W, y / H) float32 (see ``pose.types``).

Public API
----------
``extract(frames, detector_path, estimator_path, person="highest", batch_size=8, no_person="hold",
          providers=None, flip_test=True, progress=None) -> PoseSequence``
    Poses of a driving video. ``frames`` is any iterable (a generator is consumed ``batch_size``
    frames at a time: only keypoints are kept). ``person``: "highest" (detector score, the official
    choice), "largest" (box area) or "all" (multi-person conditioning). Frames with no person:
    ``no_person="hold"`` repeats the nearest earlier pose, ``"empty"`` draws nothing; their indices
    are in ``PoseSequence.missing_frames`` / ``filled_frames``. Detection and estimation are batched
    across frames when the ONNX model has a dynamic batch dimension.
``extract_reference(photo, detector_path, estimator_path, ...) -> (PoseFrame, resized_photo)``
    The photo resized as the official code does (``reference_size``: ~1024*576 pixels, multiples
    of 16) and its pose. Raises ``NoPersonError`` (a ValueError naming the fix) when nobody is found.
``align(reference: PoseFrame, driving: PoseSequence, scale_fallback="official") -> AlignedPoses``
    The official retarget: scales from the photo vs the first driving frame, per-frame re-proportioning
    about the neck, fixed offset. ``AlignedPoses.frames`` are normalised to ``canvas_hw`` (2x the
    resized photo). ``scale_fallback="visible"`` replaces scales measured on invisible points
    (upper-body photos) by the mean of the others. ``iter_align`` streams.
``render_frames(frames, canvas_hw, output_hw=None, draw_face=False) -> Iterator[np.ndarray]``
    Official drawing (pixel-identical to the official frames), RGB uint8; optional area resize.
``augment_frames(frames, seed) -> Iterator[PoseFrame]`` / ``augment(frames, seed)`` (with the draws)
    The official negative-condition jitter (per-frame scale and aspect about the neck), seeded.
``to_openpose_json(poses) -> list[dict]`` / ``from_openpose_json(data, person="highest", no_person="hold")``
    PoseSequence <-> OpenPose JSON (the ``POSE_KEYPOINT`` of comfyui_controlnet_aux and other packs): pixel
    coordinates written, pixels or normalised read, BODY_25 and 68/70-point faces read (``openpose_json.py``).
``prepare(photo, driving, models, augment_seed=, canvas=, scale_fallback=) -> PreparedPoses``
    The whole pose preparation the nodes, the CLI and the demo share: the photo's pose detected, the driving
    poses aligned to it, the canvas chosen (``CANVAS_MODES``), the negatives augmented; ``.sources()`` renders on
    demand (``prepare.py``).
``pose_sources(aligned, seed, output_hw=None) -> (positive, negative)``
    The same frames rendered on demand: ``len()`` and ``frames(start, stop)`` -> uint8 [n, H, W, 3],
    pixel-identical to rendering everything up front (only keypoints are held).

Typical use::

    ref_pose, photo_resized = pose.extract_reference(photo, det, est)
    driving = pose.extract(video_frames, det, est)
    aligned = pose.align(ref_pose, driving)
    positive = pose.render_frames(aligned.frames, aligned.canvas_hw)
    negative = pose.render_frames(pose.augment_frames(aligned.frames, seed), aligned.canvas_hw)

Model files: ``yolox_l.onnx`` (person detector) and ``dw-ll_ucoco_384.onnx`` (DWPose), the files
comfyui_controlnet_aux uses; other YOLOX / RTMPose-SimCC exports with the same signatures (fixed or
dynamic batch, float16) work too. CUDA is used when onnxruntime-gpu is installed and a GPU is present;
``providers=CPU_ONLY`` keeps onnxruntime on the CPU (see ``pose.onnx_runtime``); ``ORT_GPU_FOR_CUDA`` names the
onnxruntime-gpu releases built for each CUDA major version.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import numpy as np

from .align import (
    SCALE_FALLBACKS,
    AlignedPoses,
    Aligner,
    AlignScales,
    NoPersonError,
    align,
    iter_align,
    reference_size,
    resize_reference,
)
from .augment import AugmentDraw, augment, augment_frames
from .onnx_runtime import CPU_ONLY, ORT_GPU_FOR_CUDA
from .openpose_json import OpenPoseJSONError, from_openpose_json, to_openpose_json
from .prepare import CANVAS_MODES, PREPARE_DEFAULTS, PreparedPoses, missing_note, output_size, prepare
from .render import render, render_frames
from .sources import RenderedFrames, pose_sources
from .types import PoseFrame, PoseSequence
from .wholebody import MISSING_MODES, PERSON_MODES, WholeBody

__all__ = [
    "AlignedPoses", "Aligner", "AlignScales", "AugmentDraw", "NoPersonError", "PoseFrame", "PoseSequence",
    "WholeBody", "PERSON_MODES", "MISSING_MODES", "align", "augment", "augment_frames", "extract",
    "extract_reference", "iter_align", "load_models", "reference_size", "render", "render_frames",
    "resize_reference", "RenderedFrames", "pose_sources", "CPU_ONLY", "ORT_GPU_FOR_CUDA",
    "OpenPoseJSONError", "from_openpose_json", "to_openpose_json",
    "CANVAS_MODES", "PREPARE_DEFAULTS", "SCALE_FALLBACKS", "PreparedPoses", "missing_note", "output_size", "prepare",
]


def load_models(detector_path, estimator_path, person: str = PERSON_MODES[0], providers: Sequence[str] | None = None,
                batch_size: int = 8, flip_test: bool = True) -> WholeBody:
    """Detector + estimator (onnxruntime sessions are cached per file)."""
    return WholeBody.load(detector_path, estimator_path, person=person, providers=providers,
                          batch_size=batch_size, flip_test=flip_test)


def extract(frames: Iterable[np.ndarray], detector_path, estimator_path, person: str = PERSON_MODES[0],
            batch_size: int = 8, no_person: str = MISSING_MODES[0], providers: Sequence[str] | None = None,
            flip_test: bool = True, progress: Callable[[int], None] | None = None) -> PoseSequence:
    from .wholebody import extract as _extract

    model = load_models(detector_path, estimator_path, person, providers, batch_size, flip_test)
    return _extract(frames, model, batch_size=batch_size, no_person=no_person, progress=progress)


def extract_reference(photo: np.ndarray, detector_path, estimator_path, person: str = PERSON_MODES[0],
                      providers: Sequence[str] | None = None, flip_test: bool = True) -> tuple[PoseFrame, np.ndarray]:
    from .wholebody import extract_reference as _extract_reference

    model = load_models(detector_path, estimator_path, person, providers, 1, flip_test)
    return _extract_reference(photo, model)
