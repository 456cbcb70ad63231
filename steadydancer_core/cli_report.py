"""The CLI's quality report (``--report``): the written video measured against the photo and the aligned poses it
was made from, with the pack's own models, and ``OUT.quality.json`` / ``OUT.quality.png`` written beside it."""
from __future__ import annotations

import logging
from pathlib import Path

from . import QualitySettings, quality_report, write_report

log = logging.getLogger("steadydancer")


def report_on(out: Path, model, result, fps: float, identity_every: int, overwrite: bool, prepared=None,
              pose_models=None, progress=None) -> str:
    """Measure the video at ``out`` (made by ``result``, ``generate``'s result) and write its report files beside
    it; returns the report's one-line summary. prepared / pose_models: ``pose.prepare``'s result and the pose models
    that made it (pose following, the photo's pose); None with --pose-dir (no keypoints)."""
    with model.use("image_encoder"):
        report = quality_report(result.photo, out, prepared.aligned if prepared is not None else None,
                                clip=model.image_encoder, pose_extractor=pose_models,
                                photo_pose=prepared.reference if prepared is not None else None,
                                segments=result.segments, fps=fps, label=out.name,
                                settings=QualitySettings(identity_every=identity_every), progress=progress)
    json_path, png_path = write_report(report, out, overwrite=overwrite)
    log.info("quality report written: %s, %s", json_path, png_path)
    return report.summary_line()
