"""SteadyDancer Quality Report: a result measured against what SteadyDancer promises (first frame = the photo, pose
following, identity, smoothness, colour over time), one call into ``steadydancer_core.quality_report``.

The frames come from DecodeVideo: its VIDEO (read from the written mp4 one chunk at a time when ``output`` is
``file``, so host memory stays flat in the video's length) or its IMAGE frames. The sampler's LATENT gives the
photo exactly as the video started from and where the segments start; AlignPose's ``aligned_pose`` the driving
poses and the photo's pose; the model its CLIP vision encoder.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from .. import steadydancer_core as sd
from ..steadydancer_core.option_tables import QUALITY
from . import comfy_bridge as bridge
from .pose_nodes import uint8_to_frames
from .types import ALIGNED_POSE_TYPE, LATENT_FPS_KEY, LATENT_RESULT_KEY, MODEL_TYPE
from .widgets import widgets

CATEGORY = "SteadyDancer"


class QualityReport:
    """Measures a SteadyDancer video: a plot over time, the numbers as JSON and one line under the node."""

    CATEGORY = CATEGORY
    FUNCTION = "report"
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("plot", "report_json")
    OUTPUT_TOOLTIPS = ("The report as a picture: curves over time, segment boundaries, the worst frames.",
                       "Every number of the report as JSON (per frame and summarised).")
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Measures the video against what SteadyDancer promises: frame 0 against the photo, how well the body "
        "follows the driving poses (DWPose on the frames), identity (CLIP similarity to the photo), background "
        "flicker and glitches, and colour drift over time with the segment boundaries marked. Connect DecodeVideo's "
        "video (or frames), the sampler's latent, AlignPose's aligned_pose and the model; each missing input "
        "leaves its measures out and says so. With a video written by DecodeVideo (output 'file') the report's JSON "
        "and PNG are written beside it.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {**widgets(QUALITY)},
            "optional": {
                "video": ("VIDEO", {"tooltip": "The video to measure (DecodeVideo's video; read from its file "
                                               "chunk by chunk)."}),
                "frames": ("IMAGE", {"tooltip": "Or the frames to measure (DecodeVideo's frames)."}),
                "latent": ("LATENT", {"tooltip": "The sampler's latent: the photo the video started from, the "
                                                 "segments and the frame rate."}),
                "photo": ("IMAGE", {"tooltip": "The photo, when no sampler latent is connected."}),
                "aligned_pose": (ALIGNED_POSE_TYPE, {"tooltip": "AlignPose's aligned poses: pose following and the "
                                                                "start gap."}),
                "model": (MODEL_TYPE, {"tooltip": "The SteadyDancer model: its CLIP vision encoder measures "
                                                  "identity."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def report(self, identity_every=QUALITY.default("identity_every"), video=None, frames=None, latent=None,
               photo=None, aligned_pose=None, model=None, unique_id=None):
        result = latent.get(LATENT_RESULT_KEY) if latent is not None else None
        source = bridge.video_source(video) if video is not None else None
        if source is None and video is not None:
            frames = bridge.video_components(video)[0]
        if source is None and frames is None:
            raise ValueError("SteadyDancer Quality Report needs the video: connect DecodeVideo's video (or frames).")
        if result is None and photo is None:
            raise ValueError("SteadyDancer Quality Report needs the photo: connect the sampler's latent (or the "
                             "photo).")
        settings = sd.QualitySettings(identity_every=QUALITY["identity_every"].check(identity_every))
        progress = bridge.StepProgress(1, unique_id)
        pose_models = _pose_models(aligned_pose)
        # the several-GPU model keeps CLIP vision in its worker processes: no encoder here, and nothing started
        clip = model.image_encoder if model is not None else None
        with model.use("image_encoder") if clip is not None else contextlib.nullcontext():
            report = sd.quality_report(
                result.photo if result is not None else photo[0], source if source is not None else frames,
                aligned_pose.aligned if aligned_pose is not None else None,
                clip=clip, pose_extractor=pose_models,
                photo_pose=aligned_pose.reference if aligned_pose is not None else None,
                segments=result.segments if result is not None else (),
                fps=float(latent.get(LATENT_FPS_KEY)) if latent is not None and latent.get(LATENT_FPS_KEY) else None,
                settings=settings, label=Path(str(source)).name if isinstance(source, (str, Path)) else "",
                progress=lambda done, total: progress(done, total or done), should_cancel=bridge.interrupted)
        picture = report.plot()
        lines = [report.summary_line()]
        if model is not None and clip is None:
            lines.append("identity not measured: the several-GPU model keeps CLIP vision in its workers; connect a "
                         "Load SteadyDancer Model's model to measure identity")
        if isinstance(source, (str, Path)) and bridge.in_output_directory(source):
            try:
                written = sd.write_report(report, source, picture=picture)
                lines.append("written beside the video: " + ", ".join(p.name for p in written))
            except FileExistsError as err:
                lines.append(f"not written: {err}")
        plot = uint8_to_frames(picture[None])
        return {"result": (plot, report.to_json()), "ui": {"text": ["\n".join(lines)]}}


def _pose_models(aligned_pose):
    """The pose models AlignPose used (DWPose for the generated frames), or None without aligned poses."""
    if aligned_pose is None or aligned_pose.models is None:
        return None
    models = aligned_pose.models
    if models.loaded is not None:
        return models.loaded
    from .. import pose as pose_api
    from .pose_nodes import pose_providers

    return pose_api.load_models(models.detector_path, models.estimator_path, person=models.person,
                                providers=pose_providers())


NODE_CLASS_MAPPINGS = {"SteadyDancerQualityReport": QualityReport}
NODE_DISPLAY_NAME_MAPPINGS = {"SteadyDancerQualityReport": "SteadyDancer Quality Report"}
