"""A report's files beside the video they describe: ``video.quality.json`` and ``video.quality.png``, each written
through a temporary name and renamed into place, never over an existing file unless asked."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..safe_write import write_beside


def report_paths(video_path) -> tuple[Path, Path]:
    """(json, png) beside ``video_path``: ``clip.mp4`` -> ``clip.quality.json``, ``clip.quality.png``."""
    video = Path(video_path)
    stem = video.with_suffix("") if video.suffix else video
    return stem.with_name(stem.name + ".quality.json"), stem.with_name(stem.name + ".quality.png")


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image, np.uint8)).save(path, format="PNG")


def write_report(report, video_path, overwrite: bool = False, picture: np.ndarray | None = None) -> tuple[Path, Path]:
    """Write the report's JSON and its picture (``picture`` or ``report.plot()``) beside ``video_path``.

    Without ``overwrite`` an existing file is refused (``FileExistsError`` naming it) before anything is written.
    """
    json_path, png_path = report_paths(video_path)
    if not overwrite:
        for path in (json_path, png_path):
            if path.exists():
                raise FileExistsError(f"{path} exists; remove it or ask to overwrite the report")
    image = report.plot() if picture is None else picture
    text = report.to_json()
    write_beside(json_path, lambda tmp: tmp.write_text(text), replace=overwrite)
    write_beside(png_path, lambda tmp: save_png(image, tmp), replace=overwrite)
    return json_path, png_path
