"""The driving video's poses: its frames read from the file one at a time (``iter_pose_frames``: uint8, upright,
picked by timestamp at ``target_fps``, scaled at decode to what the pose models need, cut at ``max_frames``) and
DWPose run on each; only the keypoints are kept. The defaults are ExtractPose's
(``option_tables.EXTRACT``), so the node, the CLI and a Python caller on defaults extract the same poses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from .option_tables import EXTRACT
from .sampling.defaults import WAN_FPS
from .host_memory import trim_host_memory
from .pose_package import pose
from .video_io import VideoReadError, iter_pose_frames, probe_video, resample_indices

__all__ = ["DrivingPoses", "expected_frames", "extract_driving_poses", "extract_poses"]


@dataclass
class DrivingPoses:
    """sequence: ``pose.PoseSequence`` of the driving frames used; fps: their frame rate (after ``target_fps``);
    models: the loaded pose models (``pose.load_models``: the photo's pose is detected with the same ones);
    notes: what was adjusted (resampling, frames cut, frames without a person)."""

    sequence: object
    fps: float
    models: object
    notes: list = field(default_factory=list)


def _checked(max_frames, target_fps) -> tuple[int, float]:
    return EXTRACT["max_frames"].check(max_frames), EXTRACT["target_fps"].check(target_fps)


def expected_frames(video, max_frames: int = EXTRACT.default("max_frames"),
                    target_fps: float = EXTRACT.default("target_fps")) -> tuple[float, Optional[int], list]:
    """(frame rate used, frames to read or None when the file does not say, notes) for reading ``video`` (a path or
    a seekable file-like) with these options; nothing is decoded."""
    max_frames, target_fps = _checked(max_frames, target_fps)
    info = probe_video(video)
    fps, notes = float(info.fps), []
    if fps <= 0:
        if target_fps:
            raise VideoReadError(f"{video} does not state its frame rate, so it cannot be resampled to "
                                 f"{target_fps:g} fps; set target_fps to 0 (every frame)")
        notes.append(f"the driving video states no frame rate: {WAN_FPS:g} fps assumed")
        fps = WAN_FPS
    fps, total, more = _resample_and_cut(info.frames, fps, max_frames, target_fps)
    return fps, total, notes + more


def pick_frames(count: int, fps: float, max_frames: int = EXTRACT.default("max_frames"),
                target_fps: float = EXTRACT.default("target_fps")) -> tuple[list, float, list]:
    """(indices of the kept frames, their frame rate, notes) for ``count`` frames at ``fps`` read with these
    options, as ``extract_driving_poses`` reads a file: resampled to ``target_fps``, cut at ``max_frames``."""
    max_frames, target_fps = _checked(max_frames, target_fps)
    new_fps, total, notes = _resample_and_cut(count, float(fps), max_frames, target_fps)
    picks = list(_picks(count, fps, new_fps)) if new_fps != fps else list(range(count))
    return picks[:total], new_fps, notes


def _resample_and_cut(total: Optional[int], fps: float, max_frames: int, target_fps: float):
    """(frame rate, frames or None when unknown, notes) after resampling to target_fps and cutting at max_frames
    (0 = keep / all)."""
    notes = []
    if target_fps and abs(target_fps - fps) > 1e-3:
        if total:
            resampled = sum(1 for _ in _picks(total, fps, target_fps))
            notes.append(f"driving video {fps:g} fps resampled to {target_fps:g} fps ({total} -> {resampled} frames)")
            total = resampled
        else:
            notes.append(f"driving video {fps:g} fps resampled to {target_fps:g} fps")
        fps = float(target_fps)
    if max_frames and (total is None or total > max_frames):
        notes.append(f"used the first {max_frames}{f' of {total}' if total else ''} driving frames (max_frames)")
        total = max_frames
    return fps, total, notes


def _picks(count: int, source_fps: float, target_fps: float):
    for source, _ in resample_indices(source_fps, target_fps):
        if source >= count:
            return
        yield source


def extract_poses(frames: Iterable, fps: float, detector, pose_model, *, person: str = EXTRACT.default("person"),
                  no_person: str = EXTRACT.default("no_person"), providers: Sequence[str] | None = None,
                  progress: Callable[[int], None] | None = None, notes: Sequence[str] = ()) -> DrivingPoses:
    """Poses of driving ``frames`` (uint8 [H, W, 3], any iterable, consumed as it goes) played at ``fps``, with the
    DWPose ONNX files ``detector`` and ``pose_model``; ``notes`` (what reading them adjusted) lead the result's."""
    person, no_person = EXTRACT["person"].check(person), EXTRACT["no_person"].check(no_person)
    models = pose.load_models(detector, pose_model, person=person, providers=providers)
    sequence = pose.extract(frames, detector, pose_model, person=person, no_person=no_person, providers=providers,
                            progress=progress)
    trim_host_memory()                  # the decoder's freed frame buffers (large for 4K / 8K clips) go back
    missing = pose.missing_note(sequence, no_person)
    return DrivingPoses(sequence=sequence, fps=float(fps), models=models,
                        notes=list(notes) + ([missing] if missing else []))


def extract_driving_poses(video, detector, pose_model, *, person: str = EXTRACT.default("person"),
                          no_person: str = EXTRACT.default("no_person"),
                          max_frames: int = EXTRACT.default("max_frames"),
                          target_fps: float = EXTRACT.default("target_fps"),
                          providers: Sequence[str] | None = None,
                          progress: Callable[[int], None] | None = None) -> DrivingPoses:
    """Poses of the driving ``video`` (a path or a seekable file-like): ``extract_poses`` of its frames read by
    ``iter_pose_frames``. target_fps 0 keeps every frame; max_frames 0 reads them all. progress(frames done)."""
    max_frames, target_fps = _checked(max_frames, target_fps)
    fps, _, notes = expected_frames(video, max_frames, target_fps)
    frames = iter_pose_frames(video, max_frames=max_frames or None, target_fps=target_fps or None)
    return extract_poses(frames, fps, detector, pose_model, person=person, no_person=no_person, providers=providers,
                         progress=progress, notes=notes)
