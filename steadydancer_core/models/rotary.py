"""Timestep and rotary-position helpers of the DiT (Wan 2.1's sinusoidal time embedding and 3-axis RoPE).

Rotary tables are real-valued float32 cos/sin built from float64 angles (float32 on devices without float64); a
token's rotation depends only on its (frame, row, column) position, so a sequence-parallel rank takes the rows of
its own tokens from the whole table (``sequence_parallel.py``).
"""
from __future__ import annotations

import torch

from .dit_config import DIT_FREQ_THETA, DIT_ROPE_THETA


def _precise_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (not on Apple MPS), else float32. Used only for small tables."""
    return torch.float32 if device.type == "mps" else torch.float64


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of timesteps t [B] (0..1000) -> [B, dim] (float64 where available)."""
    half = dim // 2
    dtype = _precise_dtype(t.device)
    freqs = torch.pow(DIT_FREQ_THETA, -torch.arange(half, device=t.device, dtype=dtype) / half)
    angles = t.to(dtype)[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


def rope_tables(grid: tuple[int, int, int], pairs: tuple[int, int, int], device: torch.device,
                theta: float = DIT_ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin for a (frames, height, width) token grid, each [f*h*w, 1, sum(pairs)] float32.

    Channel pairs are split (t, h, w) as in the official model; pair j of an axis with n pairs rotates by
    ``position * theta ** (-j / n)``. Tokens are ordered frame-major, then row, then column.
    """
    dtype = _precise_dtype(device)
    angles = []
    for axis, (size, n) in enumerate(zip(grid, pairs)):
        inv_freq = torch.pow(theta, -torch.arange(n, device=device, dtype=dtype) / n)
        a = torch.arange(size, device=device, dtype=dtype)[:, None] * inv_freq[None]   # [size, n]
        shape = [1, 1, 1, n]
        shape[axis] = size
        angles.append(a.view(shape).expand(*grid, n))
    angles = torch.cat(angles, dim=-1).reshape(-1, 1, sum(pairs))
    return torch.cos(angles).float(), torch.sin(angles).float()


def apply_rope(x: torch.Tensor, cos_pairs: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (x[2j], x[2j+1]) of x [B, L, H, D] by angle_j; in fp32.

    cos_pairs [L, 1, D]: cos(angle_j) at both channels of pair j; sin [L, 1, D/2] (see ``rope_tables``).
    out[2j] = x[2j] cos - x[2j+1] sin, out[2j+1] = x[2j+1] cos + x[2j] sin.
    """
    x32 = x.float()
    out = x32 * cos_pairs
    pairs, out_pairs = x32.unflatten(-1, (-1, 2)), out.unflatten(-1, (-1, 2))
    out_pairs[..., 0].addcmul_(pairs[..., 1], sin, value=-1)
    out_pairs[..., 1].addcmul_(pairs[..., 0], sin)
    return out.to(x.dtype)
