"""Writes the template browser's thumbnails, ``example_workflows/<workflow>.jpg``: renders of the pack's pose code on
the tiny kit's example photo and driving video (the photo, and the driving poses aligned to it by ``pose.align``
and drawn by ``pose.render_frames`` over it, as AlignPose's preview shows them), with the workflow's title and
one-line description (ComfyUI 0.8's template browser shows only the file name of a custom node's template, so the
thumbnail carries the description). The tiny kit's pose models have random weights, so the keypoints are those of
the stick figure the kit draws, not detections.

    python scripts/make_thumbnails.py            # rewrite the thumbnails (JPEG, < 100 KB each)

The jpgs are committed; run this again when a workflow is added or renamed.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import build_workflows  # noqa: E402
import pose  # noqa: E402
import steadydancer_core as sd  # noqa: E402
from steadydancer_core import tiny_kit  # noqa: E402

SIZE = 480                      # square: the browser's cards are square
PANEL_HW = (305, 183)           # portrait panels (the example photo is portrait)
CAPTION_TOP = 340
BACKGROUND = (28, 28, 36)
DIM = 0.6                       # the photo under the poses, as AlignPose's preview draws it
QUALITY = 85
TITLES = {
    "steadydancer_basic_dance": "SteadyDancer: basic dance",
    "steadydancer_long_video": "SteadyDancer: long video",
    "steadydancer_24gb_fp8_distill": "SteadyDancer: 24 GB, 4 steps",
}


def figure_pose(image_hw, cx: float, cy: float, height: float, phase: float) -> pose.PoseFrame:
    """The OpenPose-18 body of the stick figure ``tiny_kit`` draws (centre, height, arm swing phase)."""
    h, w = image_hw
    swing = math.sin(phase)
    neck, hip = np.array([cx, cy - 0.32 * height]), np.array([cx, cy + 0.05 * height])
    head = np.array([cx, cy - 0.42 * height])
    joints = np.zeros((18, 2))
    joints[0], joints[1] = head + (0, 0.02 * height), neck
    for side, (shoulder, elbow, wrist, hip_i, knee, ankle, eye, ear) in (
            (-1, (2, 3, 4, 8, 9, 10, 14, 16)), (1, (5, 6, 7, 11, 12, 13, 15, 17))):   # the person's right: image left
        hand = np.array([cx + side * 0.25 * height, cy - 0.3 * height + side * swing * 0.15 * height])
        foot = np.array([cx + side * 0.15 * height + swing * 0.05 * height, cy + 0.45 * height])
        side_hip = hip + (side * 0.05 * height, 0)
        joints[shoulder], joints[elbow], joints[wrist] = neck + 0.3 * (hand - neck), neck + 0.65 * (hand - neck), hand
        joints[hip_i], joints[knee], joints[ankle] = side_hip, (side_hip + foot) / 2, foot
        joints[eye], joints[ear] = head + (side * 0.03 * height, -0.01 * height), head + (side * 0.06 * height, 0)
    return pose.PoseFrame(bodies=(joints / (w, h))[None], body_visible=np.ones((1, 18), bool),
                          hands=-np.ones((1, 2, 21, 2)), faces=-np.ones((1, 68, 2)), image_hw=image_hw)


def pose_renders(photo_path: Path, video_path: Path):
    """(the photo uint8 [H, W, 3], [the aligned driving pose over the dimmed photo, per driving frame])."""
    photo = cv2.cvtColor(cv2.imread(str(photo_path)), cv2.COLOR_BGR2RGB)
    (h, w), (vh, vw) = photo.shape[:2], tiny_kit.VIDEO_HW
    frames = sum(len(chunk) for chunk in sd.iter_video_frames(str(video_path)))
    reference = figure_pose((h, w), w / 2, h * 0.55, h * 0.8, 0.0)
    driving = pose.PoseSequence([figure_pose((vh, vw), vw / 2 + 10 * math.sin(i / 2), vh * 0.55, vh * 0.8, i / 1.5)
                                 for i in range(frames)], (vh, vw))
    aligned = pose.align(reference, driving)
    backdrop = (photo * DIM).astype(np.uint8)
    overlays = [np.where(drawn.any(axis=-1, keepdims=True), drawn, backdrop)
                for drawn in pose.render_frames(aligned.frames, aligned.canvas_hw, output_hw=(h, w))]
    return photo, overlays


def _panel(image: np.ndarray, hw) -> Image.Image:
    return Image.fromarray(cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA))


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + ([line] if line else [])


def thumbnail(title: str, description: str, panels: list[np.ndarray]) -> Image.Image:
    """Panels side by side (arrows between the first and the rest), the title and description under them."""
    card = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(card)
    count = len(panels)
    gap = 30 if count == 2 else 8
    panel_w = min(PANEL_HW[1], (SIZE - 24 - gap * (count - 1)) // count)
    panel_h = min(PANEL_HW[0], int(panel_w / 0.6))
    x = (SIZE - (panel_w * count + gap * (count - 1))) // 2
    y = 20 + (PANEL_HW[0] - panel_h) // 2
    for i, image in enumerate(panels):
        card.paste(_panel(image, (panel_h, panel_w)), (x, y))
        if i == 0 and count == 2:
            mid = y + panel_h // 2
            draw.polygon([(x + panel_w + 8, mid - 9), (x + panel_w + gap - 8, mid), (x + panel_w + 8, mid + 9)],
                         fill=(120, 200, 255))
        x += panel_w + gap
    # the browser shows the card at about half size: 30 / 21 px here read as 15 / 10 px there
    title_font, text_font = ImageFont.load_default(size=30), ImageFont.load_default(size=21)
    while draw.textlength(title, font=title_font) > SIZE - 36 and title_font.size > 16:
        title_font = ImageFont.load_default(size=title_font.size - 2)
    draw.text((18, CAPTION_TOP), title, font=title_font, fill=(240, 240, 245))
    for i, line in enumerate(_wrap(draw, description, text_font, SIZE - 36)[:3]):
        draw.text((18, CAPTION_TOP + 42 + 26 * i), line, font=text_font, fill=(185, 185, 200))
    return card


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        photo_path, video_path = tiny_kit.write_inputs(Path(tmp))
        photo, overlays = pose_renders(photo_path, video_path)
    picks = [overlays[round(i * (len(overlays) - 1) / 2)] for i in range(3)]
    for name, build in build_workflows.WORKFLOWS.items():
        description = " ".join(build.__doc__.split())
        panels = [photo] + (picks if name == "steadydancer_long_video" else [overlays[0]])
        target = REPO / "example_workflows" / f"{name}.jpg"
        thumbnail(TITLES.get(name, name), description, panels).save(target, "JPEG", quality=QUALITY, optimize=True)
        print(f"wrote {target.relative_to(REPO)} ({target.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
