"""The photo's transparency in the nodes: Load Image's MASK (1 = transparent) + the ``background`` widget.

AlignPose and SteadyDancerSampler both take an optional ``photo_mask`` and a ``background`` widget, so the person
is detected on, and the video starts from, the same composited photo.
"""
from __future__ import annotations

import torch

from ..steadydancer_core import background_name, composite_photo, parse_background

PHOTO_MASK_INPUT = ("MASK", {"tooltip": (
    "The photo's transparency: connect the MASK output of the Load Image node that loads the photo (1 = "
    "transparent). Transparent parts are filled with the background colour; a photo without transparency gives "
    "an empty mask and stays as it is.")})


def composite_with_mask(photo: torch.Tensor, photo_mask, background: str, node: str):
    """IMAGE [1, H, W, 3] and an optional MASK [H, W] / [1, H, W] (1 = transparent) -> (photo, note or None).

    A missing mask, or one with nothing transparent (Load Image gives a 64x64 zero mask for a photo without an
    alpha channel), leaves the photo unchanged; otherwise it is composited on ``background`` and the note says so.
    """
    try:
        rgb = parse_background(background)
    except ValueError as err:
        raise ValueError(f"{node}: {err}") from None
    if photo_mask is None:
        return photo, None
    if not isinstance(photo_mask, torch.Tensor):
        raise TypeError(f"{node}: photo_mask must be a MASK, got {type(photo_mask).__name__}")
    mask = photo_mask[0] if photo_mask.ndim == 3 and photo_mask.shape[0] == 1 else photo_mask
    if mask.ndim != 2:
        raise ValueError(f"{node}: photo_mask must be one mask [H, W] (or [1, H, W]), got shape "
                         f"{tuple(photo_mask.shape)}; connect the MASK of the Load Image node that loads the photo")
    mask = mask.float()
    low, high = float(mask.amin()), float(mask.amax())
    if not (low >= 0.0 and high <= 1.0):
        raise ValueError(f"{node}: photo_mask values must be in 0..1 (1 = transparent), got {low:g}..{high:g}")
    if high <= 0.0:
        return photo, None                              # nothing transparent
    h, w = int(photo.shape[-3]), int(photo.shape[-2])
    if tuple(mask.shape) != (h, w):
        raise ValueError(f"{node}: photo_mask is {mask.shape[1]}x{mask.shape[0]} but the photo is {w}x{h}; "
                         "connect the MASK output of the same Load Image node as the photo (or resize the mask "
                         "to the photo)")
    out = composite_photo(photo, 1.0 - mask, rgb)
    share = float(mask.mean()) * 100
    return out, f"photo composited on {background_name(rgb)} using the mask ({share:.0f}% transparent)"
