"""Spatial tiling for the Wan 2.1 VAE: tile planning from a memory budget, tile iteration and overlap blending.

A (height x width)-pixel video is cut into overlapping tiles whose sides are multiples of the spatial stride
(8 px = 1 latent unit). Each tile is encoded/decoded on its own; the outputs are blended with linear ramps over
the overlaps and divided by the summed weights, so every output pixel is a convex combination of tile outputs.
Untiled (``TilePlan.tile is None``), the single output is stored as it is.

Pure torch, no model code: ``vae.WanVAE`` runs the tiles through its encoder/decoder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch

from .vae_config import (
    VAE_CPU_FP16_CONV_EXTRA,
    VAE_CUDA_FREE_MEMORY_FRACTION,
    VAE_DECODE_ACT_FACTOR,
    VAE_DEFAULT_CPU_MEMORY_BUDGET,
    VAE_ENCODE_ACT_FACTOR,
    VAE_MIN_TILE_PIXELS,
    VAE_SPATIAL_STRIDE,
    VAE_TILE_OVERLAP_FRACTION,
    VAEConfig,
)

__all__ = ["TilePlan", "plan_tiles", "activation_bytes", "Tile", "TileBlender"]


# ----------------------------------------------------------------------------------------------------------------
# planning: memory estimate and tile size
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TilePlan:
    """How one encode/decode call is cut in space. Sizes are in pixels (multiples of 8); ``tile`` None = untiled."""

    tile: tuple | None
    overlap: tuple
    estimate_bytes: int      # estimated activation peak of one tile (or of the whole frame when untiled)
    budget_bytes: int | None
    explanation: str


def activation_bytes(config: VAEConfig, pixels: int, dtype: torch.dtype, mode: str, device: torch.device) -> int:
    """Estimated activation peak (bytes) of encoding/decoding a tile of ``pixels`` pixels, feature caches included:
    a measured factor x ``config.dim`` x element size x pixels (independent of the number of frames: time is
    streamed)."""
    factor = VAE_DECODE_ACT_FACTOR if mode == "decode" else VAE_ENCODE_ACT_FACTOR
    if device.type == "cpu" and dtype == torch.float16:
        factor += VAE_CPU_FP16_CONV_EXTRA
    elem = torch.empty((), dtype=dtype).element_size()
    return int(factor * config.dim * elem * pixels)


def _default_budget(device: torch.device) -> int:
    """Activation budget (bytes) for tile="auto" without an explicit budget: a share of the free CUDA memory,
    or VAE_DEFAULT_CPU_MEMORY_BUDGET on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * VAE_CUDA_FREE_MEMORY_FRACTION)
    return VAE_DEFAULT_CPU_MEMORY_BUDGET


def _as_pair(v, name: str) -> tuple:
    """An int or an (h, w) pair of pixel sizes -> (h, w); each a non-negative multiple of the spatial stride."""
    pair = (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(x) for x in v)
    if len(pair) != 2 or any(x < 0 or x % VAE_SPATIAL_STRIDE for x in pair):
        raise ValueError(f"VAE {name} must be a multiple of {VAE_SPATIAL_STRIDE} pixels (or an (h, w) pair of them), "
                         f"got {v!r}")
    return pair


def plan_tiles(config: VAEConfig, height: int, width: int, dtype: torch.dtype, mode: str = "decode",
               tile="auto", overlap=None, memory_budget: int | None = None,
               device: torch.device | str = "cpu") -> TilePlan:
    """Choose the spatial tiling for a (height x width)-pixel video.

    tile: "auto"/None/True = untiled if the activation estimate fits ``memory_budget`` (default: a share of the free
    CUDA memory, or VAE_DEFAULT_CPU_MEMORY_BUDGET on CPU), else the largest square-ish tile that fits;
    0/False/"off" = never tile; an int or (h, w) = that tile size in pixels. overlap: pixels (default a quarter
    of the tile side), must be smaller than the tile.
    """
    if mode not in ("decode", "encode"):
        raise ValueError(f"plan_tiles: mode must be 'decode' or 'encode', got {mode!r}")
    device = torch.device(device)
    s = VAE_SPATIAL_STRIDE
    full = activation_bytes(config, height * width, dtype, mode, device)
    if tile is False or tile == 0 or tile == "off":
        return TilePlan(None, (0, 0), full, memory_budget, f"untiled (tiling off); estimated {full / 2**30:.2f} GiB")
    if tile is None or tile is True or tile == "auto":
        budget = int(memory_budget) if memory_budget is not None else _default_budget(device)
        if full <= budget:
            return TilePlan(None, (0, 0), full, budget,
                            f"untiled: estimated {full / 2**30:.2f} GiB fits the budget of {budget / 2**30:.2f} GiB")
        max_pixels = budget / activation_bytes(config, 1, dtype, mode, device)
        th = max(VAE_MIN_TILE_PIXELS, int(math.sqrt(max_pixels)) // s * s)
        th = min(th, height)
        tw = min(width, max(VAE_MIN_TILE_PIXELS, int(max_pixels / th) // s * s))
        tile_hw = (th, tw)
        why = f"estimated {full / 2**30:.2f} GiB untiled exceeds the budget of {budget / 2**30:.2f} GiB"
    else:
        tile_hw, why, budget = _as_pair(tile, "tile size"), "tile size given", memory_budget
        if min(tile_hw) == 0:
            raise ValueError(f"VAE tile size must be positive, got {tile!r} (use tile=0 to switch tiling off)")
    if overlap is None:
        ov = tuple(max(s, round(t * VAE_TILE_OVERLAP_FRACTION / s) * s) for t in tile_hw)
    else:
        ov = _as_pair(overlap, "tile overlap")
    for t, o, size in zip(tile_hw, ov, (height, width)):
        if t < size and o >= t:
            raise ValueError(f"VAE tile overlap {o} must be smaller than the tile size {t} (pixels)")
    if tile_hw[0] >= height and tile_hw[1] >= width:
        return TilePlan(None, (0, 0), full, budget,
                        f"untiled: the tile {tile_hw} covers the whole {height}x{width} frame")
    est = activation_bytes(config, min(tile_hw[0], height) * min(tile_hw[1], width), dtype, mode, device)
    n = len(_spans(height // s, tile_hw[0] // s, ov[0] // s)) * len(_spans(width // s, tile_hw[1] // s, ov[1] // s))
    return TilePlan(tile_hw, ov, est, budget, f"{why}: {n} tiles of {tile_hw[0]}x{tile_hw[1]} px with overlap "
                    f"{ov[0]}x{ov[1]} px, estimated {est / 2**30:.2f} GiB per tile")


# ----------------------------------------------------------------------------------------------------------------
# iteration and blending
# ----------------------------------------------------------------------------------------------------------------
def _spans(size: int, tile: int, overlap: int) -> list:
    """Start/end pairs covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap`` (latent units)."""
    if tile >= size:
        return [(0, size)]
    stride = max(1, tile - overlap)
    n = -(-(size - tile) // stride) + 1
    starts = sorted({min(i * stride, size - tile) for i in range(n)})
    return [(a, a + tile) for a in starts]


def _ramp(spans: list, index: int, scale: int, device) -> torch.Tensor:
    """Blend weights [(end - start) * scale] along one axis for tile ``index``: linear ramps over the overlaps
    with its neighbours, 1 elsewhere."""
    a, b = spans[index]
    n = (b - a) * scale
    w = torch.ones(n, device=device)
    if index > 0:
        k = (spans[index - 1][1] - a) * scale
        w[:k] = torch.minimum(w[:k], (torch.arange(k, device=device) + 0.5) / k)
    if index + 1 < len(spans):
        k = (b - spans[index + 1][0]) * scale
        w[n - k:] = torch.minimum(w[n - k:], (k - torch.arange(k, device=device) - 0.5) / k)
    return w


def _scaled(sl: slice, scale: int) -> slice:
    return slice(sl.start * scale, sl.stop * scale)


@dataclass(frozen=True)
class Tile:
    """One spatial tile: rows ``ys`` and columns ``xs`` in latent units; ``weight`` [th*scale, tw*scale] are its
    blend weights at the blender's output scale (None when untiled)."""

    ys: slice
    xs: slice
    weight: torch.Tensor | None

    @property
    def pixels(self) -> tuple:
        """(rows, columns) of the tile in video pixels."""
        return _scaled(self.ys, VAE_SPATIAL_STRIDE), _scaled(self.xs, VAE_SPATIAL_STRIDE)


class TileBlender:
    """Assembles per-tile outputs into out [B, C, T, h*scale, w*scale] float32 on ``device``.

    ``h``, ``w``: the frame in latent units; ``scale``: output pixels per latent unit (1 for encoded latents,
    VAE_SPATIAL_STRIDE for decoded video). Iterate ``tiles()``, ``add`` each tile's output (any time slice of
    it at a time), then take ``result()``: sum(weight * tile output) / sum(weight) per pixel.
    """

    def __init__(self, plan: TilePlan, batch: int, channels: int, frames: int, h: int, w: int, scale: int, device):
        self.plan, self.h, self.w, self.scale, self.device = plan, h, w, scale, device
        self.out = torch.zeros(batch, channels, frames, h * scale, w * scale, device=device)
        self.wsum = None if plan.tile is None else torch.zeros(h * scale, w * scale, device=device)

    def tiles(self) -> Iterator[Tile]:
        """The tiles in row-major order (one covering the frame when untiled); their weights are counted here."""
        if self.plan.tile is None:
            yield Tile(slice(0, self.h), slice(0, self.w), None)
            return
        s = VAE_SPATIAL_STRIDE
        ys = _spans(self.h, self.plan.tile[0] // s, self.plan.overlap[0] // s)
        xs = _spans(self.w, self.plan.tile[1] // s, self.plan.overlap[1] // s)
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                weight = _ramp(ys, i, self.scale, self.device)[:, None] * _ramp(xs, j, self.scale, self.device)[None, :]
                tile = Tile(slice(y0, y1), slice(x0, x1), weight)
                self.wsum[_scaled(tile.ys, self.scale), _scaled(tile.xs, self.scale)] += weight
                yield tile

    def add(self, tile: Tile, frames: slice, values: torch.Tensor) -> None:
        """Blend ``values`` [B, C, f, th*scale, tw*scale] (the tile's output for output frames ``frames``) in."""
        if tile.weight is None:
            self.out[:, :, frames] = values
        else:
            self.out[:, :, frames, _scaled(tile.ys, self.scale), _scaled(tile.xs, self.scale)] += values * tile.weight

    def result(self) -> torch.Tensor:
        """The blended output [B, C, T, h*scale, w*scale] (normalised in place by the summed weights)."""
        return self.out if self.wsum is None else self.out.div_(self.wsum)
