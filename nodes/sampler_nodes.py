"""SteadyDancerSampler: photo + pose frames + prompt -> LATENT, one call into ``steadydancer_core.generate``.

The LATENT dict it returns holds ComfyUI's ``samples``: the raw Wan 2.1 latent of the whole video
([1, 16, 1 + (T - 1) / 4, H/8, W/8], ``to_raw_latent``; long videos: the segments' latents assembled), so ComfyUI's
VAE Decode reads it; plus the keys in ``types.LATENT_KEYS``: ``steadydancer_result`` (the core GenerationResult
DecodeVideo needs: every segment, first-frame mode, the photo), ``steadydancer_report`` (adjusted values, shown in
the UI) and ``steadydancer_fps`` (the driving poses' frame rate; IMAGE pose frames have none: Wan's 16).
"""
from __future__ import annotations

import time
import weakref

from .. import pose as pose_api
from .. import steadydancer_core as sd
from ..steadydancer_core import PHOTO, SAMPLER, WAN_FPS
from . import comfy_bridge as bridge
from .photo_input import PHOTO_MASK_INPUT, composite_with_mask
from .pose_nodes import align_to_photo, driving_from_keypoints
from .reports import log_phase, sampler_report
from .sampler_options import BASIC, OPTIONS, SteadyDancerSamplerOptions, expert_values, old_inputs
from .types import (ALIGNED_POSE_TYPE, KEYPOINT_TYPE, LATENT_FPS_KEY, LATENT_REPORT_KEY, LATENT_RESULT_KEY,
                    MODEL_TYPE, SAMPLER_OPTIONS_TYPE)
from .widgets import widgets

CATEGORY = "SteadyDancer"


class SteadyDancerSampler:
    """Generates the video latent: the photo is frame 0, the body follows the pose frames."""

    CATEGORY = CATEGORY
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    DESCRIPTION = (
        "SteadyDancer sampling: the photo becomes frame 0 and the body follows the poses. Text guidance (text_cfg) "
        "plus pose guidance against the negative poses (pose_cfg). Long videos are made in overlapping segments "
        "that keep the photo as identity reference. Expert settings (negative prompt, guidance window, solver, "
        "first_frame, segments, step cache, VAE tiling) are on the optional SteadyDancer Sampler Options node."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE,),
                "photo": ("IMAGE", {"tooltip": "The photo; it becomes the first frame."}),
                **widgets(SAMPLER, level="basic"),
                **widgets(PHOTO),
            },
            "optional": {
                "aligned_pose": (ALIGNED_POSE_TYPE, {"tooltip": (
                    "Aligned poses from AlignPose (compact keypoints): the pose frames are rendered one segment at "
                    "a time, so memory does not grow with the video's length. Used instead of the IMAGE inputs.")}),
                "positive_pose": ("IMAGE", {"tooltip": (
                    "Pose frames as images (AlignPose with image_outputs = all_frames, or another preprocessor); "
                    "used when aligned_pose is not connected.")}),
                "negative_pose": ("IMAGE", {"tooltip": "Augmented pose frames for pose guidance, with positive_pose."}),
                "pose_keypoint": (KEYPOINT_TYPE, {"tooltip": (
                    "Driving poses as OpenPose JSON (POSE_KEYPOINT, e.g. comfyui_controlnet_aux's DWPose), aligned "
                    "here to the photo with AlignPose's defaults; connect it to AlignPose instead to choose the "
                    "alignment settings. Used instead of the other pose inputs.")}),
                "sigmas": ("SIGMAS", {"tooltip": "Custom sigmas (overrides steps and shift)."}),
                "photo_mask": PHOTO_MASK_INPUT,
                "options": (SAMPLER_OPTIONS_TYPE, {"tooltip": (
                    "Expert settings from a SteadyDancer Sampler Options node (negative prompt, guidance window, "
                    "solver, first_frame, long-video segments, step cache, VAE tiling); unconnected = their "
                    "defaults.")}),
            },
            # api_prompt: the prompt as queued, to honour the expert options older workflows set on the sampler
            "hidden": {"unique_id": "UNIQUE_ID", "api_prompt": "PROMPT"},
        }

    @classmethod
    def declared_inputs(cls) -> set:
        spec = cls.INPUT_TYPES()
        return {name for section in ("required", "optional", "hidden") for name in spec.get(section, {})}

    def sample(self, model, photo, positive_pose=None, negative_pose=None, sigmas=None, unique_id=None,
               aligned_pose=None, pose_keypoint=None, photo_mask=None, background=PHOTO.default("background"),
               options=None, api_prompt=None, **values):
        """``values``: the sampler's own options by name (the basic rows of ``SAMPLER``); expert ones given here
        (Python callers, older prompts) count as the sampler's old inputs. ``options``: a ``SamplerOptions``."""
        started = time.monotonic()
        unknown = sorted(set(values) - set(BASIC.names) - set(OPTIONS.names))
        if unknown:
            raise TypeError(f"SteadyDancerSampler has no option {', '.join(unknown)}; known: "
                            f"{', '.join(BASIC.names + OPTIONS.names)}")
        old = {**old_inputs(api_prompt, unique_id, self.declared_inputs()),
               **{k: v for k, v in values.items() if k in OPTIONS}}
        expert, old_note = expert_values(options, old)
        basic = {k: v for k, v in values.items() if k in BASIC}
        if photo.shape[0] != 1:
            raise ValueError(f"SteadyDancerSampler needs one photo, got a batch of {photo.shape[0]} images; pick one "
                             "(e.g. with an ImageFromBatch node).")
        photo, photo_note = composite_with_mask(photo, photo_mask, background, "SteadyDancerSampler")
        notes = [old_note] if old_note else []
        if pose_keypoint is not None:
            if aligned_pose is not None or positive_pose is not None or negative_pose is not None:
                raise ValueError("SteadyDancerSampler: pose_keypoint is connected together with another pose input; "
                                 "connect only one of aligned_pose, pose_keypoint, positive_pose + negative_pose.")
            # aligned to the photo at its own size, as AlignPose does: prepare() resizes it exactly once
            aligned_pose, _ = align_to_photo(photo, driving_from_keypoints(pose_keypoint))
            notes.append(aligned_pose.report)
        photo = official_size(photo)
        fps = aligned_pose.fps if aligned_pose is not None else WAN_FPS
        positive_pose, negative_pose = pose_inputs(aligned_pose, positive_pose, negative_pose)
        settings = sd.GenerationSettings(**basic, **expert, preview=bridge.previews_enabled(),
                                         sigmas=None if sigmas is None else sigmas.detach().float().cpu())
        release_previous_result(unique_id)
        progress = bridge.JobProgressBar(unique_id)
        try:
            result = sd.generate(model, photo, positive_pose, negative_pose, settings, progress=progress,
                                 should_cancel=bridge.interrupted, spill_dir=bridge.temp_directory())
        except sd.Cancelled:
            bridge.raise_if_interrupted()
            raise
        _previous_results[unique_id] = weakref.ref(result)
        notes = ([photo_note] if photo_note else []) + notes
        report = "; ".join(str(n) for n in notes + list(result.notices))
        latent = {"samples": sd.to_raw_latent(result.latent), LATENT_RESULT_KEY: result, LATENT_REPORT_KEY: report,
                  LATENT_FPS_KEY: float(fps)}
        text = sampler_report(result, settings, float(fps), time.monotonic() - started, len(positive_pose), notes)
        log_phase("SteadyDancer Sampler", text)
        return {"result": (latent,), "ui": {"text": [text]}}


def official_size(photo):
    """The photo (IMAGE [1, H, W, 3]) resized as the official preprocessing resizes it (``pose.resize_reference``),
    the photo AlignPose aligns to and the CLI and the Python API generate from, so all three make the same video."""
    from .pose_nodes import frames_to_uint8, uint8_to_frames

    return uint8_to_frames(pose_api.resize_reference(frames_to_uint8(photo)[0])[None])


# the last result of each sampler node (by node id), so a new run of that node removes the decoded segments the
# previous run left in the temp folder (its output is being replaced; a result that is gone is simply skipped)
_previous_results: dict = {}


def release_previous_result(unique_id) -> None:
    ref = _previous_results.pop(unique_id, None)
    result = ref() if ref is not None else None
    if result is not None and result.decoded is not None:
        result.decoded.close()


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


NODE_CLASS_MAPPINGS = {"SteadyDancerSampler": SteadyDancerSampler,
                       "SteadyDancerSamplerOptions": SteadyDancerSamplerOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"SteadyDancerSampler": "SteadyDancer Sampler",
                              "SteadyDancerSamplerOptions": "SteadyDancer Sampler Options"}
