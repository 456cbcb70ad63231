"""``QualityReport``: what a report found — per-frame series, summary values, verdicts, flagged and worst frames —
with a one-line summary in an artist's words and a JSON form (``to_json`` / ``from_json``).

Series and summaries hold NaN where something was not measured (JSON: null); a PSNR of an exact copy is inf
(JSON: "inf"). The worst frames' thumbnails are kept for the plot but not written to JSON.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .thresholds import BAD, CHECK, GOOD, NOT_MEASURED

FORMAT = "steadydancer-quality-report"
VERSION = 1
SERIES = ("pose_pck_body", "pose_pck_hands", "pose_pck_face", "pose_oks", "pose_lost", "jerk_generated",
          "jerk_driving", "identity_photo", "identity_prev", "face_identity_photo", "face_identity_prev",
          "background_change", "colour_bg_de", "colour_person_de", "bg_dL", "bg_da", "bg_db", "person_dL",
          "person_da", "person_db")


def _encode(value):
    """float NaN -> None, +-inf -> "inf" / "-inf", numpy scalars -> Python; lists and dicts recursively."""
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return round(value, 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _decode_number(value):
    if value is None:
        return math.nan
    if value in ("inf", "-inf"):
        return float(value)
    return value


@dataclass
class QualityReport:
    """num_frames, frame_hw (H, W), fps (None when unknown); segments: the first frame of each segment after the
    first (where a long video's windows meet); series: per-frame lists (``SERIES``); summary: the summary values;
    verdicts: {measure: good | check | bad | n/a} (``thresholds.VERDICT_LIMITS``); flagged: frames to look at
    ({"glitch": [...], "lost": [...], "first_frame": [0]}); worst: {measure: [[frame, score], ...]}, worst first;
    start_gap: the start gap's dict (``StartGap.to_dict``) or None; notes: what was not measured and why; label:
    a name for comparisons (e.g. "step cache on"); thumbnails: {frame: uint8 [h, w, 3]} of the worst frames."""

    num_frames: int
    frame_hw: tuple
    fps: Optional[float] = None
    segments: tuple = ()
    series: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    verdicts: dict = field(default_factory=dict)
    flagged: dict = field(default_factory=dict)
    worst: dict = field(default_factory=dict)
    start_gap: Optional[dict] = None
    notes: list = field(default_factory=list)
    label: str = ""
    thumbnails: dict = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        return _encode({
            "format": FORMAT, "version": VERSION, "label": self.label, "num_frames": self.num_frames,
            "frame_hw": list(self.frame_hw), "fps": self.fps, "segments": list(self.segments),
            "summary_line": self.summary_line(), "verdicts": self.verdicts, "summary": self.summary,
            "flagged": self.flagged, "worst": self.worst, "start_gap": self.start_gap, "notes": self.notes,
            "series": self.series,
        })

    def to_json(self, indent: Optional[int] = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "QualityReport":
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a SteadyDancer quality report (JSON without \"format\": "
                             f"\"{FORMAT}\"); pass a file written by the quality report")
        if data.get("version", 0) > VERSION:
            raise ValueError(f"quality report version {data['version']} is newer than this pack reads ({VERSION}); "
                             "update the pack")
        series = {k: [_decode_number(v) for v in values] for k, values in data.get("series", {}).items()}
        summary = {k: _decode_number(v) if not isinstance(v, (list, str)) or v in ("inf", "-inf") else v
                   for k, v in data.get("summary", {}).items()}
        return cls(num_frames=int(data["num_frames"]), frame_hw=tuple(data["frame_hw"]), fps=data.get("fps"),
                   segments=tuple(data.get("segments", ())), series=series, summary=summary,
                   verdicts=dict(data.get("verdicts", {})), flagged=dict(data.get("flagged", {})),
                   worst=dict(data.get("worst", {})), start_gap=data.get("start_gap"),
                   notes=list(data.get("notes", [])), label=str(data.get("label", "")))

    # ------------------------------------------------------------------------------------------------- words
    def value(self, key: str) -> float:
        v = self.summary.get(key)
        return math.nan if v is None else v

    def summary_line(self) -> str:
        """One line in an artist's words, e.g. "first frame = photo (PSNR 52.1 dB); pose followed in 96% of frames;
        identity 0.93 (face 0.88); no glitches; colour steady (max 1.2 dE); start gap 0.04"."""
        parts = [p for p in (self._first_frame_words(), self._pose_words(), self._identity_words(),
                             self._glitch_words(), self._colour_words(), self._start_gap_words()) if p]
        return "; ".join(parts) if parts else "nothing measured"

    def _first_frame_words(self) -> str:
        psnr, verdict = self.value("first_frame_psnr"), self.verdicts.get("first_frame", NOT_MEASURED)
        if math.isnan(psnr):
            return ""
        level = "exact" if math.isinf(psnr) else f"PSNR {psnr:.1f} dB"
        return {GOOD: f"first frame = photo ({level})", CHECK: f"first frame close to the photo ({level})"}.get(
            verdict, f"FIRST FRAME IS NOT THE PHOTO ({level})")

    def _pose_words(self) -> str:
        followed = self.value("pose_followed_fraction")
        if math.isnan(followed):
            return ""
        words = f"pose followed in {followed:.0%} of frames"
        extra = [f"{name} {self.value(key):.2f}" for name, key in (("hands", "pose_pck_hands_mean"),
                                                                   ("face", "pose_pck_face_mean"))
                 if not math.isnan(self.value(key))]
        if extra:
            words += f" ({', '.join(extra)})"
        lost = self.flagged.get("lost", [])
        if lost:
            words += f", person lost in {len(lost)} frame{'s' if len(lost) > 1 else ''} (first {lost[0]})"
        return words

    def _identity_words(self) -> str:
        mean = self.value("identity_photo_mean")
        if math.isnan(mean):
            return ""
        words = f"identity {mean:.2f}"
        face = self.value("face_identity_photo_mean")
        if not math.isnan(face):
            words += f" (face {face:.2f})"
        low = self.value("identity_photo_min")
        if self.verdicts.get("identity") in (CHECK, BAD) or self.verdicts.get("face_identity") in (CHECK, BAD):
            key = "face_identity_photo" if self.verdicts.get("face_identity") in (CHECK, BAD) else "identity_photo"
            words += f", lowest {self.value(key + '_min'):.2f} at frame {int(self.value(key + '_min_frame'))}"
        elif not math.isnan(low):
            words += f", lowest {low:.2f}"
        return words

    def _glitch_words(self) -> str:
        if math.isnan(self.value("background_change_median")):
            return ""
        glitches = self.flagged.get("glitch", [])
        if not glitches:
            return "no glitches"
        shown = ", ".join(str(g) for g in glitches[:5]) + (" ..." if len(glitches) > 5 else "")
        return f"{len(glitches)} glitch frame{'s' if len(glitches) > 1 else ''} ({shown})"

    def _colour_words(self) -> str:
        de = self.value("colour_bg_de_max")
        if math.isnan(de):
            return ""
        onset = self.summary.get("colour_drift_frame")
        shift = self.summary.get("colour_shift") or ""
        if onset is not None and not (isinstance(onset, float) and math.isnan(onset)):
            words = f"colour drift {de:.1f} dE{f' ({shift})' if shift else ''} from frame {int(onset)}"
        else:
            words = f"colour steady (max {de:.1f} dE)"
        if self.verdicts.get("person_colour") in (CHECK, BAD):
            person = self.value("colour_person_de_max")
            words += f", person's colour off by {person:.1f} dE at frame {int(self.value('colour_person_de_max_frame'))}"
        return words

    def _start_gap_words(self) -> str:
        gap = self.value("start_gap")
        return "" if math.isnan(gap) else f"start gap {gap:.2f}"

    def problems(self) -> list:
        """The measures judged bad, then those worth a check: [(measure, verdict)]."""
        return [(m, v) for level in (BAD, CHECK) for m, v in self.verdicts.items() if v == level]

    def plot(self, width_px: int = 1600) -> np.ndarray:
        """The report's picture: uint8 [H, W, 3] (``plot.plot_report``; needs matplotlib)."""
        from .plot import plot_report

        return plot_report(self, width_px=width_px)
