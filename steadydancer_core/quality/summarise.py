"""From per-frame series to the summary values the verdicts judge and the frames worth a look."""
from __future__ import annotations

import warnings
from typing import Optional

import numpy as np

from .colour import drift_onset
from .smoothness import glitch_frames
from .thresholds import VERDICT_LIMITS, QualitySettings

NAN = float("nan")


def _values(series: dict, key: str) -> np.ndarray:
    return np.asarray(series.get(key, []), np.float64)


def _mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else NAN


def _extreme(values: np.ndarray, lowest: bool) -> tuple:
    """(value, frame) of the least (or greatest) finite value; (NaN, None) without one."""
    if not np.isfinite(values).any():
        return NAN, None
    masked = np.where(np.isfinite(values), values, np.inf if lowest else -np.inf)
    i = int(np.argmin(masked) if lowest else np.argmax(masked))
    return float(values[i]), i


def colour_shift_words(delta_lab: np.ndarray) -> str:
    """The dominant direction of a L*a*b* change: lighter / darker, redder / greener, yellower / bluer."""
    if not np.isfinite(delta_lab).all():
        return ""
    axis = int(np.argmax(np.abs(delta_lab)))
    names = (("darker", "lighter"), ("greener", "redder"), ("bluer", "yellower"))[axis]
    return names[int(delta_lab[axis] > 0)]


def summarise(series: dict, first: dict, gap: Optional[dict], settings: QualitySettings) -> tuple[dict, dict]:
    """-> (summary, flagged). ``first``: the first-frame values; ``gap``: ``StartGap.to_dict()`` or None."""
    s: dict = dict(first)
    flagged: dict = {}
    first_limit = VERDICT_LIMITS["first_frame"]
    if first_limit.judge(first.get("first_frame_psnr")) == "bad":
        flagged["first_frame"] = [0]

    body = _values(series, "pose_pck_body")
    scored = body[np.isfinite(body)]
    s["pose_followed_fraction"] = float((scored >= settings.followed_pck).mean()) if len(scored) else NAN
    for key in ("pose_pck_body", "pose_pck_hands", "pose_pck_face", "pose_oks"):
        s[key + "_mean"] = _mean(_values(series, key))
    lost = _values(series, "pose_lost")
    s["pose_lost_count"] = int(np.nansum(lost)) if np.isfinite(lost).any() else NAN
    flagged["lost"] = [int(i) for i in np.flatnonzero(lost == 1)]
    s["pose_pck_body_min"], s["pose_pck_body_min_frame"] = _extreme(body, lowest=True)

    jerk_g, jerk_d = _mean(_values(series, "jerk_generated")), _mean(_values(series, "jerk_driving"))
    s["jerk_generated_mean"], s["jerk_driving_mean"] = jerk_g, jerk_d
    s["jerk_ratio"] = jerk_g / jerk_d if jerk_d > 0 else NAN

    for key in ("identity_photo", "identity_prev", "face_identity_photo", "face_identity_prev"):
        values = _values(series, key)
        s[key + "_mean"] = _mean(values)
        s[key + "_min"], s[key + "_min_frame"] = _extreme(values, lowest=True)

    change = _values(series, "background_change")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        s["background_change_median"] = float(np.nanmedian(change)) if np.isfinite(change).any() else NAN
    s["background_change_max"], s["background_change_max_frame"] = _extreme(change, lowest=False)
    glitches = glitch_frames(change, settings.glitch_factor, settings.glitch_min_levels)
    flagged["glitch"] = glitches
    s["glitch_count"] = len(glitches) if np.isfinite(change).any() else NAN

    bg, body_de = _values(series, "colour_bg_de"), _values(series, "colour_person_de")
    s["colour_bg_de_max"], worst_frame = _extreme(bg, lowest=False)
    s["colour_bg_de_max_frame"] = worst_frame
    s["colour_person_de_max"], s["colour_person_de_max_frame"] = _extreme(body_de, lowest=False)
    s["colour_drift_frame"] = drift_onset(bg, settings.drift_de, settings.drift_min_frames)
    s["colour_shift"] = ""
    if worst_frame is not None:
        shift = np.array([_values(series, f"bg_d{c}")[worst_frame] for c in "Lab"])
        s["colour_shift"] = colour_shift_words(shift)
    s["start_gap"] = NAN if gap is None or gap.get("start_gap") is None else float(gap["start_gap"])
    return s, {k: v for k, v in flagged.items() if v}
