"""Quality report: numbers and a picture for a SteadyDancer result, measured offline with the models the pack
already has (DWPose for keypoints, the CLIP vision tower for identity).

One concern per module: ``first_frame`` (frame 0 vs the photo), ``pose_following`` (PCK / OKS / lost / jerk),
``identity`` (CLIP cosines), ``smoothness`` (background change, glitches), ``colour`` (Lab drift), ``start_gap``
(photo pose vs first driving pose); ``keypoints`` / ``regions`` (where the person and the face are); ``report``
(the streaming walk) -> ``result.QualityReport``; ``plot`` and ``compare`` (matplotlib pictures and tables);
``files`` (the JSON and PNG written beside a video); ``thresholds`` (every limit, once).
"""
from .compare import compare_reports
from .files import report_paths, write_report
from .identity import clip_embedder
from .report import quality_report
from .result import QualityReport
from .start_gap import StartGap, start_gap
from .thresholds import VERDICT_LIMITS, Limit, QualitySettings

__all__ = ["QualityReport", "QualitySettings", "Limit", "VERDICT_LIMITS", "StartGap", "clip_embedder",
           "compare_reports", "quality_report", "report_paths", "start_gap", "write_report"]
