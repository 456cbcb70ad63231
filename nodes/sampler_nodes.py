"""SteadyDancerSampler: photo + pose frames + prompt -> LATENT, one call into ``steadydancer_core.generate``.

The LATENT dict it returns holds ComfyUI's ``samples`` ([1, 16, F, H/8, W/8], the first segment's latent for long
videos) plus the keys in ``types.LATENT_KEYS``: ``steadydancer_result`` (the core GenerationResult DecodeVideo
needs: every segment, first-frame mode, the photo) and ``steadydancer_report`` (adjusted values, shown in the UI).
"""
from __future__ import annotations

from .. import pose as pose_api
from .. import steadydancer_core as sd
from ..steadydancer_core import MAX_SEED, NOISE_SOURCES, SAMPLER
from . import comfy_bridge as bridge
from .types import ALIGNED_POSE_TYPE, LATENT_REPORT_KEY, LATENT_RESULT_KEY, MODEL_TYPE

CATEGORY = "SteadyDancer"


class SteadyDancerSampler:
    """Generates the video latent: the photo is frame 0, the body follows the pose frames."""

    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    DESCRIPTION = (
        "SteadyDancer sampling: text guidance (text_cfg) plus pose guidance against the negative poses (pose_cfg, "
        "active for the step fraction pose_cfg_start..pose_cfg_end). Videos longer than segment_frames are made in "
        "overlapping segments that keep the photo as identity reference."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE,),
                "photo": ("IMAGE", {"tooltip": "The photo; it becomes the first frame."}),
                "prompt": ("STRING", {"default": SAMPLER.prompt, "multiline": True}),
                "negative_prompt": ("STRING", {"default": SAMPLER.negative_prompt,
                                               "multiline": True, "tooltip": "Empty = Wan's default negative prompt."}),
                "steps": ("INT", {"default": SAMPLER.steps, "min": 1, "max": 200}),
                "text_cfg": ("FLOAT", {"default": SAMPLER.text_cfg, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                       "tooltip": "Text guidance scale (1 = off, one pass less)."}),
                "pose_cfg": ("FLOAT", {"default": SAMPLER.pose_cfg, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                       "tooltip": "Pose guidance scale against the negative poses (0 = off, one pass less)."}),
                "pose_cfg_start": ("FLOAT", {"default": SAMPLER.pose_cfg_start, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "Pose guidance starts at this fraction of the steps."}),
                "pose_cfg_end": ("FLOAT", {"default": SAMPLER.pose_cfg_end, "min": 0.0, "max": 1.0, "step": 0.01,
                                           "tooltip": "Pose guidance ends at this fraction of the steps (official 0.4)."}),
                "shift": ("FLOAT", {"default": SAMPLER.shift, "min": 0.0, "max": 100.0, "step": 0.1,
                                    "tooltip": "Flow-matching schedule shift (Wan: 5 for 720p, 3 for 480p)."}),
                "seed": ("INT", {"default": SAMPLER.seed, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
                "solver": (list(sd.SOLVERS), {"default": SAMPLER.solver}),
                "length": ("INT", {"default": SAMPLER.length, "min": 0, "max": 100000, "step": 1, "tooltip": (
                    "Frames to generate (0 = every pose frame). Rounded to 4n+1 with a notice; more than "
                    "segment_frames makes a long video in segments.")}),
                "max_area": ("INT", {"default": SAMPLER.max_area, "min": 64 * 64, "max": 4096 * 4096, "step": 64,
                                     "tooltip": "Pixel area of the video; the photo's aspect ratio is kept "
                                                "(1024*576 = 589824 official, 832*480 = 399360 for 24 GB)."}),
                "first_frame": (list(sd.FIRST_FRAME_MODES), {"default": SAMPLER.first_frame, "tooltip": (
                    "model: official behaviour; latent: the first latent frame is the photo at every step; "
                    "exact: also the decoded frame 0 is the photo, pixel for pixel.")}),
                "segment_frames": ("INT", {"default": SAMPLER.segment_frames, "min": 5, "max": 1001, "step": 4,
                                           "tooltip": "Long video: frames per segment (4n+1)."}),
                "segment_overlap": ("INT", {"default": SAMPLER.segment_overlap, "min": 1, "max": 81, "step": 4, "tooltip": (
                    "Long video: frames each segment takes from the previous one (4n+1).")}),
                "color_correction": ("FLOAT", {"default": SAMPLER.color_correction, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": (
                    "Long video: strength of matching each segment's colours to the first segment (0 = off).")}),
                "noise": (list(NOISE_SOURCES), {"default": SAMPLER.noise, "tooltip": (
                    "cpu: the same video for a seed on every machine; official: noise drawn on the GPU as the "
                    "official code does (a CUDA user gets the official CLI's video for the same seed).")}),
            },
            "optional": {
                "aligned_pose": (ALIGNED_POSE_TYPE, {"tooltip": (
                    "Aligned poses from AlignPose (compact keypoints): the pose frames are rendered one segment at "
                    "a time, so memory does not grow with the video's length. Used instead of the IMAGE inputs.")}),
                "positive_pose": ("IMAGE", {"tooltip": (
                    "Pose frames as images (AlignPose with image_outputs = all_frames, or another preprocessor); "
                    "used when aligned_pose is not connected.")}),
                "negative_pose": ("IMAGE", {"tooltip": "Augmented pose frames for pose guidance, with positive_pose."}),
                "sigmas": ("SIGMAS", {"tooltip": "Custom sigmas (overrides steps and shift)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(self, model, photo, positive_pose=None, negative_pose=None, sigmas=None, unique_id=None,
               aligned_pose=None, **widgets):
        """``widgets``: the sampler options by name (``sampling.options.SAMPLER_OPTIONS``)."""

        if photo.shape[0] != 1:
            raise ValueError(f"SteadyDancerSampler needs one photo, got a batch of {photo.shape[0]} images.")
        positive_pose, negative_pose = pose_inputs(aligned_pose, positive_pose, negative_pose)
        settings = sd.generation_settings(widgets, preview=bridge.previews_enabled(),
                                       sigmas=None if sigmas is None else sigmas.detach().float().cpu())
        progress = bridge.StepProgress(settings.steps, unique_id)
        try:
            result = sd.generate(model, photo, positive_pose, negative_pose, settings,
                                       callback=progress, should_cancel=bridge.interrupted)
        except sd.Cancelled:
            bridge.raise_if_interrupted()
            raise
        report = "; ".join(str(n) for n in result.notices)
        latent = {"samples": result.latent, LATENT_RESULT_KEY: result, LATENT_REPORT_KEY: report}
        text = f"{result.num_frames} frames at {result.width}x{result.height}" + (f"; {report}" if report else "")
        return {"result": (latent,), "ui": {"text": [text]}}


def pose_inputs(aligned_pose, positive_pose, negative_pose):
    """(positive, negative) for ``generate``: lazily rendered sources of ``aligned_pose`` when connected, else the
    IMAGE frames (checked to be a pair)."""
    if aligned_pose is not None:
        return pose_api.pose_sources(aligned_pose.aligned, aligned_pose.augment_seed, output_hw=aligned_pose.output_hw)
    if positive_pose is None or negative_pose is None:
        raise ValueError("SteadyDancerSampler needs poses: connect AlignPose's aligned_pose (or both positive_pose "
                         "and negative_pose IMAGE frames).")
    if positive_pose.shape[0] != negative_pose.shape[0]:
        raise ValueError(f"positive_pose has {positive_pose.shape[0]} frames but negative_pose has "
                         f"{negative_pose.shape[0]}; connect both outputs of the same AlignPose.")
    return positive_pose, negative_pose


NODE_CLASS_MAPPINGS = {"SteadyDancerSampler": SteadyDancerSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"SteadyDancerSampler": "SteadyDancer Sampler"}
