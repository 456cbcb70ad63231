"""Typed objects passed between the SteadyDancer nodes, and their socket type names.

Socket types (what the UI shows on links):
  STEADYDANCER_MODEL  a ``steadydancer_core.SteadyDancerModel`` (DiT + VAE + umT5 + CLIP-vision + offload plan)
  STEADYDANCER_LORAS  a ``LoraStack`` (LoRA files with strengths, applied by LoadSteadyDancerModel)
  STEADYDANCER_POSE   a ``DrivingPose`` (the driving video's poses, frame rate, and the pose-model settings)
  STEADYDANCER_SAMPLER_OPTIONS  a ``SamplerOptions`` (the sampler's expert settings, from SteadyDancer Sampler
                      Options; unset ones keep their defaults)
  STEADYDANCER_ALIGNED_POSE  an ``AlignedPose`` (keypoints aligned to the photo, canvas, augmentation seed, fps):
                      what AlignPose renders, kept as keypoints so the sampler renders one segment at a time
  POSE_KEYPOINT       OpenPose JSON (comfyui_controlnet_aux's type: a list of {"people": [...], "canvas_width",
                      "canvas_height"} dicts, one per frame); read and written by ``pose.from_openpose_json`` /
                      ``pose.to_openpose_json``
  LATENT              ComfyUI's latent dict; SteadyDancerSampler puts the raw Wan 2.1 latent of the whole video in
                      ``samples`` (ComfyUI's convention, so its VAE Decode works) and adds the keys in ``LATENT_KEYS``.
  VAE                 ComfyUI's VAE object (Load VAE); DecodeVideo can decode with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODEL_TYPE = "STEADYDANCER_MODEL"
LORAS_TYPE = "STEADYDANCER_LORAS"
POSE_TYPE = "STEADYDANCER_POSE"
ALIGNED_POSE_TYPE = "STEADYDANCER_ALIGNED_POSE"
KEYPOINT_TYPE = "POSE_KEYPOINT"
SAMPLER_OPTIONS_TYPE = "STEADYDANCER_SAMPLER_OPTIONS"

# Extra keys SteadyDancerSampler puts into its LATENT output (besides ComfyUI's ``samples``).
LATENT_RESULT_KEY = "steadydancer_result"   # steadydancer_core.GenerationResult: what decoding needs
LATENT_REPORT_KEY = "steadydancer_report"   # str: adjusted values and notices, shown in the UI
LATENT_FPS_KEY = "steadydancer_fps"         # float: the driving poses' frame rate (DecodeVideo's fps 0 uses it)
LATENT_KEYS = (LATENT_RESULT_KEY, LATENT_REPORT_KEY, LATENT_FPS_KEY)


@dataclass(frozen=True)
class LoraStack:
    """LoRA files (absolute paths) with strengths, in the order they are applied."""

    entries: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        for path, strength in self.entries:
            if not isinstance(path, str) or not path:
                raise ValueError(f"LoRA path must be a non-empty string, got {path!r}")
            if not isinstance(strength, (int, float)):
                raise ValueError(f"LoRA strength must be a number, got {strength!r}")

    def plus(self, path: str, strength: float) -> "LoraStack":
        return LoraStack(self.entries + ((path, float(strength)),))


@dataclass(frozen=True)
class SamplerOptions:
    """The sampler's expert settings by name ({option name: value}, each checked by its row in
    ``steadydancer_core.SAMPLER`` / ``VAE_TILING``); the options it does not name keep their defaults."""

    values: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.values, dict) or not all(isinstance(k, str) for k in self.values):
            raise ValueError(f"SamplerOptions.values must be a dict of option names, got {self.values!r}")


@dataclass(frozen=True)
class PoseModels:
    """Where the ONNX pose models are and how detection runs (so AlignPose can detect the photo the same way).

    ``loaded``: the loaded detector + estimator (``pose.load_models``). Holding them here keeps their onnxruntime
    sessions alive exactly as long as ComfyUI caches this output (AlignPose reuses them); nothing else keeps them.
    """

    detector_path: str
    estimator_path: str
    person: str                        # which person drives (ExtractPose's person)
    no_person: str                     # frames with nobody (ExtractPose's no_person)
    loaded: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DrivingPose:
    """The driving video's poses.

    ``sequence`` is a ``pose.types.PoseSequence`` (normalised keypoints per frame plus the source frame size);
    ``fps`` the driving video's frame rate; ``models`` the detector settings used; ``report`` what happened
    (frames without a person, frames skipped) in one or two lines.
    """

    sequence: Any
    fps: float
    models: PoseModels
    report: str = ""

    def __post_init__(self):
        if not self.fps > 0:
            raise ValueError(f"frame rate must be positive, got {self.fps}")


@dataclass(frozen=True)
class AlignedPose:
    """Aligned poses, compact: ``aligned`` is a ``pose.AlignedPoses`` (keypoints normalised to ``aligned.canvas_hw``);
    frames are drawn at ``output_hw`` (None = the canvas); the negative frames are augmented with ``augment_seed``;
    ``fps`` the driving frame rate; ``report`` what happened upstream; ``reference`` the photo's pose and ``models``
    the ``PoseModels`` that found it (the quality report measures the frames with them). A few kilobytes a frame
    instead of the rendered frames' tens of megabytes."""

    aligned: Any
    augment_seed: int
    output_hw: Any = None
    fps: float = 24.0
    report: str = ""
    reference: Any = field(default=None, compare=False, repr=False)
    models: Any = field(default=None, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.aligned)

    @property
    def frame_hw(self) -> tuple:
        return tuple(self.output_hw) if self.output_hw is not None else tuple(self.aligned.canvas_hw)
