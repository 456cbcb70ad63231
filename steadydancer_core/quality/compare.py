"""Several reports side by side (e.g. step cache on / off, fp8 vs fp16, a 4-step LoRA vs 40 steps): a Markdown
table of the summary values with their verdicts, and one picture with every run's curves."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .thresholds import BAD, CHECK

# (column, summary key, format, verdict measure or None)
COLUMNS = (
    ("first frame PSNR", "first_frame_psnr", "{:.1f}", "first_frame"),
    ("pose followed", "pose_followed_fraction", "{:.0%}", "pose"),
    ("PCK hands", "pose_pck_hands_mean", "{:.2f}", "hands"),
    ("PCK face", "pose_pck_face_mean", "{:.2f}", "face"),
    ("OKS", "pose_oks_mean", "{:.2f}", None),
    ("lost", "pose_lost_count", "{:.0f}", "lost"),
    ("identity", "identity_photo_mean", "{:.3f}", None),
    ("identity min", "identity_photo_min", "{:.3f}", "identity"),
    ("face identity min", "face_identity_photo_min", "{:.3f}", "face_identity"),
    ("jerk ratio", "jerk_ratio", "{:.2f}", "jerk"),
    ("bg change", "background_change_median", "{:.2f}", None),
    ("glitches", "glitch_count", "{:.0f}", "glitches"),
    ("bg colour max dE", "colour_bg_de_max", "{:.1f}", "colour"),
    ("person colour max dE", "colour_person_de_max", "{:.1f}", "person_colour"),
    ("drift from", "colour_drift_frame", "{:.0f}", None),
)
MARKS = {BAD: " (bad)", CHECK: " (check)"}
CURVES = (("pose_pck_body", "PCK body"), ("identity_photo", "identity vs photo"),
          ("background_change", "background change (levels)"), ("colour_bg_de", "background colour dE"))


def _cell(report, key: str, fmt: str, measure: Optional[str]) -> str:
    value = report.summary.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        text = "exact" if value > 0 else "-inf"
    else:
        text = fmt.format(value)
    return text + MARKS.get(report.verdicts.get(measure, ""), "") if measure else text


@dataclass
class Comparison:
    """labels, reports and the table as Markdown (``table``); ``plot()`` draws every run's curves."""

    labels: list
    reports: list
    table: str

    def plot(self, width_px: int = 1600) -> np.ndarray:
        return plot_comparison(self.reports, self.labels, width_px)


def comparison_table(reports: Sequence, labels: Sequence[str]) -> str:
    """Markdown table: one row per run, the columns of ``COLUMNS`` that any run measured."""
    used = [c for c in COLUMNS if any(_cell(r, c[1], c[2], c[3]) != "-" for r in reports)]
    head = "| run | frames | " + " | ".join(c[0] for c in used) + " |"
    rule = "|" + "---|" * (len(used) + 2)
    rows = [f"| {label} | {r.num_frames} | " + " | ".join(_cell(r, *c[1:]) for c in used) + " |"
            for label, r in zip(labels, reports)]
    return "\n".join([head, rule, *rows])


def compare_reports(reports: Sequence, labels: Optional[Sequence[str]] = None) -> Comparison:
    """reports: ``QualityReport``s (or their JSON texts). labels: names for the runs (default: each report's
    label, else "run 1", "run 2", ...)."""
    from .result import QualityReport

    reports = [QualityReport.from_json(r) if isinstance(r, str) else r for r in reports]
    if not reports:
        raise ValueError("compare_reports needs at least one report")
    if labels is None:
        labels = [r.label or f"run {i + 1}" for i, r in enumerate(reports)]
    if len(labels) != len(reports):
        raise ValueError(f"{len(labels)} labels for {len(reports)} reports: give one label per report")
    labels = list(labels)
    return Comparison(labels, reports, comparison_table(reports, labels))


def plot_comparison(reports: Sequence, labels: Sequence[str], width_px: int = 1600) -> np.ndarray:
    """One panel per curve of ``CURVES``, one line per run -> uint8 [H, W, 3]."""
    from .plot import DPI, _figure, _to_rgb

    curves = [c for c in CURVES if any(np.isfinite(np.asarray(r.series.get(c[0], []), np.float64)).any()
                                       for r in reports)]
    fig = _figure(width_px, int((0.6 + 2.2 * max(len(curves), 1)) * DPI))
    if not curves:
        fig.text(0.5, 0.5, "nothing measured in these reports", ha="center")
        return _to_rgb(fig)
    axes = fig.subplots(len(curves), 1, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.05, right=0.99, top=0.95, bottom=0.06, hspace=0.45)
    for ax, (key, title) in zip(axes, curves):
        for label, r in zip(labels, reports):
            values = np.asarray(r.series.get(key, []), np.float64)
            if np.isfinite(values).any():
                ax.plot(np.arange(len(values)), values, linewidth=1.3, label=label)
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, loc="lower left", ncol=len(reports))
    axes[-1].set_xlabel("frame", fontsize=9)
    return _to_rgb(fig)
