"""Reading a photo (or a pose frame image) from a file: the header first, one decode, shrunk before anything else.

The size stated in the file's header is checked before any pixel is decoded: more than ``PHOTO_MAX_PIXELS`` pixels,
or an aspect beyond ``PHOTO_MAX_ASPECT``:1, is refused with an ``ImageReadError`` naming the limit and the fix.
An image above ``PHOTO_WORK_PIXELS`` (the sampler's largest output area: no step of the pipeline uses more pixels of
the photo) is shrunk while it is read: a JPEG is decoded at 1/2, 1/4 or 1/8 of its size by the JPEG decoder itself
(never below the working size), then every format is resized (Lanczos) to the working size, aspect kept, one strip of
rows at a time: each strip is converted, its transparency composited on the background (``composite_photo``'s
arithmetic) and shrunk, so neither a converted full-size copy nor a full-size float copy of the photo ever exists. The EXIF orientation is
applied as OpenCV applies it. Images at or below the working size come back exactly as ``cv2.imdecode`` gives them
(JPEG, PNG 8 / 16 bit, WebP, BMP, EXIF orientations; tests/test_hostile_photo.py compares them).

Peak host memory of a read: the decoded image at the decoder's size (at most 4 bytes per pixel: Pillow keeps 8-bit
RGB as 4 bytes too) plus the working-size result and one strip; ``benchmarks/bench_hostile_memory.py`` measures it (``docs/limits.md``).
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .sampling.photo import composite_photo

PHOTO_MAX_PIXELS = 1 << 27            # 134 megapixels (e.g. 16384 x 8192): larger headers are refused unread
PHOTO_WORK_PIXELS = 4096 * 4096       # the sampler's max_area ceiling: larger photos are shrunk to this at decode
PHOTO_MAX_ASPECT = 16                 # longest side / shortest side
COMPOSITE_PIXELS = 1 << 20            # pixels composited at a time (float32 strips: ~12 MB per temporary)
STRIP_PIXELS = 1 << 22                # source pixels shrunk at a time (a strip of an image above the working size)
LANCZOS_SUPPORT = 3.0                 # Lanczos reach in output pixels (times the scale in source pixels)
# formats read (Pillow's names); others (EPS, PSD, ...) are refused before any decoder runs
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "DIB", "TIFF", "GIF", "PPM", "AVIF")
ORIENTATION_TAG = 0x0112
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageReadError(ValueError):
    """An image file that cannot or may not be read; the message names the file, the problem and the fix."""


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: ``rgb`` uint8 [H, W, 3]; ``source_hw`` (H, W) of the file after its orientation;
    ``composited``: transparency was composited on the background."""

    rgb: np.ndarray
    source_hw: tuple
    composited: bool = False

    @property
    def shrunk(self) -> bool:
        return tuple(self.rgb.shape[:2]) != tuple(self.source_hw)


def _megapixels(pixels: float) -> str:
    return f"{pixels / 1e6:.0f}"


def work_size(width: int, height: int, max_pixels: int = PHOTO_WORK_PIXELS) -> tuple[int, int]:
    """(width, height) an image is read at: unchanged up to ``max_pixels``, else shrunk to about that many pixels,
    aspect kept (each side at least 1)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def _open(path: Path):
    """The file opened lazily (header read, no pixels); refused when its size is over the limits."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ImageReadError(f"image not found: {path}; check the path")
    limit = (f"photos up to {_megapixels(PHOTO_MAX_PIXELS)} megapixels are read; downscale it to at most "
             f"{_megapixels(PHOTO_WORK_PIXELS)} megapixels (e.g. 4096x4096), the most the pipeline uses")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            Image.init()                               # registers every format plugin Pillow has
            image = Image.open(path, formats=[name for name in IMAGE_FORMATS if name in Image.OPEN])
        except Image.DecompressionBombError as err:     # Pillow's own limit, above ours: its message has the size
            stated = re.search(r"\((\d+) pixels\)", str(err))
            size = f"{_megapixels(int(stated.group(1)))}" if stated else \
                f"more than {_megapixels(2 * (Image.MAX_IMAGE_PIXELS or 0))}"
            raise ImageReadError(f"{path}: its header states {size} megapixels; {limit}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
            raise ImageReadError(f"{path} is not a readable image ({type(err).__name__}); use a png, jpg, webp or "
                                 "bmp file") from None
    width, height = image.size
    problem = None
    if width < 1 or height < 1:
        problem = f"its header states an empty size {width}x{height}; save the image again"
    elif width * height > PHOTO_MAX_PIXELS:
        problem = f"it is {width}x{height} = {_megapixels(width * height)} megapixels; {limit}"
    elif max(width, height) > PHOTO_MAX_ASPECT * min(width, height):
        problem = (f"it is {width}x{height}, more than {PHOTO_MAX_ASPECT}:1; crop it to the person (at most "
                   f"{PHOTO_MAX_ASPECT}:1)")
    if problem is not None:
        image.close()
        raise ImageReadError(f"{path}: {problem}")
    return image


def image_size(path) -> tuple[int, int]:
    """(H, W) stated by the file's header (before its EXIF orientation); checks the limits, decodes nothing."""
    with _open(Path(path)) as image:
        return image.size[1], image.size[0]


def _orient(image, orientation: int):
    """``image`` turned as its EXIF orientation says (1 = as stored), as OpenCV turns it."""
    from PIL import Image

    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270,
              7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}.get(orientation)
    return image if method is None else image.transpose(method)


def _eight_bit(image):
    """16-bit and 32-bit grey images as 8-bit grey, taking the high byte as OpenCV does (Pillow would clip)."""
    from PIL import Image

    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), mode="L")
    if image.mode in ("I", "F"):
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    return image


def _composite(rgba: np.ndarray, background) -> np.ndarray:
    """uint8 [H, W, 4] over ``background`` -> uint8 [H, W, 3], ``composite_photo``'s arithmetic, about
    ``COMPOSITE_PIXELS`` pixels at a time."""
    out = np.empty((*rgba.shape[:2], 3), np.uint8)
    step = max(1, COMPOSITE_PIXELS // max(1, rgba.shape[1]))
    for top in range(0, rgba.shape[0], step):
        rows = torch.from_numpy(np.array(rgba[top:top + step]))
        photo = rows[..., :3].float().div_(255.0)
        alpha = rows[..., 3].float().div_(255.0)
        strip = composite_photo(photo, alpha, background).mul_(255.0).round_().to(torch.uint8)
        out[top:top + rows.shape[0]] = strip.numpy()
    return out


def _pixels(part, mode: str, background) -> tuple[np.ndarray, bool]:
    """A decoded image (or a strip of one) -> (uint8 [h, w, 3], composited): ``mode`` "RGBA" composites its
    transparency on ``background``."""
    part = _eight_bit(part)
    if part.mode != mode:
        part = part.convert(mode)                      # (the same mode would be a full copy)
    pixels = np.asarray(part)                          # read-only (Pillow's bytes)
    if mode == "RGB":
        return pixels, False
    if int(pixels[..., 3].min()) == 255:
        return pixels[..., :3], False                  # an alpha channel, all opaque here
    return _composite(pixels, background), True


def _shrunk(image, target: tuple[int, int], mode: str, background) -> tuple[np.ndarray, bool]:
    """``image`` (decoded) at ``target`` (width, height): composited and resized (Lanczos) a strip of
    ``STRIP_PIXELS`` source pixels at a time, each strip cut with the filter's reach around it, so neither a
    converted full-size copy nor a full-size float exists. -> (uint8 [H, W, 3], composited)."""
    from PIL import Image

    (src_w, src_h), (dst_w, dst_h) = image.size, target
    scale = src_h / dst_h                              # source rows per output row
    reach = int(math.ceil(LANCZOS_SUPPORT * max(scale, 1.0))) + 1
    step = max(1, int(STRIP_PIXELS // (src_w * scale)))
    out = np.empty((dst_h, dst_w, 3), np.uint8)
    composited = False
    for top in range(0, dst_h, step):
        bottom = min(dst_h, top + step)
        first, last = max(0, int(top * scale) - reach), min(src_h, int(math.ceil(bottom * scale)) + reach)
        strip, mixed = _pixels(image.crop((0, first, src_w, last)), mode, background)
        composited |= mixed
        box = (0.0, top * scale - first, float(src_w), bottom * scale - first)
        out[top:bottom] = np.asarray(Image.fromarray(np.ascontiguousarray(strip)).resize(
            (dst_w, bottom - top), Image.Resampling.LANCZOS, box=box))
    return out, composited


def read_image(path, background=None, max_pixels: int = PHOTO_WORK_PIXELS) -> DecodedImage:
    """Decode an image file once, at most ``max_pixels`` pixels (see the module docstring).

    background: (r, g, b) 0..255 (or a name ``parse_background`` takes): an image with transparency (RGBA / LA, or
    a palette or colour key marked transparent) is composited on it; None keeps the colour channels as stored.
    Raises ``ImageReadError`` (a ValueError) naming the file, the problem and the fix.
    """
    from PIL import Image

    path = Path(path)
    with _open(path) as image:
        width, height = image.size
        target = work_size(width, height, max_pixels)
        try:
            if target != (width, height) and image.format in ("JPEG", "MPO"):
                image.draft(None, target)              # the JPEG decoder's own 1/2 .. 1/8 scaling, >= target
            image.load()
            orientation = int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as err:
            raise ImageReadError(f"{path} could not be decoded ({type(err).__name__}: {str(err)[:120]}); the file "
                                 "is damaged or truncated: save or download it again") from None
        alpha = background is not None and (image.mode in ALPHA_MODES or "transparency" in image.info)
        mode = "RGBA" if alpha else "RGB"
        if image.size == target:
            pixels, composited = _pixels(image, mode, background)
        else:
            pixels, composited = _shrunk(image, target, mode, background)
    if orientation != 1:
        pixels = np.asarray(_orient(Image.fromarray(np.ascontiguousarray(pixels)), orientation))
    source_hw = (height, width) if orientation in (1, 2, 3, 4) else (width, height)
    rgb = pixels if pixels.flags.writeable and pixels.flags.c_contiguous else np.array(pixels)
    return DecodedImage(rgb, source_hw, composited)
