"""SteadyDancer conditioning tensors, as the official ``WanI2VDancer.generate`` builds them.

Images in: torch float32 [T, H, W, 3] (or [H, W, 3]) in [0, 1]. Model-space videos: [3, T, H, W] in [-1, 1].
Latents: normalised VAE latents [16, F, h, w] with F = 1 + (T - 1) // 4, h = H / 8, w = W / 8.

* ``y`` [20, F, h, w]: 4 mask channels (1 on known pixel frames, folded 4 per latent frame, the first frame counted
  4 times) + latent of [known frames, zeros ...];
* ``ref_x`` [36, 1, h, w]: [latent(photo), ones(4), latent(photo)];
* ``ref_c`` [36, 1, h, w]: [latent(first positive pose), zeros(4), same latent];
* ``condition`` / negative condition [16, F, h, w]: latent of the positive / augmented pose frames;
* ``clip_fea_x`` from the photo at its own resolution, ``clip_fea_c`` from the first positive pose frame after its
  PIL resize ([1, 257, 1280] each on the real model).

Pose frames reach the output size by ``pose_resize``: "official" = PIL bicubic to the photo's size (what
generate_dancer.py does to every pose frame it loads), then torch bicubic to the output size (``generate()``);
"direct" = PIL bicubic straight to the output size (``pose_pil_size`` gives the PIL step's size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..models.vae_config import VAE_SPATIAL_STRIDE, VAE_TEMPORAL_STRIDE
from .defaults import LATENT_SIZE_MULTIPLE, MASK_CHANNELS, POSE_RESIZE_MODES


def as_frames(images: torch.Tensor, name: str) -> torch.Tensor:
    """[T, H, W, 3] (or [H, W, 3]) float in [0, 1] -> float32 [T, H, W, 3]; clear error otherwise."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor [T, H, W, 3] in [0, 1], got {type(images).__name__}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"{name} must be RGB images [T, H, W, 3] in [0, 1], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float images in [0, 1], got {images.dtype} (0..255 integers?): divide by "
                         "255 first, e.g. torch.from_numpy(frames).float() / 255")
    images = images.float()
    low, high = float(images.amin()), float(images.amax())
    if not (low >= -1e-3 and high <= 1 + 1e-3):           # NaN fails both comparisons
        raise ValueError(f"{name} must be float images in [0, 1], got values from {low:g} to {high:g}"
                         + (": divide 0..255 values by 255 first" if high > 1 else ""))
    return images


def latent_frames(num_frames: int) -> int:
    return 1 + (num_frames - 1) // VAE_TEMPORAL_STRIDE


def target_size(height: int, width: int, max_area: int, stride: int = VAE_SPATIAL_STRIDE,
                multiple: int = LATENT_SIZE_MULTIPLE) -> tuple[int, int]:
    """Output (H, W) in pixels: the photo's aspect at about ``max_area`` pixels (official rounding: floor to
    ``stride * multiple``)."""
    if max_area < (stride * multiple) ** 2:
        raise ValueError(f"max_area {max_area} is too small; use at least {(stride * multiple) ** 2} pixels")
    aspect = height / width
    lat_h = round(np.sqrt(max_area * aspect) // stride // multiple * multiple)
    lat_w = round(np.sqrt(max_area / aspect) // stride // multiple * multiple)
    if lat_h < multiple or lat_w < multiple:
        raise ValueError(f"photo aspect {width}x{height} is too extreme for max_area {max_area}; crop the photo")
    return int(lat_h * stride), int(lat_w * stride)


def to_model_video(frames: torch.Tensor) -> torch.Tensor:
    """[T, H, W, 3] in [0, 1] -> [3, T, H, W] in [-1, 1]."""
    return frames.permute(3, 0, 1, 2).mul(2.0).sub_(1.0)


def from_model_video(video: torch.Tensor) -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> [T, H, W, 3] in [0, 1] (clamped)."""
    return video.permute(1, 2, 3, 0).add(1.0).div(2.0).clamp(0.0, 1.0)


def resize_bicubic(video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[3, T, H, W] -> [3, T, *size], torch bicubic without antialias (official ``F.interpolate`` per frame)."""
    if tuple(video.shape[-2:]) == tuple(size):
        return video
    return F.interpolate(video.transpose(0, 1), size=size, mode="bicubic").transpose(0, 1)


def photo_at(photo: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The photo [H, W, 3] in [0, 1] at ``size`` (h, w): bicubic without antialias, clamped to [0, 1]; the very
    same tensor when the size already matches. Frame 0 of a ``first_frame`` exact video, and what the quality
    report compares frame 0 with."""
    if tuple(photo.shape[:2]) == tuple(size):
        return photo
    out = F.interpolate(photo.permute(2, 0, 1)[None], size=tuple(size), mode="bicubic")[0]
    return out.permute(1, 2, 0).clamp(0.0, 1.0)


def resize_like_pil(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[T, H, W, 3] in [0, 1] -> [T, *size, 3] on 8-bit levels, bit for bit what the official script does to every
    pose frame before ``generate()``: ``Image.resize(photo.size, Image.Resampling.BICUBIC)`` on the 8-bit RGB
    image (PIL's bicubic widens its support by the scale factor when it shrinks, and rounds to 8 bits after each
    pass; torch's antialiased bicubic is a different filter). Values are taken to the nearest 8-bit level first
    (exact for frames read from image files). Same size: returned unchanged, as PIL does."""
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    levels = frames.detach().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
    out = np.stack([np.asarray(Image.fromarray(frame, mode="RGB").resize((width, height), Image.Resampling.BICUBIC))
                    for frame in levels])
    return torch.from_numpy(out).to(device=frames.device, dtype=torch.float32).div_(255.0)


def frame_mask(num_frames: int, known: int, lat_h: int, lat_w: int) -> torch.Tensor:
    """I2V mask [4, F, lat_h, lat_w]: pixel frames ``< known`` are 1, the first frame repeated 4 times, then
    folded 4 pixel frames per latent frame (official construction, for any 4n + 1 frame count)."""
    if (num_frames - 1) % VAE_TEMPORAL_STRIDE:
        raise ValueError(f"frame count must be 4n+1, got {num_frames}")
    m = torch.zeros(num_frames)
    m[:known] = 1
    m = torch.cat([m[:1].repeat(MASK_CHANNELS), m[1:]])
    m = m.view(-1, MASK_CHANNELS).transpose(0, 1)               # [4, F]
    return m[:, :, None, None].expand(-1, -1, lat_h, lat_w).contiguous()


def encode_video(vae, video: torch.Tensor, tile="auto") -> torch.Tensor:
    """[3, T, H, W] in [-1, 1] -> normalised latent [16, F, h, w] (float32, on the video's device)."""
    return vae.encode(video[None], tile=tile)[0].float()


def known_frame_latents(y: torch.Tensor) -> torch.Tensor:
    """The latent frames of ``y`` [20, F, h, w] whose 4 mask channels are all 1 -> [16, k, h, w]."""
    full = (y[:MASK_CHANNELS] > 0.5).flatten(2).all(dim=2).all(dim=0)
    k = int(torch.cumprod(full.int(), 0).sum())
    return y[MASK_CHANNELS:, :k]


def build_y(vae, known: torch.Tensor, num_frames: int, tile="auto") -> torch.Tensor:
    """``y`` [20, F, h, w] from ``known`` frames [3, K, H, W] in [-1, 1] followed by zeros up to ``num_frames``."""
    _, k, h, w = known.shape
    video = torch.cat([known, known.new_zeros(3, num_frames - k, h, w)], dim=1)
    latent = encode_video(vae, video, tile)
    mask = frame_mask(num_frames, k, latent.shape[-2], latent.shape[-1]).to(latent)
    return torch.cat([mask, latent])


def build_reference(vae, image: torch.Tensor, mask_value: float, tile="auto") -> torch.Tensor:
    """[latent, mask(4) = ``mask_value``, latent] [36, 1, h, w] from one image [3, 1, H, W] in [-1, 1]."""
    latent = encode_video(vae, image, tile)
    mask = torch.full((MASK_CHANNELS, *latent.shape[1:]), float(mask_value), dtype=latent.dtype,
                      device=latent.device)
    return torch.cat([latent, mask, latent])


@dataclass
class ReferenceConditions:
    """What stays fixed for the whole video: text, CLIP features and the two reference latents."""

    context: torch.Tensor            # [L, text_dim] positive prompt
    context_null: torch.Tensor       # [L', text_dim] negative prompt
    clip_fea_x: torch.Tensor         # [1, 257, 1280] photo
    clip_fea_c: torch.Tensor         # [1, 257, 1280] first positive pose frame
    ref_x: torch.Tensor              # [36, 1, h, w]
    ref_c: torch.Tensor              # [36, 1, h, w]
    photo: torch.Tensor              # [3, 1, H, W] in [-1, 1] at the output size (not clamped)


def pose_pil_size(photo_hw: tuple[int, int], size: tuple[int, int], pose_resize: str) -> tuple[int, int]:
    """(H, W) the pose frames are PIL-resized to: the photo's (``official``) or the output size (``direct``)."""
    if pose_resize not in POSE_RESIZE_MODES:
        raise ValueError(f"pose_resize must be one of {POSE_RESIZE_MODES}, got {pose_resize!r}")
    return tuple(int(v) for v in (photo_hw if pose_resize == "official" else size))


def pose_video(frames: torch.Tensor, pil_hw: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Pose frames [T, H', W', 3] in [0, 1] -> model video [3, T, *size]: PIL bicubic to ``pil_hw``
    (``pose_pil_size``), then torch bicubic to ``size`` (a no-op when ``pil_hw`` is the output size)."""
    resized = resize_like_pil(frames, pil_hw)
    if resized is frames:
        return resize_bicubic(to_model_video(frames), size)
    # the resize made a new tensor: take it to [-1, 1] in place (the same numbers, one copy less at pil_hw)
    return resize_bicubic(resized.permute(3, 0, 1, 2).mul_(2.0).sub_(1.0), size)
