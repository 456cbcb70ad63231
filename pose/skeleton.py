"""Skeleton tables of the official SteadyDancer pose drawing (OpenPose-18 body, 21-point hands).

Colours are given in *canvas* order, exactly the numbers the official ``draw_pose`` passes to OpenCV.
The official frames then go through ``cv2.COLOR_BGR2RGB`` before being saved as RGB, so what the
model saw is each colour reversed (neck->R-shoulder blue, neck->nose red, hand joints red).
``rgb(colour)`` gives the displayed RGB value; the renderer draws these reversed colours directly
into an RGB canvas, which is equivalent.
"""
from __future__ import annotations

# Body limbs as (a, b) point pairs, 0-based. Only the first ``NUM_DRAWN_LIMBS`` are drawn (the
# official loop is ``range(17)``: the two shoulder-ear limbs never appear).
BODY_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
    (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
)
NUM_DRAWN_LIMBS = 17
NUM_BODY_JOINTS = 18

# One colour per limb i (< 17) and per body joint j (0..17), canvas order.
BODY_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)

LIMB_HALF_WIDTH = 4      # ellipse minor semi-axis, pixels of the drawn canvas
JOINT_RADIUS = 4         # body joints: filled circles
LIMB_DIM = 0.6           # the whole canvas is multiplied by this after the limbs (truncated to uint8)

HAND_EDGES: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10),
    (10, 11), (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
)
HAND_LINE_THICKNESS = 2
HAND_JOINT_RADIUS = 4
HAND_JOINT_COLOUR = (0, 0, 255)  # canvas order
# Hand points are drawn only where int(coordinate * size) exceeds this (i.e. is >= 1).
HAND_EPS = 0.01

FACE_RADIUS = 3
FACE_COLOUR = (255, 255, 255)


def hand_edge_colour(edge: int, num_edges: int = len(HAND_EDGES)) -> tuple[float, float, float]:
    """Colour of hand edge ``edge`` in canvas order: HSV(edge/num_edges, 1, 1) * 255, as floats.

    Same arithmetic as ``matplotlib.colors.hsv_to_rgb`` in float64; OpenCV rounds the floats
    when drawing (so the exact float matters at .5 boundaries).
    """
    h = edge / float(num_edges)
    i = int(h * 6.0)
    f = h * 6.0 - i
    v, p, q, t = 1.0, 0.0, 1.0 - f, 1.0 - (1.0 - f)
    rgb = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))[i % 6]
    return tuple(c * 255 for c in rgb)  # type: ignore[return-value]


HAND_EDGE_COLOURS: tuple[tuple[float, float, float], ...] = tuple(
    hand_edge_colour(e) for e in range(len(HAND_EDGES))
)


def rgb(colour):
    """Displayed RGB of a canvas-order colour (the official BGR->RGB swap)."""
    return tuple(reversed(tuple(colour)))
