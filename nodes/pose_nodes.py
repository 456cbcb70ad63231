"""ExtractPose and AlignPose: driving video -> poses -> aligned positive / augmented negative pose frames."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import torch

from .. import pose as pose_api
from .. import steadydancer_core as sd
from ..steadydancer_core import PHOTO, WAN_FPS
from ..steadydancer_core import frames_to_uint8 as core_frames_to_uint8
from ..steadydancer_core.option_tables import ALIGN, EXTRACT
from . import comfy_bridge as bridge
from .photo_input import PHOTO_MASK_INPUT, composite_with_mask
from .reports import align_report, extract_report, log_phase
from .types import ALIGNED_POSE_TYPE, KEYPOINT_TYPE, POSE_TYPE, AlignedPose, DrivingPose, PoseModels
from .widgets import widgets

CATEGORY = "SteadyDancer"
DETECTOR_FILE = sd.preferred_file_name("detector")      # the DWPose files looked for first in models/dwpose
POSE_MODEL_FILE = sd.preferred_file_name("pose_model")
PREVIEW_LONG_SIDE = 512
PREVIEW_FRAMES = 48              # ExtractPose's preview: at most this many frames, evenly spaced
ALIGN_PREVIEW_FRAMES = 24        # AlignPose's preview: at most this many frames, evenly spaced
ALIGN_PREVIEW_LONG_SIDE = 384
PREVIEW_PHOTO_DIM = 0.6          # AlignPose's preview draws the poses over the photo at this brightness


def _onnx_choices(preferred: str, hint: str) -> tuple[list[str], dict]:
    names = bridge.list_files([bridge.DWPOSE_FOLDER])
    ranked = sorted(names, key=lambda n: (hint not in n.lower(), n))
    options = {"tooltip": f"ONNX file in models/dwpose (or comfyui_controlnet_aux's ckpts), e.g. {preferred}."}
    if preferred in names:
        options["default"] = preferred
    return ranked, options


def frames_to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE [T, H, W, C] (or [H, W, C]) float 0..1 -> numpy uint8 [T, H, W, 3] RGB (extra channels dropped)."""
    if images.ndim not in (3, 4) or images.shape[-1] < 3:
        raise ValueError(f"expected IMAGE frames [T, H, W, 3], got shape {tuple(images.shape)}")
    return core_frames_to_uint8(images[..., :3])


def uint8_to_frames(frames) -> torch.Tensor:
    """numpy uint8 [T, H, W, 3] (or a list of [H, W, 3]) -> IMAGE float32 [T, H, W, 3] in 0..1."""
    array = np.stack(list(frames)) if not isinstance(frames, np.ndarray) else frames
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)


class ExtractPose:
    """Runs DWPose (YOLOX person detector + whole-body pose model, ONNX) on every driving frame."""

    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = (POSE_TYPE, "IMAGE", "FLOAT", KEYPOINT_TYPE, "AUDIO")
    RETURN_NAMES = ("pose", "preview", "fps", "pose_keypoint", "audio")
    OUTPUT_TOOLTIPS = (
        "The driving poses (keypoints) for AlignPose.",
        f"A small preview (at most {PREVIEW_FRAMES} evenly spaced frames).",
        "The driving frame rate after target_fps (the sampler carries it to DecodeVideo by itself).",
        "The same poses as OpenPose JSON (POSE_KEYPOINT, pixel coordinates of the driving frames), for other "
        "packs' pose nodes; AlignPose and the sampler read it back.",
        "The driving video's audio (the part the poses cover; nothing when it has none or IMAGE frames are "
        "connected), read without decoding any frame: connect to DecodeVideo's audio.",
    )
    DESCRIPTION = (
        "Extracts whole-body poses from the driving video (connect a VIDEO from Load Video, or IMAGE frames). "
        "ONNX models: yolox_l.onnx and dw-ll_ucoco_384.onnx in models/dwpose. Outputs the poses, a preview, "
        "the driving frame rate, the poses as OpenPose JSON (POSE_KEYPOINT) for other packs and the driving audio. "
        "A VIDEO is read one frame at a time (only keypoints are kept), so a long video costs no more memory."
    )

    @classmethod
    def INPUT_TYPES(cls):
        detectors, det_opts = _onnx_choices(DETECTOR_FILE, "yolox")
        estimators, est_opts = _onnx_choices(POSE_MODEL_FILE, "dw")
        return {
            "required": {
                "detector": (detectors, det_opts),
                "pose_model": (estimators, est_opts),
                **widgets(EXTRACT),
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": "Driving video (Load Video)."}),
                "images": ("IMAGE", {"tooltip": "Driving frames, used when no video is connected."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def extract(self, detector, pose_model, person, no_person, max_frames, target_fps, images_fps, video=None,
                images=None, unique_id=None):
        detector_path = bridge.find_file([bridge.DWPOSE_FOLDER], detector, "Person detector (YOLOX ONNX)")
        estimator_path = bridge.find_file([bridge.DWPOSE_FOLDER], pose_model, "Pose model (DWPose ONNX)")
        source = bridge.video_source(video) if video is not None else None
        audio = None
        if source is not None:                 # a video file: read frame by frame, only keypoints kept
            count = sd.expected_frames(source, max_frames, target_fps)[1] or 0
            driving = sd.extract_driving_poses(source, detector_path, estimator_path, person=person,
                                               no_person=no_person, max_frames=max_frames, target_fps=target_fps,
                                               providers=pose_providers(), progress=_progress(count, unique_id))
        else:
            if video is not None:
                images, fps, audio = bridge.video_components(video)
            elif images is not None:
                fps = float(images_fps)
            else:
                raise ValueError("ExtractPose needs a driving video: connect 'video' (Load Video) or 'images'.")
            images, fps, notes = _pick_frames(images, fps, max_frames, target_fps)
            count = int(images.shape[0])
            audio = trim_audio(audio, count / fps)
            frames = (frames_to_uint8(images[i:i + 1])[0] for i in range(count))
            driving = sd.extract_poses(frames, fps, detector_path, estimator_path, person=person,
                                       no_person=no_person, providers=pose_providers(),
                                       progress=_progress(count, unique_id), notes=notes)
        sequence, fps, notes, loaded = driving.sequence, driving.fps, driving.notes, driving.models
        models = PoseModels(detector_path=detector_path, estimator_path=estimator_path, person=person,
                            no_person=no_person, loaded=loaded)
        count = len(sequence)
        pose = DrivingPose(sequence=sequence, fps=fps, models=models, report="; ".join(notes))
        preview = uint8_to_frames(list(_render_preview(sequence)))
        if source is not None:
            audio = driving_audio(source, count / fps)
        text = extract_report(count, fps, _persons_found(sequence), pose.report,
                              None if video is None else audio is not None)
        log_phase("SteadyDancer Extract Pose", text)
        keypoints = pose_api.to_openpose_json(sequence)
        return {"result": (pose, preview, float(fps), keypoints, audio), "ui": {"text": [text]}}


def driving_audio(source, seconds: float):
    """ComfyUI AUDIO ({"waveform" [1, C, S], "sample_rate"}) of the driving video file's first ``seconds`` (its
    audio packets only, no frame decoded), or None when it has no audio."""
    found = sd.read_audio(source, max_seconds=seconds)
    if found is None:
        return None
    samples, rate = found
    return {"waveform": torch.from_numpy(samples)[None], "sample_rate": rate}


def _progress(count: int, unique_id):
    """progress(frames done) for the pose extraction: the node's bar, and Cancel honoured between batches."""
    bar = bridge.StepProgress(max(1, count), unique_id)

    def progress(done):
        bridge.raise_if_interrupted()
        bar(done, max(count, done))
    return progress


def pose_providers():
    """onnxruntime providers for the pose models: CPU only when ComfyUI computes on the CPU, else the default
    (the GPU when one is present)."""
    return pose_api.CPU_ONLY if bridge.computes_on_cpu() else None


def _persons_found(sequence) -> str:
    """'a person in 79 of 81 frames' (with person = all: 'up to 2 persons per frame')."""
    count = len(sequence)
    found = count - len(sequence.missing_frames)
    most = max((frame.num_persons for frame in sequence), default=0)
    text = f"a person in {found} of {count} frames"
    return text + (f", up to {most} persons per frame" if most > 1 else "")


def _pick_frames(images: torch.Tensor, fps: float, max_frames: int, target_fps: float):
    """An IMAGE batch resampled to target_fps (0 = keep) and cut to max_frames (0 = all) -> (images, fps, notes);
    a plain cut stays a view of the batch."""
    picks, fps, notes = sd.pick_frames(int(images.shape[0]), fps, max_frames, target_fps)
    kept = images[:len(picks)] if picks == list(range(len(picks))) else images[picks]
    return kept, fps, notes


def trim_audio(audio, seconds: float):
    """ComfyUI AUDIO cut to its first ``seconds`` (the part the kept frames cover); None stays None."""
    if audio is None:
        return None
    keep = int(round(seconds * audio["sample_rate"]))
    return {**audio, "waveform": audio["waveform"][..., :keep]}


def _render_preview(sequence):
    """At most PREVIEW_FRAMES frames, evenly spaced (first and last included), PREVIEW_LONG_SIDE px long side."""
    h, w = sequence.image_hw
    k = min(1.0, PREVIEW_LONG_SIDE / max(h, w))
    size = (max(2, int(round(h * k / 2)) * 2), max(2, int(round(w * k / 2)) * 2))
    for i in preview_indices(len(sequence), PREVIEW_FRAMES):
        yield pose_api.render(sequence[i], size)


def preview_indices(count: int, limit: int) -> list[int]:
    """At most ``limit`` frame indices spread evenly over ``count`` frames, the first and the last included (every
    frame when there are no more than ``limit``): the one frame picker of the previews."""
    if count <= limit:
        return list(range(count))
    return sorted({int(round(i * (count - 1) / (limit - 1))) for i in range(limit)})


class AlignPose:
    """Retargets the driving poses onto the photo's body (official alignment); outputs them as compact keypoints
    (rendered by the sampler one segment at a time) and, optionally, as rendered condition frames."""

    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("IMAGE", "IMAGE", ALIGNED_POSE_TYPE, "IMAGE")
    RETURN_NAMES = ("positive_pose", "negative_pose", "aligned_pose", "preview")
    OUTPUT_TOOLTIPS = (
        "Rendered pose frames (image_outputs = all_frames): about 28 MB per frame at the 2x canvas of a 720p photo; "
        "prefer aligned_pose for long videos.",
        "Rendered augmented pose frames for pose guidance (same memory cost as positive_pose).",
        "The aligned poses as keypoints (a few KB per frame): connect to the sampler's aligned_pose; it renders "
        "the same frames one segment at a time, so memory does not grow with the video's length.",
        f"A small preview: the aligned poses over the photo (at most {ALIGN_PREVIEW_FRAMES} evenly spaced frames), "
        "to check the alignment before sampling.",
    )
    DESCRIPTION = (
        "Detects the person in the photo, scales the driving poses to their body (official SteadyDancer alignment) "
        "and gives the positive pose frames plus the augmented negative frames used by pose guidance: as compact "
        "keypoints (aligned_pose) and, with image_outputs = all_frames, as rendered IMAGE frames."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "photo": ("IMAGE", {"tooltip": "The photo to animate (first frame of the result)."}),
                **widgets(ALIGN),
                **widgets(PHOTO),
            },
            "optional": {
                "photo_mask": PHOTO_MASK_INPUT,
                "pose": (POSE_TYPE, {"tooltip": "Driving poses from ExtractPose."}),
                "pose_keypoint": (KEYPOINT_TYPE, {"tooltip": (
                    "Driving poses as OpenPose JSON (POSE_KEYPOINT: comfyui_controlnet_aux's DWPose / OpenPose, a "
                    "pose editor, or ExtractPose), used instead of 'pose'. The photo's pose is detected with "
                    f"models/dwpose/{DETECTOR_FILE} and {POSE_MODEL_FILE}. The format has no frame rate: "
                    f"{WAN_FPS:g} fps is assumed.")}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def align(self, photo, pose: DrivingPose | None = None, augment_seed=ALIGN.default("augment_seed"),
              canvas=ALIGN.default("canvas"), scale_fallback=ALIGN.default("scale_fallback"),
              image_outputs=ALIGN.default("image_outputs"), pose_keypoint=None,
              background=PHOTO.default("background"), photo_mask=None, unique_id=None):
        ALIGN["image_outputs"].check(image_outputs)
        if (pose is None) == (pose_keypoint is None):
            raise ValueError("AlignPose needs the driving poses from one source: connect either 'pose' (ExtractPose) "
                             "or 'pose_keypoint' (OpenPose JSON, POSE_KEYPOINT)" +
                             (", not both." if pose is not None else "."))
        if pose is None:
            pose = driving_from_keypoints(pose_keypoint)
        photo = sd.check_frames(photo, "AlignPose's photo")       # as the sampler checks it: RGB, 0..1, no NaN
        if photo.shape[0] != 1:
            raise ValueError(f"AlignPose needs one photo, got a batch of {photo.shape[0]} images; "
                             "pick one (e.g. with an ImageFromBatch node).")
        photo, photo_note = composite_with_mask(photo, photo_mask, background, "AlignPose")
        compact, resized = align_to_photo(photo, pose, augment_seed, canvas, scale_fallback)
        # the report shows what happened here: ExtractPose already showed its own notes (POSE_KEYPOINT has no node)
        own = compact.report if pose_keypoint is not None else compact.report.removeprefix(pose.report).lstrip("; ")
        aligned = compact.aligned
        positive_src, negative_src = pose_api.pose_sources(aligned, compact.augment_seed, output_hw=compact.output_hw)
        count = len(aligned) if image_outputs == "all_frames" else 1
        bar = bridge.StepProgress(count, unique_id)
        positive = np.empty((count, *positive_src.frame_hw, 3), np.uint8)
        negative = np.empty_like(positive)
        for i in range(count):
            bridge.raise_if_interrupted()
            positive[i], negative[i] = positive_src.frame(i), negative_src.frame(i)
            bar(i + 1, count)
        positive, negative = uint8_to_frames(positive), uint8_to_frames(negative)
        preview = uint8_to_frames(list(_align_preview(positive_src, resized)))
        text = align_report(len(aligned), positive_src.frame_hw, int(preview.shape[0]), count,
                            "; ".join(n for n in (photo_note, own) if n))
        log_phase("SteadyDancer Align Pose", text)
        return {"result": (positive, negative, compact, preview), "ui": {"text": [text]}}


def align_to_photo(photo, pose: DrivingPose, augment_seed: int = ALIGN.default("augment_seed"),
                   canvas: str = ALIGN.default("canvas"), scale_fallback: str = ALIGN.default("scale_fallback")):
    """(AlignedPose, resized photo uint8 [h, w, 3]): the driving poses prepared for the photo (``pose.prepare``:
    one photo, IMAGE [1, H, W, 3], at its own size), compact, and the photo at the size the alignment used."""
    photo_np = frames_to_uint8(photo)
    models = pose.models.loaded or pose_api.load_models(pose.models.detector_path, pose.models.estimator_path,
                                                        person=pose.models.person, providers=pose_providers())
    prepared = pose_api.prepare(photo_np[0], pose.sequence, models, augment_seed=ALIGN["augment_seed"].check(
        augment_seed), canvas=ALIGN["canvas"].check(canvas), scale_fallback=ALIGN["scale_fallback"].check(
        scale_fallback))
    gap = sd.start_gap(prepared.reference, prepared.aligned.frames[0])   # known before generating: say it now
    report = "; ".join(n for n in [pose.report, *prepared.notes, gap.message] if n)
    return AlignedPose(aligned=prepared.aligned, augment_seed=prepared.augment_seed, output_hw=prepared.output_hw,
                       fps=pose.fps, report=report, reference=prepared.reference,
                       models=dataclasses.replace(pose.models, loaded=models)), prepared.photo


def driving_from_keypoints(pose_keypoint) -> DrivingPose:
    """POSE_KEYPOINT (OpenPose JSON) -> DrivingPose: persons and empty frames as ExtractPose's defaults, the photo
    detected later with the default ONNX files, ``WAN_FPS``."""
    person, no_person = EXTRACT.default("person"), EXTRACT.default("no_person")
    sequence = pose_api.from_openpose_json(pose_keypoint, person=person, no_person=no_person)
    what = "(ONNX, in models/dwpose; with POSE_KEYPOINT it detects the photo's pose)"
    models = PoseModels(
        detector_path=bridge.find_file([bridge.DWPOSE_FOLDER], DETECTOR_FILE, f"Person detector {what}"),
        estimator_path=bridge.find_file([bridge.DWPOSE_FOLDER], POSE_MODEL_FILE, f"Pose model {what}"),
        person=person, no_person=no_person)
    notes = [f"{len(sequence)} frames from POSE_KEYPOINT (it has no frame rate: {WAN_FPS:g} fps assumed; set "
             "DecodeVideo's fps to change it)", pose_api.missing_note(sequence, no_person)]
    return DrivingPose(sequence=sequence, fps=WAN_FPS, models=models, report="; ".join(n for n in notes if n))


def _align_preview(source, photo: np.ndarray):
    """The aligned poses drawn over the (dimmed) resized photo, so a bad alignment shows before sampling: the
    pose canvas is twice the resized photo, so the photo spans it exactly."""
    h, w = source.canvas_hw
    k = min(1.0, ALIGN_PREVIEW_LONG_SIDE / max(h, w))
    size = (max(2, int(round(h * k / 2)) * 2), max(2, int(round(w * k / 2)) * 2))
    backdrop = cv2.resize(photo, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    backdrop = (backdrop * PREVIEW_PHOTO_DIM).astype(np.uint8)
    for i in preview_indices(len(source), ALIGN_PREVIEW_FRAMES):
        drawn = pose_api.render(source.pose_frames[i], source.canvas_hw, output_hw=size)
        yield np.where(drawn.any(axis=-1, keepdims=True), drawn, backdrop)


NODE_CLASS_MAPPINGS = {"ExtractPose": ExtractPose, "AlignPose": AlignPose}
NODE_DISPLAY_NAME_MAPPINGS = {"ExtractPose": "SteadyDancer Extract Pose (DWPose)",
                              "AlignPose": "SteadyDancer Align Pose to Photo"}
