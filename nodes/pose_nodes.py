"""ExtractPose and AlignPose: driving video -> poses -> aligned positive / augmented negative pose frames."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .. import pose as pose_api
from ..steadydancer_core import MAX_SEED, PHOTO, POSE, WAN_FPS, iter_pose_frames, probe_video, resample_indices
from ..steadydancer_core import frames_to_uint8 as core_frames_to_uint8
from . import comfy_bridge as bridge
from .photo_input import BACKGROUND_WIDGET, PHOTO_MASK_INPUT, composite_with_mask
from .types import ALIGNED_POSE_TYPE, KEYPOINT_TYPE, POSE_TYPE, AlignedPose, DrivingPose, PoseModels

CATEGORY = "SteadyDancer"
SCALE_FALLBACKS = ["official", "visible"]
CANVAS_MODES = ["2x", "1x"]
PREVIEW_LONG_SIDE = 512
PREVIEW_FRAMES = 48              # ExtractPose's preview: at most this many frames, evenly spaced
IMAGE_OUTPUTS = ["all_frames", "first_frame"]
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
    RETURN_TYPES = (POSE_TYPE, "IMAGE", "FLOAT", KEYPOINT_TYPE)
    RETURN_NAMES = ("pose", "preview", "fps", "pose_keypoint")
    OUTPUT_TOOLTIPS = (
        "The driving poses (keypoints) for AlignPose.",
        f"A small preview (at most {PREVIEW_FRAMES} evenly spaced frames).",
        "The driving frame rate after target_fps (the sampler carries it to DecodeVideo by itself).",
        "The same poses as OpenPose JSON (POSE_KEYPOINT, pixel coordinates of the driving frames), for other "
        "packs' pose nodes; AlignPose and the sampler read it back.",
    )
    DESCRIPTION = (
        "Extracts whole-body poses from the driving video (connect a VIDEO from Load Video, or IMAGE frames). "
        "ONNX models: yolox_l.onnx and dw-ll_ucoco_384.onnx in models/dwpose. Outputs the poses, a preview, "
        "the driving frame rate and the poses as OpenPose JSON (POSE_KEYPOINT) for other packs."
    )

    @classmethod
    def INPUT_TYPES(cls):
        detectors, det_opts = _onnx_choices(POSE.detector, "yolox")
        estimators, est_opts = _onnx_choices(POSE.pose_model, "dw")
        return {
            "required": {
                "detector": (detectors, det_opts),
                "pose_model": (estimators, est_opts),
                "person": (list(pose_api.PERSON_MODES), {"default": POSE.person, "tooltip": (
                    "Which person drives the motion: highest detector score, largest box, or all of them.")}),
                "no_person": (list(pose_api.MISSING_MODES), {"default": POSE.no_person, "tooltip": (
                    "Frames without a person: hold the nearest earlier pose, or leave the frame empty.")}),
                "max_frames": ("INT", {"default": POSE.max_frames, "min": 0, "max": 100000, "step": 1,
                                       "tooltip": "Use at most this many driving frames (0 = all)."}),
                "target_fps": ("FLOAT", {"default": POSE.target_fps, "min": 0.0, "max": 240.0, "step": 0.01, "tooltip": (
                    "Resample the driving video to this frame rate (Wan 2.1 was trained on 16 fps, so the motion "
                    "plays at its real speed); 0 keeps every frame as the official scripts do.")}),
                "images_fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.01, "tooltip": (
                    "Frame rate of the 'images' input. A connected 'video' brings its own frame rate.")}),
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": "Driving video (Load Video)."}),
                "images": ("IMAGE", {"tooltip": "Driving frames, used when no video is connected."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def extract(self, detector, pose_model, person, no_person, max_frames, target_fps, images_fps, video=None,
                images=None, unique_id=None):
        source = bridge.video_source(video) if video is not None else None
        streamed = _stream_frames(source, max_frames, target_fps) if source is not None else None
        if streamed is not None:
            frames, fps, count, notes = streamed
        else:
            if video is not None:
                images, fps, _audio = bridge.video_components(video)
            elif images is not None:
                fps = float(images_fps)
            else:
                raise ValueError("ExtractPose needs a driving video: connect 'video' (Load Video) or 'images'.")
            images, fps, notes = _pick_frames(images, fps, max_frames, target_fps)
            count = int(images.shape[0])
            frames = (frames_to_uint8(images[i:i + 1])[0] for i in range(count))
        detector_path = bridge.find_file([bridge.DWPOSE_FOLDER], detector, "Person detector (YOLOX ONNX)")
        estimator_path = bridge.find_file([bridge.DWPOSE_FOLDER], pose_model, "Pose model (DWPose ONNX)")
        models = PoseModels(detector_path=detector_path, estimator_path=estimator_path, person=person,
                            no_person=no_person, loaded=pose_api.load_models(detector_path, estimator_path, person))
        bar = bridge.StepProgress(max(1, count), unique_id)

        def progress(done):
            bridge.raise_if_interrupted()
            bar(done, max(count, done))

        sequence = pose_api.extract(frames, models.detector_path, models.estimator_path, person=person,
                                    on_missing=no_person, providers=pose_providers(), progress=progress)
        count = len(sequence)
        if sequence.missing_frames:
            how = "held the nearest pose" if no_person == "hold" else "left empty"
            notes.append(f"no person in {len(sequence.missing_frames)} of {count} frames ({how})")
        pose = DrivingPose(sequence=sequence, fps=fps, models=models, report="; ".join(notes))
        preview = uint8_to_frames(list(_render_preview(sequence)))
        text = "; ".join(n for n in (f"{count} frames at {fps:g} fps", _persons_found(sequence), pose.report) if n)
        keypoints = pose_api.to_openpose_json(sequence)
        return {"result": (pose, preview, float(fps), keypoints), "ui": {"text": [text]}}


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
    """An IMAGE batch resampled to target_fps (0 = keep) and cut to max_frames (0 = all) -> (images, fps, notes)."""
    notes = []
    if target_fps and abs(target_fps - fps) > 1e-3:
        picks = resample(int(images.shape[0]), fps, float(target_fps))
        notes.append(f"driving video {fps:g} fps resampled to {target_fps:g} fps ({images.shape[0]} -> "
                     f"{len(picks)} frames)")
        images, fps = images[picks], float(target_fps)
    total = int(images.shape[0])
    if max_frames and total > max_frames:
        images = images[:max_frames]
        notes.append(f"used the first {max_frames} of {total} driving frames (max_frames)")
    return images, fps, notes


def _stream_frames(source, max_frames: int, target_fps: float):
    """Frames of a video file read one at a time (``iter_pose_frames``: upright, picked by timestamp, scaled to
    what the pose models use), with the same picks as ``_pick_frames`` on the decoded batch for a constant frame
    rate: resampled while reading and stopped after max_frames -> (uint8 frame iterator, fps, expected count,
    notes; None when the file states no frame rate)."""
    info = probe_video(source)
    fps = float(info.fps)
    if fps <= 0:
        return None
    total = info.frames
    notes = []
    resample_to = None
    if target_fps and abs(target_fps - fps) > 1e-3:
        resample_to = float(target_fps)
        if total:
            resampled = len(resample(total, fps, resample_to))
            notes.append(f"driving video {fps:g} fps resampled to {target_fps:g} fps ({total} -> {resampled} frames)")
            total = resampled
        else:
            notes.append(f"driving video {fps:g} fps resampled to {target_fps:g} fps")
        fps = resample_to
    if max_frames and (total is None or total > max_frames):
        of = f" of {total}" if total else ""
        notes.append(f"used the first {max_frames}{of} driving frames (max_frames)")
    count = min(total or max_frames or 0, max_frames or total or 0)

    frames = iter_pose_frames(source, max_frames=max_frames or None, target_fps=resample_to)
    return frames, fps, count, notes


def resample(count: int, source_fps: float, target_fps: float) -> list[int]:
    """Source frame index shown at each output frame's time (nearest earlier frame), covering the whole clip."""

    picks = []
    for source, _ in resample_indices(source_fps, target_fps):
        if source >= count:
            break
        picks.append(source)
    return picks


def _render_preview(sequence):
    """At most PREVIEW_FRAMES frames, evenly spaced (first and last included), PREVIEW_LONG_SIDE px long side."""
    h, w = sequence.image_hw
    k = min(1.0, PREVIEW_LONG_SIDE / max(h, w))
    size = (max(2, int(round(h * k / 2)) * 2), max(2, int(round(w * k / 2)) * 2))
    for i in _preview_indices(len(sequence), PREVIEW_FRAMES):
        yield pose_api.render(sequence[i], size)


def _preview_indices(count: int, limit: int) -> list[int]:
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
                "augment_seed": ("INT", {"default": POSE.augment_seed, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                                 "tooltip": "Seed of the negative-pose augmentation (random scale/aspect per frame)."}),
                "canvas": (CANVAS_MODES, {"default": POSE.canvas, "tooltip": (
                    "2x: pose frames at twice the resized photo, as the official code draws them; 1x: half the "
                    "size (a quarter of the memory, for long videos).")}),
                "scale_fallback": (SCALE_FALLBACKS, {"default": POSE.scale_fallback, "tooltip": (
                    "official: limb scales exactly as the official code; visible: limbs not visible in the photo "
                    "(upper-body photos) use the mean scale of the visible ones.")}),
                "image_outputs": (IMAGE_OUTPUTS, {"default": IMAGE_OUTPUTS[0], "tooltip": (
                    "all_frames: positive_pose / negative_pose hold every rendered frame (memory grows with the "
                    "video: about 28 MB per frame and output at the 2x canvas of a 720p photo); first_frame: only "
                    "frame 0 (use aligned_pose for the sampler, which renders one segment at a time).")}),
                "background": BACKGROUND_WIDGET,
            },
            "optional": {
                "photo_mask": PHOTO_MASK_INPUT,
                "pose": (POSE_TYPE, {"tooltip": "Driving poses from ExtractPose."}),
                "pose_keypoint": (KEYPOINT_TYPE, {"tooltip": (
                    "Driving poses as OpenPose JSON (POSE_KEYPOINT: comfyui_controlnet_aux's DWPose / OpenPose, a "
                    "pose editor, or ExtractPose), used instead of 'pose'. The photo's pose is detected with "
                    f"models/dwpose/{POSE.detector} and {POSE.pose_model}. The format has no frame rate: "
                    f"{WAN_FPS:g} fps is assumed.")}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def align(self, photo, pose: DrivingPose | None = None, augment_seed=POSE.augment_seed, canvas=POSE.canvas,
              scale_fallback=POSE.scale_fallback, image_outputs="all_frames", pose_keypoint=None,
              background=PHOTO.background, photo_mask=None, unique_id=None):
        if image_outputs not in IMAGE_OUTPUTS:
            raise ValueError(f"image_outputs must be one of {IMAGE_OUTPUTS}, got {image_outputs!r}")
        if (pose is None) == (pose_keypoint is None):
            raise ValueError("AlignPose needs the driving poses from one source: connect either 'pose' (ExtractPose) "
                             "or 'pose_keypoint' (OpenPose JSON, POSE_KEYPOINT)" +
                             (", not both." if pose is not None else "."))
        if pose is None:
            pose = driving_from_keypoints(pose_keypoint, scale_fallback)
        if photo.ndim == 4 and photo.shape[0] > 1:
            raise ValueError(f"AlignPose needs one photo, got a batch of {photo.shape[0]} images; "
                             "pick one (e.g. with an ImageFromBatch node).")
        photo, photo_note = composite_with_mask(photo, photo_mask, background, "AlignPose")
        compact, resized = align_to_photo(photo, pose, augment_seed, canvas, scale_fallback)
        aligned, out_hw = compact.aligned, compact.output_hw
        positive_src, negative_src = pose_api.pose_sources(aligned, int(augment_seed), output_hw=out_hw)
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
        h, w = positive_src.frame_hw
        text = f"{len(aligned)} pose frames {w}x{h}" + ("" if count > 1 or len(aligned) == 1 else
                                                         " (IMAGE outputs: first frame only)")
        return {"result": (positive, negative, compact, preview),
                "ui": {"text": ["; ".join(n for n in (text, photo_note, pose.report) if n)]}}


def align_to_photo(photo, pose: DrivingPose, augment_seed: int, canvas: str, scale_fallback: str):
    """(AlignedPose, resized photo uint8 [h, w, 3]): the driving poses retargeted onto the photo's body (photo
    IMAGE [1, H, W, 3]), compact, and the photo at the size the alignment used (for the preview)."""
    if canvas not in CANVAS_MODES:
        raise ValueError(f"canvas must be one of {CANVAS_MODES}, got {canvas!r}")
    photo_np = frames_to_uint8(photo)
    if photo_np.shape[0] > 1:
        raise ValueError(f"AlignPose needs one photo, got a batch of {photo_np.shape[0]} images; "
                         "pick one (e.g. with an ImageFromBatch node).")
    reference, resized = pose_api.extract_reference(photo_np[0], pose.models.detector_path,
                                                    pose.models.estimator_path, person=pose.models.person,
                                                    providers=pose_providers())
    aligned = pose_api.align(reference, pose.sequence, scale_fallback=scale_fallback)
    out_hw = None if canvas == "2x" else tuple(v // 2 for v in aligned.canvas_hw)
    return AlignedPose(aligned=aligned, augment_seed=int(augment_seed), output_hw=out_hw, fps=pose.fps,
                       report=pose.report), resized


def driving_from_keypoints(pose_keypoint, scale_fallback: str = POSE.scale_fallback) -> DrivingPose:
    """POSE_KEYPOINT (OpenPose JSON) -> DrivingPose: persons and empty frames as ExtractPose's defaults
    (``POSE.person``, ``POSE.no_person``), the photo detected later with the default ONNX files, ``WAN_FPS``."""
    sequence = pose_api.from_openpose_json(pose_keypoint, person=POSE.person, on_missing=POSE.no_person)
    what = "(ONNX, in models/dwpose; with POSE_KEYPOINT it detects the photo's pose)"
    models = PoseModels(
        detector_path=bridge.find_file([bridge.DWPOSE_FOLDER], POSE.detector, f"Person detector {what}"),
        estimator_path=bridge.find_file([bridge.DWPOSE_FOLDER], POSE.pose_model, f"Pose model {what}"),
        person=POSE.person, no_person=POSE.no_person)
    count = len(sequence)
    notes = [f"{count} frames from POSE_KEYPOINT (it has no frame rate: {WAN_FPS:g} fps assumed; set DecodeVideo's "
             "fps to change it)"]
    if sequence.missing_frames:
        how = "held the nearest pose" if POSE.no_person == "hold" else "left empty"
        notes.append(f"no person in {len(sequence.missing_frames)} of {count} frames ({how})")
    first = next((f for f in sequence.frames if f.num_persons), None)
    blank = 0 if first is None else int((~first.body_visible[0] & (first.bodies[0] == 0).all(-1)).sum())
    if blank and scale_fallback == "official":
        notes.append(f"{blank} body points of the first driving pose have no coordinates, so their limb scales are "
                     "not measurable: set AlignPose's scale_fallback to 'visible'")
    return DrivingPose(sequence=sequence, fps=WAN_FPS, models=models, report="; ".join(notes))


def _align_preview(source, photo: np.ndarray):
    """The aligned poses drawn over the (dimmed) resized photo, so a bad alignment shows before sampling: the
    pose canvas is twice the resized photo, so the photo spans it exactly."""
    h, w = source.canvas_hw
    k = min(1.0, ALIGN_PREVIEW_LONG_SIDE / max(h, w))
    size = (max(2, int(round(h * k / 2)) * 2), max(2, int(round(w * k / 2)) * 2))
    backdrop = cv2.resize(photo, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    backdrop = (backdrop * PREVIEW_PHOTO_DIM).astype(np.uint8)
    count = len(source)
    picks = sorted({round(i * (count - 1) / max(1, ALIGN_PREVIEW_FRAMES - 1)) for i in range(min(count, ALIGN_PREVIEW_FRAMES))})
    for i in picks:
        drawn = pose_api.render(source.pose_frames[i], source.canvas_hw, output_hw=size)
        yield np.where(drawn.any(axis=-1, keepdims=True), drawn, backdrop)


NODE_CLASS_MAPPINGS = {"ExtractPose": ExtractPose, "AlignPose": AlignPose}
NODE_DISPLAY_NAME_MAPPINGS = {"ExtractPose": "SteadyDancer Extract Pose (DWPose)",
                              "AlignPose": "SteadyDancer Align Pose to Photo"}
