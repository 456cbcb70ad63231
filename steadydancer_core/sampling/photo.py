"""A photo with transparency: composited on a background colour before anything else sees it.

Backgrounds are named as the ``background`` widget and the CLI's ``--background`` take them: ``white`` (the default,
``options.PHOTO``), ``black`` or ``#RRGGBB``. Images are torch float32 [H, W, 3] (or [1, H, W, 3]) in [0, 1];
``alpha`` [H, W] in [0, 1] is the opacity (1 = opaque; ComfyUI's MASK is 1 - alpha).
"""
from __future__ import annotations

import torch

BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}


def parse_background(value) -> tuple:
    """``white``, ``black`` or ``#RRGGBB`` (any case; an (r, g, b) tuple of 0..255 passes) -> (r, g, b) 0..255."""
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in value):
        return value
    name = value.strip().lower() if isinstance(value, str) else ""
    if name in BACKGROUNDS:
        return BACKGROUNDS[name]
    if len(name) == 7 and name[0] == "#":
        try:
            return tuple(int(name[i:i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            pass
    raise ValueError(f"background must be white, black or #RRGGBB (e.g. #808080), got {value!r}")


def check_background(value) -> str | None:
    """The background option's rule: None when ``value`` names a background, else why not."""
    try:
        parse_background(value)
    except ValueError:
        return "must be white, black or #RRGGBB (e.g. #808080)"
    return None


def background_name(rgb: tuple) -> str:
    """(r, g, b) -> its name (``white``, ``black``) or ``#RRGGBB``."""
    for name, value in BACKGROUNDS.items():
        if tuple(rgb) == value:
            return name
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def composite_photo(photo: torch.Tensor, alpha: torch.Tensor, background) -> torch.Tensor:
    """``photo`` [H, W, 3] (or [1, H, W, 3]) in [0, 1] over ``background`` where ``alpha`` [H, W] (or [1, H, W])
    is below 1: ``photo * alpha + background * (1 - alpha)``, same shape and dtype as ``photo``."""
    rgb = parse_background(background)
    alpha = alpha.reshape(alpha.shape[-2:]) if alpha.ndim == 3 and alpha.shape[0] == 1 else alpha
    if alpha.ndim != 2:
        raise ValueError(f"alpha must be one [H, W] mask, got shape {tuple(alpha.shape)}")
    if tuple(alpha.shape) != tuple(photo.shape[-3:-1]):
        raise ValueError(f"alpha is {alpha.shape[1]}x{alpha.shape[0]} but the photo is "
                         f"{photo.shape[-2]}x{photo.shape[-3]}; they must be the same size")
    a = alpha.to(device=photo.device, dtype=photo.dtype)[..., None]
    back = torch.tensor(rgb, dtype=photo.dtype, device=photo.device).div(255.0)
    return (photo * a + back * (1.0 - a)).clamp_(0.0, 1.0)
