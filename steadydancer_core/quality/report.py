"""``quality_report``: walk a result's frames a chunk at a time and measure everything ``QualityReport`` holds.

Host memory stays flat in the video's length: one chunk of frames (``QualitySettings.chunk_frames``), the
previous frame, the photo, a few embeddings and thumbnails, and one number per frame and series.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np

from ..sampling.guidance import Cancelled
from ..video_io import probe_video
from .colour import delta_e, lab_of_linear, linear_from_codes, region_mean, region_shift, to_codes
from .first_frame import first_frame_check, photo_at
from .frames import as_photo, count_frames, iter_chunks
from .identity import clip_embedder, cosine, embed_many
from .keypoints import person
from .pose_following import JerkTracker, frame_following
from .regions import background_mask, crop, face_box, person_mask
from .result import SERIES, QualityReport
from .smoothness import background_change
from .start_gap import start_gap as measure_start_gap
from .summarise import summarise
from .thresholds import QualitySettings, verdicts
from .worst import WorstFrames

NAN = float("nan")


def _embedder(clip):
    if clip is None or callable(clip) and not hasattr(clip, "encode"):
        return clip
    if hasattr(clip, "encode") and hasattr(clip, "config"):
        return clip_embedder(clip)
    raise TypeError(f"clip must be an ImageEncoder or a function images -> [N, D] embeddings, got {type(clip)}")


def _segment_starts(segments, num_frames: Optional[int]) -> tuple:
    """Later segments' first frames from ints, (start, frames, known) tuples or objects with ``.start``."""
    starts = set()
    for s in segments or ():
        start = getattr(s, "start", s[0] if isinstance(s, (tuple, list)) else s)
        start = int(start)
        if start > 0 and (num_frames is None or start < num_frames):
            starts.add(start)
    return tuple(sorted(starts))


class _Walker:
    """The running state of one report (see ``quality_report``)."""

    def __init__(self, photo, poses, embed, extractor, photo_pose, settings: QualitySettings):
        self.photo, self.poses, self.embed, self.extractor = photo, poses, embed, extractor
        self.photo_pose, self.s = photo_pose, settings
        self.series = {k: [] for k in SERIES}
        self.jerk = JerkTracker()
        self.worst = {m: WorstFrames(settings.thumbnails, settings.thumb_height)
                      for m in ("pose", "identity", "face", "colour", "glitch")}
        self.notes: list = []
        self.hw = None
        self.first: dict = {}
        self.t = 0
        self.prev = self.prev_people = self.prev_vec = self.prev_face_vec = None
        self.prev_change = NAN
        self.photo_vec = self.photo_face_vec = None
        self.linear0 = self.bg0 = self.body0_lab = None
        self.poses_ended = False
        self.first_pose = None              # the first aligned driving pose (for the start gap)

    # ---- the photo, once the frame size is known -------------------------------------------------------------
    def start(self, hw, first_ref):
        self.hw = hw
        photo = self.photo_at_size = photo_at(self.photo, hw)
        if self.photo_pose is not None:
            photo_person = person(self.photo_pose, hw)
        elif self.extractor is not None:
            photo_person = person(self.extractor([to_codes(photo)])[0], hw)
        else:
            photo_person = first_ref
        if self.embed is not None:
            face = crop(photo, face_box(photo_person, hw, self.s.face_margin))
            self.photo_vec, self.photo_face_vec = embed_many(self.embed, [photo, face])
            if self.photo_face_vec is None:
                self.notes.append("face identity not measured: no face found in the photo's pose")

    # ---- one chunk ---------------------------------------------------------------------------------------------
    def chunk(self, frames: np.ndarray):
        hw = tuple(frames.shape[1:3])
        refs = [self._next_pose(hw) for _ in range(len(frames))]
        if self.hw is None:
            self.start(hw, refs[0])
            self.first = first_frame_check(frames[0], self.photo_at_size)
        elif hw != self.hw:
            raise ValueError(f"frame size changed from {self.hw[1]}x{self.hw[0]} to {hw[1]}x{hw[0]} at frame "
                             f"{self.t}; a report needs frames of one size")
        codes = to_codes(frames)
        gens = [None] * len(frames)
        if self.extractor is not None:
            gens = [person(p, hw) for p in self.extractor(list(codes))]
        vecs = face_vecs = [None] * len(frames)
        if self.embed is not None:
            picked = [i for i in range(len(frames)) if (self.t + i) % self.s.identity_every == 0]
            images = [frames[i] for i in picked]
            faces = [crop(frames[i], face_box(gens[i] if gens[i] is not None else refs[i], hw, self.s.face_margin))
                     for i in picked]
            both = embed_many(self.embed, images + faces)
            vecs, face_vecs = [None] * len(frames), [None] * len(frames)
            for k, i in enumerate(picked):
                vecs[i], face_vecs[i] = both[k], both[len(picked) + k]
        for i, frame in enumerate(codes):
            self.frame(frame, refs[i], gens[i], vecs[i], face_vecs[i])

    def _next_pose(self, hw):
        if self.poses is None:
            return None
        frame = next(self.poses, None)
        if self.first_pose is None:
            self.first_pose = frame
        if frame is None and not self.poses_ended:
            self.poses_ended = True
            self.notes.append(f"the aligned poses end at frame {self.t}: later frames have no driving pose")
        return person(frame, hw) if frame is not None else None

    def frame(self, frame, ref, gen, vec, face_vec):
        """frame: uint8 codes [H, W, 3]; ref / gen: the driving / generated person; vec / face_vec: embeddings."""
        s, t, out = self.s, self.t, {}
        if self.poses is not None and self.extractor is not None:
            out.update(frame_following(gen, ref, s.pck_alpha_body, s.pck_alpha_hands, s.pck_alpha_face))
        out["jerk_generated"], out["jerk_driving"] = self.jerk.update(gen, ref) if self.extractor else (NAN, NAN)
        out["identity_photo"], out["identity_prev"] = cosine(vec, self.photo_vec), cosine(vec, self.prev_vec)
        out["face_identity_photo"] = cosine(face_vec, self.photo_face_vec)
        out["face_identity_prev"] = cosine(face_vec, self.prev_face_vec)
        people = [p for p in (gen, ref) if p is not None]
        change = NAN
        if self.prev is not None:
            change = background_change(self.prev, frame, background_mask(people + self.prev_people, self.hw,
                                                                         s.person_margin))
            self.worst["glitch"].offer(min(self.prev_change, change), t - 1, self.prev)
        out["background_change"] = change
        linear = linear_from_codes(frame)
        bg_mask = background_mask(people, self.hw, s.person_margin)
        body_mask = person_mask(gen if gen is not None else ref, self.hw)
        if t == 0:
            self.linear0, self.bg0 = linear, bg_mask
            self.body0_lab = lab_of_linear(region_mean(linear, body_mask))
        common = bg_mask & self.bg0
        bg_shift = region_shift(linear, self.linear0, common, common)
        body_shift = lab_of_linear(region_mean(linear, body_mask)) - self.body0_lab
        out["colour_bg_de"], out["colour_person_de"] = delta_e(bg_shift), delta_e(body_shift)
        for name, value in zip(("bg_dL", "bg_da", "bg_db", "person_dL", "person_da", "person_db"),
                               (*bg_shift, *body_shift)):
            out[name] = float(value)
        for key in SERIES:
            self.series[key].append(float(out.get(key, NAN)))
        self.worst["pose"].offer(1.0 - out.get("pose_pck_body", NAN), t, frame)
        self.worst["identity"].offer(1.0 - out["identity_photo"], t, frame)
        self.worst["face"].offer(1.0 - out["face_identity_photo"], t, frame)
        self.worst["colour"].offer(out["colour_bg_de"], t, frame)
        self.prev, self.prev_people, self.prev_change = frame.copy(), people, change
        if vec is not None:                   # with identity_every > 1: the last frame embedded
            self.prev_vec, self.prev_face_vec = vec, face_vec
        self.t += 1

    def finish(self):
        if self.prev is not None and self.t > 1:
            self.worst["glitch"].offer(self.prev_change, self.t - 1, self.prev)


def quality_report(photo, frames, aligned_poses: Optional[Iterable] = None, *, clip=None,
                   pose_extractor: Optional[Callable] = None, photo_pose=None, segments=(), fps: Optional[float] = None,
                   settings: QualitySettings = QualitySettings(), label: str = "",
                   progress: Optional[Callable[[int, Optional[int]], None]] = None,
                   should_cancel: Optional[Callable[[], bool]] = None) -> QualityReport:
    """Measure a result against what SteadyDancer promises.

    photo: the photo ([H, W, 3] or [1, H, W, 3], float in [0, 1] or uint8; resized to the frames' size as the
    sampler does). frames: the result: a video file path, a tensor / array [T, H, W, 3] (ComfyUI's IMAGE), or an
    iterable of frames or chunks. aligned_poses: the aligned driving poses the sampler used (``AlignedPoses`` or
    any iterable of pose frames, one per frame), or None. clip: an ``ImageEncoder`` or a function images ->
    [N, D] embeddings, or None (no identity measures). pose_extractor: a function uint8 images [H, W, 3] ->
    pose frames (``pose.load_models(...)`` returns one), or None (no pose following, jerk or generated-pose
    regions). photo_pose: the photo's pose (as AlignPose measured it) for the start gap and the photo's face
    crop; else extracted, else the first driving pose stands in for the face. segments: where later segments
    start (ints, (start, frames, known) tuples or ``GenerationResult.segments``). progress(done, total) after
    every chunk (total None when unknown); should_cancel() polled before every chunk -> ``Cancelled``.
    """
    total = count_frames(frames)
    walker = _Walker(as_photo(photo), iter(aligned_poses) if aligned_poses is not None else None, _embedder(clip),
                     pose_extractor, photo_pose, settings)
    for chunk in iter_chunks(frames, settings.chunk_frames):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"quality report cancelled after {walker.t} frames")
        walker.chunk(chunk)
        if progress is not None:
            progress(walker.t, total)
    if walker.t == 0:
        raise ValueError("no frames to report on: the video is empty")
    walker.finish()
    gap = None
    if photo_pose is not None and walker.first_pose is not None:
        gap = measure_start_gap(photo_pose, walker.first_pose).to_dict()
    notes = walker.notes + _missing_notes(aligned_poses, clip, pose_extractor)
    summary, flagged = summarise(walker.series, walker.first, gap, settings)
    worst = {m: w.ranked() for m, w in walker.worst.items() if w.ranked()}
    thumbs = {i: th for w in walker.worst.values() for i, th in w.thumbnails().items()}
    if isinstance(frames, (str, Path)) and fps is None:
        fps = probe_video(frames).fps or None
    return QualityReport(num_frames=walker.t, frame_hw=walker.hw, fps=fps,
                         segments=_segment_starts(segments, walker.t), series=walker.series, summary=summary,
                         verdicts=verdicts(summary), flagged=flagged, worst=worst, start_gap=gap, notes=notes,
                         label=label, thumbnails=thumbs)


def _missing_notes(aligned_poses, clip, extractor) -> list:
    notes = []
    if aligned_poses is None or extractor is None:
        what = "the aligned poses" if aligned_poses is None else "a pose extractor (DWPose)"
        notes.append(f"pose following and keypoint jerk not measured: give {what}")
    if aligned_poses is None and extractor is None:
        notes.append("no person region: background flicker and colour measured over the whole frame")
    if clip is None:
        notes.append("identity not measured: give the CLIP vision model (clip_vision_h)")
    return notes
