"""The report's picture (matplotlib, drawn off-screen with the Agg canvas: no pyplot, no global backend state):
curves over time for each measure, the segment boundaries, the flagged frames, and the worst frames as thumbnails.
Returns uint8 RGB arrays [H, W, 3]."""
from __future__ import annotations

import math
import textwrap

import numpy as np

from .thresholds import VERDICT_LIMITS

DPI = 100
VERDICT_COLOURS = {"good": "#2e7d32", "check": "#ef6c00", "bad": "#c62828", "n/a": "#757575"}
# panels: (title, [(series, label, colour)], y-label, y-limits or None)
PANELS = (
    ("Pose following (DWPose on the frames vs the driving pose)",
     [("pose_pck_body", "PCK body", "#1565c0"), ("pose_pck_hands", "PCK hands", "#6a1b9a"),
      ("pose_pck_face", "PCK face", "#00838f"), ("pose_oks", "OKS", "#9e9d24")], "fraction", (-0.02, 1.02)),
    ("Identity (CLIP cosine)",
     [("identity_photo", "frame vs photo", "#1565c0"), ("face_identity_photo", "face vs photo", "#c2185b"),
      ("identity_prev", "frame vs previous", "#90a4ae")], "cosine", None),
    ("Background change between frames",
     [("background_change", "mean |change| (levels of 255)", "#37474f")], "levels", None),
    ("Keypoint jerk",
     [("jerk_generated", "generated", "#d84315"), ("jerk_driving", "driving", "#546e7a")], "person sizes", None),
    ("Colour vs frame 0 (delta E, CIE76)",
     [("colour_bg_de", "background", "#5d4037"), ("colour_person_de", "person", "#e53935")], "delta E", None),
)


def _figure(width_px: int, height_px: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _to_rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _has_data(series: dict, keys) -> bool:
    return any(np.isfinite(np.asarray(series.get(k, []), np.float64)).any() for k in keys)


def _mark_segments(ax, segments) -> None:
    for i, start in enumerate(segments):
        ax.axvline(start, color="#9e9e9e", linestyle="--", linewidth=1,
                   label="segment start" if i == 0 else None)


def _panel(ax, report, title, lines, ylabel, ylim) -> None:
    frames = np.arange(report.num_frames)
    for key, label, colour in lines:
        values = np.asarray(report.series.get(key, []), np.float64)
        if np.isfinite(values).any():
            ax.plot(frames[:len(values)], values, color=colour, linewidth=1.4, label=label)
    _mark_segments(ax, report.segments)
    key = lines[0][0]
    if key == "background_change":
        for i, g in enumerate(report.flagged.get("glitch", [])):
            ax.axvline(g, color=VERDICT_COLOURS["bad"], linewidth=2, alpha=0.6, label="glitch" if i == 0 else None)
    if key == "colour_bg_de":
        drift = report.summary.get("colour_drift_frame")
        if drift is not None and not (isinstance(drift, float) and math.isnan(drift)):
            ax.axvline(drift, color=VERDICT_COLOURS["bad"], linewidth=2, alpha=0.6, label=f"drift from {int(drift)}")
        ax.axhline(VERDICT_LIMITS["colour"].good, color=VERDICT_COLOURS["check"], linestyle=":", linewidth=1)
    if key == "pose_pck_body":
        for i, f in enumerate(report.flagged.get("lost", [])):
            ax.axvline(f, color=VERDICT_COLOURS["bad"], alpha=0.3, label="person lost" if i == 0 else None)
    from matplotlib.ticker import MaxNLocator  # matplotlib loads only when a picture is drawn

    ax.set_title(title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_xlim(-0.5, max(report.num_frames - 0.5, 0.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, loc="lower left", ncol=4, framealpha=0.8)


CAPTIONS = {"glitch": "jump {:.0f} levels", "pose": "PCK body {:.2f}", "identity": "identity {:.2f}",
            "face": "face identity {:.2f}", "colour": "colour {:.1f} dE"}


def _caption(measure: str, score: float) -> str:
    # the worst-frame scores are "badness": 1 - similarity for pose and identity, the value itself otherwise
    value = 1.0 - score if measure in ("pose", "identity", "face") else score
    return CAPTIONS[measure].format(value)


def _worst_items(report, limit: int = 8) -> list:
    """[(frame, caption)] of the worst frames that have thumbnails and a score above 0, one per frame, taking the
    measures' worst in turn."""
    seen, items = set(), []
    for rank in range(max((len(v) for v in report.worst.values()), default=0)):
        for measure in ("glitch", "pose", "identity", "face", "colour"):
            entries = report.worst.get(measure, [])
            if rank < len(entries) and entries[rank][1] > 1e-6:
                frame = int(entries[rank][0])
                if frame not in seen and frame in report.thumbnails:
                    seen.add(frame)
                    items.append((frame, f"frame {frame}: {_caption(measure, entries[rank][1])}"))
    return items[:limit]


def plot_report(report, width_px: int = 1600) -> np.ndarray:
    """The whole report as one picture: uint8 [H, W, 3]."""
    panels = [p for p in PANELS if _has_data(report.series, [k for k, _, _ in p[1]])]
    thumbs = _worst_items(report)
    heights = [1.1] + [2.2] * len(panels) + ([2.0] if thumbs else [])
    fig = _figure(width_px, int(sum(heights) * DPI))
    grid = fig.add_gridspec(len(heights), 1, height_ratios=heights, hspace=0.55, left=0.05, right=0.99, top=0.99,
                            bottom=0.04)
    head = fig.add_subplot(grid[0])
    head.axis("off")
    title = (report.label + ": " if report.label else "") + report.summary_line()
    head.text(0, 1, "\n".join(textwrap.wrap(title, 150)), va="top", fontsize=11, weight="bold",
              transform=head.transAxes)
    verdict_x = 0.0
    for name, verdict in report.verdicts.items():
        if verdict == "n/a":
            continue
        text = f"{name}: {verdict}"
        head.text(verdict_x, 0.05, text, color=VERDICT_COLOURS[verdict], fontsize=9, transform=head.transAxes)
        verdict_x += (len(text) + 3) * 7.0 / width_px
    for i, (title, lines, ylabel, ylim) in enumerate(panels):
        ax = fig.add_subplot(grid[1 + i])
        _panel(ax, report, title, lines, ylabel, ylim)
        if i == len(panels) - 1:
            ax.set_xlabel("frame", fontsize=9)
    if thumbs:
        sub = grid[-1].subgridspec(1, len(thumbs), wspace=0.05)
        for j, (frame, caption) in enumerate(thumbs):
            ax = fig.add_subplot(sub[0, j])
            ax.imshow(report.thumbnails[frame])
            ax.set_title(caption, fontsize=8)
            ax.axis("off")
    return _to_rgb(fig)
