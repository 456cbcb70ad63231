"""Every front end's options, by node: the tables the ComfyUI nodes, the CLI and the reference docs are built from.

``LOADER`` (LoadSteadyDancerModel, ``runtime/options.py``), ``PARALLEL`` (the multi-GPU loader and the CLI under
torchrun, ``runtime/parallel_options.py``), ``SAMPLER`` + ``PHOTO`` (SteadyDancerSampler,
``sampling/options.py``), ``EXTRACT`` (ExtractPose), ``ALIGN`` (AlignPose), ``DECODE`` (DecodeVideo, with the VAE
tiling rows of ``sampling/options.py``), ``OUTPUT`` (the CLI's video file) and ``QUALITY`` (the quality report). The
pose vocabularies come from the
``pose`` package (the first word of each is the default). ``TABLES`` lists them in the order the docs show them.
"""
from __future__ import annotations

from .option import Option, OptionTable
from .quality.thresholds import QualitySettings
from .pose_package import pose
from .runtime.options import LOADER
from .runtime.parallel_options import PARALLEL
from .sampling.defaults import WAN_FPS
from .sampling.options import PHOTO, SAMPLER, VAE_TILING
from .video_io import DEFAULT_CRF
from .video_io import FPS_RANGE as VIDEO_FPS_RANGE

__all__ = ["ALIGN", "DECODE", "EXTRACT", "FPS_OPTION_RANGE", "LOADER", "OUTPUT", "PARALLEL", "PHOTO", "QUALITY",
           "SAMPLER", "TABLES", "VAE_TILING"]

# a frame-rate option: 0 (= from the source) or a rate video_io reads and writes
FPS_OPTION_RANGE = (0.0, VIDEO_FPS_RANGE[1])


def _a_rate_or_zero(value) -> str | None:
    return None if value == 0 or value >= VIDEO_FPS_RANGE[0] else f"must be 0 or at least {VIDEO_FPS_RANGE[0]:g}"


EXTRACT = OptionTable("SteadyDancer Extract Pose", [
    Option("person", "choice", pose.PERSON_MODES[0], choices=pose.PERSON_MODES,
           help="Which person drives the motion: the highest detector score (official), the largest box, or all."),
    Option("no_person", "choice", pose.MISSING_MODES[0], choices=pose.MISSING_MODES,
           help="Driving frames without a person: hold the nearest earlier pose, or leave the frame empty."),
    Option("max_frames", "int", 0, minimum=0, maximum=100000, step=1, zero="every frame",
           help="Use at most this many driving frames (0 = all)."),
    Option("target_fps", "float", WAN_FPS, minimum=FPS_OPTION_RANGE[0], maximum=FPS_OPTION_RANGE[1], step=0.01,
           unit="fps", zero="every frame", rule=_a_rate_or_zero,
           help="Resample the driving video to this frame rate before extracting poses (Wan 2.1 was trained on "
                "16 fps, so the motion plays at its real speed); the official scripts keep every frame."),
    Option("images_fps", "float", 24.0, minimum=VIDEO_FPS_RANGE[0], maximum=VIDEO_FPS_RANGE[1], step=0.01,
           unit="fps", fronts=("node",),
           help="Frame rate of the 'images' input. A connected 'video' brings its own frame rate."),
])

ALIGN = OptionTable("SteadyDancer Align Pose to Photo", [
    Option("augment_seed", "seed", pose.PREPARE_DEFAULTS["augment_seed"],
           help="Seed of the negative-pose augmentation (random scale/aspect per frame)."),
    Option("canvas", "choice", pose.PREPARE_DEFAULTS["canvas"], choices=pose.CANVAS_MODES,
           help="2x: pose frames at twice the resized photo, as the official code draws them; 1x: at its size (a "
                "quarter of the memory, for long videos)."),
    Option("scale_fallback", "choice", pose.PREPARE_DEFAULTS["scale_fallback"], choices=pose.SCALE_FALLBACKS,
           help="official: limb scales exactly as the official code; visible: limbs not visible in the photo "
                "(upper-body photos) use the mean scale of the visible ones."),
    Option("image_outputs", "choice", "all_frames", choices=("all_frames", "first_frame"), fronts=("node",),
           help="all_frames: positive_pose / negative_pose hold every rendered frame (memory grows with the video: "
                "about 28 MB per frame and output at the 2x canvas of a 720p photo); first_frame: only frame 0 "
                "(connect aligned_pose to the sampler: it renders one segment at a time)."),
])

_FPS = Option("fps", "float", 0.0, minimum=FPS_OPTION_RANGE[0], maximum=FPS_OPTION_RANGE[1], step=0.01,
              unit="fps", zero="the driving poses' rate", rule=_a_rate_or_zero,
              help="Frame rate of the video (0 = the driving poses' rate: ExtractPose's after target_fps; 16, Wan's, "
                   "for IMAGE pose frames, POSE_KEYPOINT and pose folders).")

DECODE = VAE_TILING.plus("SteadyDancer Decode Video", OptionTable("decode", [
    _FPS,
    Option("output", "choice", "frames", choices=("frames", "file"), fronts=("node",),
           help="frames: the whole video as one IMAGE batch (about width x height x 12 bytes of system RAM per "
                "frame); file: an H.264 mp4 written to the output folder segment by segment (RAM stays at one "
                "segment), only a preview frame as IMAGE."),
    Option("filename_prefix", "text", "SteadyDancer/video", fronts=("node",),
           help="File name prefix in the output folder when output is 'file' (a numbered name is picked; an "
                "existing file is never replaced)."),
]))

OUTPUT = OptionTable("Video file", [
    _FPS,
    Option("crf", "int", DEFAULT_CRF, minimum=0, maximum=51, step=1, fronts=("cli",),
           help="x264 quality of the mp4: lower is better and larger, 0 is lossless."),
])

QUALITY = OptionTable("SteadyDancer Quality Report", [
    Option("report", "bool", False, fronts=("cli",),
           help="After writing --out, measure the video (first frame, pose following, identity, smoothness, colour "
                "over time) and write OUT.quality.json and OUT.quality.png beside it; print its one-line summary."),
    Option("identity_every", "int", QualitySettings().identity_every, minimum=1, maximum=1000, step=1,
           help="Quality report: embed one frame in this many with CLIP for the identity curve (1 = every frame; "
                "the CLIP ViT-H takes seconds per frame on a CPU, milliseconds on a GPU)."),
])

TABLES = (LOADER, PARALLEL, EXTRACT, ALIGN, PHOTO, SAMPLER, DECODE, OUTPUT, QUALITY)
