"""Wan 2.1 VAE: causal 3D-conv autoencoder with streamed (chunked) time and spatial tiling.

Video [B, 3, T, H, W] in [-1, 1] with T = 1 + 4k and H, W multiples of 8  <->  latent [B, 16, 1 + k, H/8, W/8].

Time is streamed as the official code does: the encoder sees frame 0 alone and then chunks of 4 frames, the decoder
one latent frame at a time; every causal convolution keeps the last frames of its input in a per-call cache, so
the activation memory does not grow with the number of frames. Space is optionally cut into overlapping tiles
that are blended with linear ramps (``tile="auto"`` picks the tiling from a memory budget).

Parameter names follow the official ``Wan2.1_VAE.pth`` (ComfyUI's ``wan_2.1_vae.safetensors`` uses the same names).
Models never move themselves between devices: the caller places the module; inputs follow it.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import (
    VAE_CPU_FP16_CONV_EXTRA,
    VAE_CUDA_FREE_MEMORY_FRACTION,
    VAE_DECODE_ACT_FACTOR,
    VAE_DEFAULT_CPU_MEMORY_BUDGET,
    VAE_ENCODE_ACT_FACTOR,
    VAE_MIN_TILE_PIXELS,
    VAE_SPATIAL_STRIDE,
    VAE_TEMPORAL_STRIDE,
    VAE_TILE_OVERLAP_FRACTION,
    VAEConfig,
)
from .quant import WeightFileError, load_state_dict_into
from .weights import open_state_dict

__all__ = ["WanVAE", "VAEConfig", "load_vae", "TilePlan", "plan_tiles", "check_video_shape", "VAEWeightsError"]

log = logging.getLogger(__name__)
_RMS_EPS = 1e-12  # F.normalize's epsilon, as upstream


# ----------------------------------------------------------------------------------------------------------------
# building blocks (streamed: ``state`` is a dict owned by one encode/decode call, keyed by module)
# ----------------------------------------------------------------------------------------------------------------
class CausalConv3d(nn.Conv3d):
    """Conv3d padded causally in time: 2*p_t frames of context in front (zeros, or cached frames of the
    previous chunk), none behind; symmetric zero padding in space. x [B, C, t, H, W] -> [B, C', t', H', W']."""

    def __init__(self, in_dim, out_dim, kernel, stride=1, padding=0):
        super().__init__(in_dim, out_dim, kernel, stride=stride, padding=0)
        pad = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self.context = 2 * pad[0]  # frames of past context this conv needs
        self.space_pad = (pad[2], pad[2], pad[1], pad[1])

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        prev = state.get(self) if (state is not None and self.context) else None
        n_prev = 0 if prev is None else prev.shape[2]
        front = self.context - n_prev
        pw0, pw1, ph0, ph1 = self.space_pad
        if front == 0 and n_prev == 0 and not any(self.space_pad):
            padded = x
        else:  # one allocation for [zeros | cached frames | x], spatially padded
            b, c, t, h, w = x.shape
            padded = x.new_zeros(b, c, front + n_prev + t, h + ph0 + ph1, w + pw0 + pw1)
            if n_prev:
                padded[:, :, front:front + n_prev, ph0:ph0 + h, pw0:pw0 + w] = prev
            padded[:, :, front + n_prev:, ph0:ph0 + h, pw0:pw0 + w] = x
        if state is not None and self.context:
            keep = padded[:, :, front:, ph0:padded.shape[3] - ph1, pw0:padded.shape[4] - pw1]
            state[self] = keep[:, :, -self.context:].clone()
        return F.conv3d(padded, self.weight, self.bias, self.stride)


class RMSNorm(nn.Module):
    """Upstream ``RMS_norm``: L2-normalise over channels, times sqrt(C) * gamma. gamma [C,1,1,1] (video) or [C,1,1]."""

    def __init__(self, dim: int, images: bool = False):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).clamp_min_(_RMS_EPS)
        inv = norm.reciprocal_().to(x.dtype)
        return (x.mul_(inv) if inplace else x * inv).mul_(self.gamma * self.scale)


class ResidualBlock(nn.Module):
    """(RMSNorm, SiLU, CausalConv3d 3^3) x 2 + shortcut (1^3 conv when the width changes)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # indices match the upstream nn.Sequential (1, 4: SiLU; 5: dropout, a no-op at inference)
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        r = self.residual
        y = r[2](F.silu(r[0](x), inplace=True), state)
        y = r[6](F.silu(r[3](y, inplace=True), inplace=True), state)  # y is ours: normalise in place
        return y.add_(self.shortcut(x))


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame. x [B, C, t, H, W] -> same."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        out = torch.empty_like(x)
        for i in range(t):  # frames are independent
            f = x[:, :, i]
            qkv = self.to_qkv(self.norm(f)).reshape(b, 3 * c, h * w).transpose(1, 2).unsqueeze(1)
            q, k, v = qkv.chunk(3, dim=-1)  # [B, 1, HW, C] each
            a = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b, c, h, w)
            out[:, :, i] = self.proj(a) + f
        return out


class Resample(nn.Module):
    """x2 spatial down/up-sampling, optionally with causal x2 temporal down/up-sampling (``time_conv``).

    Streaming semantics (upstream): ``downsample3d`` keeps the first chunk as is and afterwards convolves
    [last frame of the previous chunk, chunk] with stride 2; ``upsample3d`` passes the first chunk through
    unchanged (one frame stays one frame) and afterwards doubles every frame with a causal conv to 2*C channels.
    """

    def __init__(self, dim: int, mode: str):
        super().__init__()
        if mode not in ("upsample2d", "upsample3d", "downsample2d", "downsample3d"):
            raise ValueError(f"Resample: unknown mode {mode!r}")
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"), nn.Conv2d(dim, dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for i in range(x.shape[2]):  # frame by frame: a smaller peak than all frames at once
            y = self.resample(x[:, :, i])
            if out is None:
                out = y.new_empty(y.shape[0], y.shape[1], x.shape[2], y.shape[2], y.shape[3])
            out[:, :, i] = y
        return out

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        if self.mode == "upsample3d":
            if self in state:
                b, c, t, h, w = x.shape
                y = self.time_conv(x, state)  # [B, 2C, t, H, W] -> interleave to [B, C, 2t, H, W]
                x = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
            else:
                state[self] = True
        x = self._spatial(x)
        if self.mode == "downsample3d":
            prev = state.get(self)
            state[self] = x[:, :, -1:].clone()
            if prev is not None:
                x = self.time_conv(torch.cat([prev, x], dim=2))
        return x


def _stage_dims(config: VAEConfig, decoder: bool) -> list:
    mult = [config.dim_mult[-1]] + list(config.dim_mult[::-1]) if decoder else [1] + list(config.dim_mult)
    return [config.dim * m for m in mult]


class Encoder3d(nn.Module):
    """Video [B, 3, t, H, W] -> [B, 2*z_dim, t', H/8, W/8] (upstream ``Encoder3d``)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        dims, z2 = _stage_dims(config, decoder=False), 2 * config.z_dim
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers, scale = [], 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(config.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                if scale in config.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(config.dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if config.temperal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)
        self.middle = nn.Sequential(ResidualBlock(out_dim, out_dim), AttentionBlock(out_dim), ResidualBlock(out_dim, out_dim))
        self.head = nn.Sequential(RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, z2, 3, padding=1))

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        x = self.conv1(x, state)
        for layer in (*self.downsamples, *self.middle):
            x = layer(x, state)
        return self.head[2](F.silu(self.head[0](x), inplace=True), state)


class Decoder3d(nn.Module):
    """Latent [B, z_dim, t, h, w] -> video [B, 3, t', 8h, 8w] (upstream ``Decoder3d``)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        dims = _stage_dims(config, decoder=True)
        upsample_time = config.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(config.z_dim, dims[0], 3, padding=1)
        self.middle = nn.Sequential(ResidualBlock(dims[0], dims[0]), AttentionBlock(dims[0]), ResidualBlock(dims[0], dims[0]))
        layers, scale = [], 1.0 / 2 ** (len(config.dim_mult) - 2)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim = in_dim // 2  # every upsample halves the width
            for _ in range(config.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                if scale in config.attn_scales:
                    layers.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i != len(config.dim_mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if upsample_time[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = nn.Sequential(RMSNorm(out_dim), nn.SiLU(), CausalConv3d(out_dim, 3, 3, padding=1))

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        x = self.conv1(x, state)
        for layer in (*self.middle, *self.upsamples):
            x = layer(x, state)
        return self.head[2](F.silu(self.head[0](x), inplace=True), state)


# ----------------------------------------------------------------------------------------------------------------
# input checks and spatial tiling
# ----------------------------------------------------------------------------------------------------------------
def check_video_shape(shape) -> None:
    """Raise a ValueError naming the fix unless ``shape`` is [B, 3, 1 + 4k, H, W] with H, W multiples of 8."""
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"VAE encode expects a video [B, 3, T, H, W] in [-1, 1], got shape {tuple(shape)}")
    t, h, w = shape[2:]
    if t < 1 or (t - 1) % VAE_TEMPORAL_STRIDE:
        lo = 1 + max(0, (t - 1) // VAE_TEMPORAL_STRIDE) * VAE_TEMPORAL_STRIDE
        raise ValueError(
            f"VAE encode needs 1 + {VAE_TEMPORAL_STRIDE}k frames, got {t}: use {lo} or {lo + VAE_TEMPORAL_STRIDE} frames "
            f"(trim or pad the video)"
        )
    s = VAE_SPATIAL_STRIDE
    if h % s or w % s or h == 0 or w == 0:
        def near(v):
            return f"{max(s, v // s * s)} or {-(-v // s) * s}" if v % s else str(v)
        raise ValueError(
            f"VAE encode needs height and width that are multiples of {s}, got {h}x{w} (HxW): "
            f"resize or crop to height {near(h)} and width {near(w)}"
        )


@dataclass(frozen=True)
class TilePlan:
    """How one encode/decode call is cut in space. Sizes are in pixels (multiples of 8); ``tile`` None = untiled."""

    tile: tuple | None
    overlap: tuple
    estimate_bytes: int      # estimated activation peak of one tile (or of the whole frame when untiled)
    budget_bytes: int | None
    explanation: str


def _activation_bytes(config: VAEConfig, pixels: int, dtype: torch.dtype, mode: str, device: torch.device) -> int:
    """Estimated activation peak for a tile of ``pixels`` pixels (the feature caches included)."""
    factor = VAE_DECODE_ACT_FACTOR if mode == "decode" else VAE_ENCODE_ACT_FACTOR
    if device.type == "cpu" and dtype == torch.float16:
        factor += VAE_CPU_FP16_CONV_EXTRA
    elem = torch.empty((), dtype=dtype).element_size()
    return int(factor * config.dim * elem * pixels)


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * VAE_CUDA_FREE_MEMORY_FRACTION)
    return VAE_DEFAULT_CPU_MEMORY_BUDGET


def _as_pair(v, name: str) -> tuple:
    pair = (int(v), int(v)) if isinstance(v, (int, float)) else tuple(int(x) for x in v)
    if len(pair) != 2 or any(x < 0 or x % VAE_SPATIAL_STRIDE for x in pair):
        raise ValueError(f"VAE {name} must be a multiple of {VAE_SPATIAL_STRIDE} pixels (or an (h, w) pair of them), got {v!r}")
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
    full = _activation_bytes(config, height * width, dtype, mode, device)
    if tile is False or tile == 0 or tile == "off":
        return TilePlan(None, (0, 0), full, memory_budget, f"untiled (tiling off); estimated {full / 2**30:.2f} GiB")
    if tile is None or tile is True or tile == "auto":
        budget = int(memory_budget) if memory_budget is not None else _default_budget(device)
        if full <= budget:
            return TilePlan(None, (0, 0), full, budget,
                            f"untiled: estimated {full / 2**30:.2f} GiB fits the budget of {budget / 2**30:.2f} GiB")
        max_pixels = budget / _activation_bytes(config, 1, dtype, mode, device)
        s = VAE_SPATIAL_STRIDE
        th = max(VAE_MIN_TILE_PIXELS, int(math.sqrt(max_pixels)) // s * s)
        th = min(th, height)
        tw = min(width, max(VAE_MIN_TILE_PIXELS, int(max_pixels / th) // s * s))
        tile_hw, why = (th, tw), f"estimated {full / 2**30:.2f} GiB untiled exceeds the budget of {budget / 2**30:.2f} GiB"
    else:
        tile_hw, why, budget = _as_pair(tile, "tile size"), "tile size given", memory_budget
        if min(tile_hw) == 0:
            raise ValueError(f"VAE tile size must be positive, got {tile!r} (use tile=0 to switch tiling off)")
    if overlap is None:
        ov = tuple(max(VAE_SPATIAL_STRIDE, round(t * VAE_TILE_OVERLAP_FRACTION / VAE_SPATIAL_STRIDE) * VAE_SPATIAL_STRIDE)
                   for t in tile_hw)
    else:
        ov = _as_pair(overlap, "tile overlap")
    for t, o, size in zip(tile_hw, ov, (height, width)):
        if t < size and o >= t:
            raise ValueError(f"VAE tile overlap {o} must be smaller than the tile size {t} (pixels)")
    if tile_hw[0] >= height and tile_hw[1] >= width:
        return TilePlan(None, (0, 0), full, budget, f"untiled: the tile {tile_hw} covers the whole {height}x{width} frame")
    est = _activation_bytes(config, min(tile_hw[0], height) * min(tile_hw[1], width), dtype, mode, device)
    n = len(_spans(height // 8, tile_hw[0] // 8, ov[0] // 8)) * len(_spans(width // 8, tile_hw[1] // 8, ov[1] // 8))
    return TilePlan(tile_hw, ov, est, budget, f"{why}: {n} tiles of {tile_hw[0]}x{tile_hw[1]} px with overlap "
                    f"{ov[0]}x{ov[1]} px, estimated {est / 2**30:.2f} GiB per tile")


def _spans(size: int, tile: int, overlap: int) -> list:
    """Start/end pairs covering [0, size) with tiles of ``tile`` overlapping by at least ``overlap`` (latent units)."""
    if tile >= size:
        return [(0, size)]
    stride = max(1, tile - overlap)
    n = -(-(size - tile) // stride) + 1
    starts = sorted({min(i * stride, size - tile) for i in range(n)})
    return [(a, a + tile) for a in starts]


def _ramp(spans: list, index: int, scale: int, device) -> torch.Tensor:
    """Blend weights along one axis for tile ``index``: linear ramps over the overlaps with its neighbours."""
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


def _tiles(plan: TilePlan, h: int, w: int):
    """Yield (ys, xs, wy, wx): latent-unit slices and latent-unit span lists/indices for each tile."""
    if plan.tile is None:
        yield slice(0, h), slice(0, w), None
        return
    s = VAE_SPATIAL_STRIDE
    ys = _spans(h, plan.tile[0] // s, plan.overlap[0] // s)
    xs = _spans(w, plan.tile[1] // s, plan.overlap[1] // s)
    for i, (y0, y1) in enumerate(ys):
        for j, (x0, x1) in enumerate(xs):
            yield slice(y0, y1), slice(x0, x1), (ys, i, xs, j)


def _weight_map(where, scale: int, device) -> torch.Tensor | None:
    if where is None:
        return None
    ys, i, xs, j = where
    return _ramp(ys, i, scale, device)[:, None] * _ramp(xs, j, scale, device)[None, :]


# ----------------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------------
class WanVAE(nn.Module):
    """Wan 2.1 VAE (upstream ``WanVAE_``) with streamed encode/decode, latent normalisation and tiling.

    encode(video [B,3,T,H,W] in [-1,1], T = 1+4k) -> normalised latent [B,16,1+k,H/8,W/8] (float32)
    encode_raw(video) -> the encoder mean ``mu`` before normalisation (ComfyUI's raw latent)
    decode(latent [B,16,t,h,w]) -> video [B,3,1+4(t-1),8h,8w] (float32, clamped to [-1,1] unless clamp=False)
    Chunks are copied to the module's device and dtype; results are assembled on the input's device.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        z = config.z_dim
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * z, 2 * z, 1)
        self.conv2 = CausalConv3d(z, z, 1)
        self.decoder = Decoder3d(config)
        self.last_tile_plan: TilePlan | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    def _check_latent(self, z: torch.Tensor) -> None:
        if z.ndim != 5 or z.shape[1] != self.config.z_dim or min(z.shape) == 0:
            raise ValueError(f"VAE decode expects a latent [B, {self.config.z_dim}, t, h, w], got shape {tuple(z.shape)}")

    def _stats(self, like: torch.Tensor):
        self._check_latent(like)
        mean = torch.tensor(self.config.latents_mean, dtype=torch.float32, device=like.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.config.latents_std, dtype=torch.float32, device=like.device).view(1, -1, 1, 1, 1)
        return mean, std

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Raw encoder mean -> normalised latent (the DiT's space): (mu - mean) / std per channel."""
        mean, std = self._stats(mu)
        return (mu.float() - mean) * std.reciprocal()

    def denormalize(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent -> raw decoder input: latent * std + mean per channel."""
        mean, std = self._stats(latent)
        return latent.float() * std + mean

    def tile_plan(self, height: int, width: int, mode: str, tile="auto", overlap=None, memory_budget=None) -> TilePlan:
        """The tiling an encode/decode of a (height x width)-pixel video would use (see ``plan_tiles``)."""
        return plan_tiles(self.config, height, width, self.dtype, mode, tile, overlap, memory_budget, self.device)

    # --- encode -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_raw(self, video: torch.Tensor, tile="auto", tile_overlap=None, memory_budget=None) -> torch.Tensor:
        """video [B,3,T,H,W] in [-1,1] -> encoder mean mu [B,16,1+(T-1)//4,H/8,W/8] (float32, not normalised)."""
        check_video_shape(video.shape)
        b, _, t, h, w = video.shape
        plan = self.tile_plan(h, w, "encode", tile, tile_overlap, memory_budget)
        self.last_tile_plan = plan
        log.info("VAE encode %dx%d, %d frames: %s", h, w, t, plan.explanation)
        s, lt = VAE_SPATIAL_STRIDE, 1 + (t - 1) // VAE_TEMPORAL_STRIDE
        out = torch.zeros(b, self.config.z_dim, lt, h // s, w // s, device=video.device)
        wsum = torch.zeros(h // s, w // s, device=video.device)
        for ys, xs, where in _tiles(plan, h // s, w // s):
            mu = self._encode_tile(video[:, :, :, ys.start * s:ys.stop * s, xs.start * s:xs.stop * s])
            wmap = _weight_map(where, 1, video.device)
            if wmap is None:
                return mu
            out[:, :, :, ys, xs] += mu * wmap
            wsum[ys, xs] += wmap
        return out / wsum

    def _encode_tile(self, video: torch.Tensor) -> torch.Tensor:
        """Streamed encoder over time: frame 0 alone, then chunks of 4 frames. -> mu [B,16,t',h,w] float32."""
        state, t, mus = {}, video.shape[2], []
        for f0 in range(0, t, VAE_TEMPORAL_STRIDE):
            f0, f1 = (0, 1) if f0 == 0 else (f0 - VAE_TEMPORAL_STRIDE + 1, f0 + 1)
            chunk = video[:, :, f0:f1].to(device=self.device, dtype=self.dtype)
            out = self.conv1(self.encoder(chunk, state))
            mus.append(out[:, :self.config.z_dim].float().to(video.device))
        return torch.cat(mus, dim=2)

    @torch.inference_mode()
    def encode(self, video: torch.Tensor, tile="auto", tile_overlap=None, memory_budget=None) -> torch.Tensor:
        """video [B,3,T,H,W] in [-1,1] -> normalised latent [B,16,1+(T-1)//4,H/8,W/8] (float32)."""
        return self.normalize(self.encode_raw(video, tile, tile_overlap, memory_budget))

    # --- decode -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, tile="auto", tile_overlap=None, memory_budget=None,
               clamp: bool = True) -> torch.Tensor:
        """Normalised latent [B,16,t,h,w] -> video [B,3,1+4(t-1),8h,8w] float32 (clamped to [-1,1] if clamp)."""
        return self.decode_raw(self.denormalize(latent), tile, tile_overlap, memory_budget, clamp)

    @torch.inference_mode()
    def decode_raw(self, z: torch.Tensor, tile="auto", tile_overlap=None, memory_budget=None,
                   clamp: bool = True) -> torch.Tensor:
        """Raw (denormalised) latent [B,16,t,h,w] -> video [B,3,1+4(t-1),8h,8w] float32."""
        self._check_latent(z)
        b, _, lt, h, w = z.shape
        s = VAE_SPATIAL_STRIDE
        t = 1 + VAE_TEMPORAL_STRIDE * (lt - 1)
        plan = self.tile_plan(h * s, w * s, "decode", tile, tile_overlap, memory_budget)
        self.last_tile_plan = plan
        log.info("VAE decode %dx%d, %d frames: %s", h * s, w * s, t, plan.explanation)
        out = torch.zeros(b, 3, t, h * s, w * s, device=z.device)
        wsum = torch.ones(1, device=z.device) if plan.tile is None else torch.zeros(h * s, w * s, device=z.device)
        for ys, xs, where in _tiles(plan, h, w):
            wmap = _weight_map(where, s, z.device)
            oy, ox = slice(ys.start * s, ys.stop * s), slice(xs.start * s, xs.stop * s)
            state = {}
            for i in range(lt):
                zi = z[:, :, i:i + 1, ys, xs].to(device=self.device, dtype=self.dtype)
                frames = self.decoder(self.conv2(zi), state).float().to(z.device)
                f0 = 0 if i == 0 else 1 + VAE_TEMPORAL_STRIDE * (i - 1)
                if wmap is None:
                    out[:, :, f0:f0 + frames.shape[2]] = frames
                else:
                    out[:, :, f0:f0 + frames.shape[2], oy, ox] += frames * wmap
            if wmap is not None:
                wsum[oy, ox] += wmap
        out = out.div_(wsum)
        return out.clamp_(-1.0, 1.0) if clamp else out


# ----------------------------------------------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------------------------------------------
class VAEWeightsError(WeightFileError):
    """The file is not the Wan 2.1 VAE; the message names what was expected and what was found."""


_EXPECTED = ("the Wan 2.1 VAE (official 'Wan2.1_VAE.pth' or ComfyUI 'wan_2.1_vae.safetensors', keys like "
             "'encoder.conv1.weight', 'decoder.upsamples.0.residual.0.gamma', 'conv1.weight', 'conv2.weight')")

# (key prefix found in the file, what the file then is)
_OTHER_KINDS = (
    ("model.diffusion_model.", "a diffusion model (DiT) saved with ComfyUI's 'model.diffusion_model.' prefix"),
    ("patch_embedding.", "a Wan diffusion model (DiT)"),
    ("blocks.0.self_attn.", "a Wan diffusion model (DiT)"),
    ("token_embedding.", "a umT5 text encoder (official layout)"),
    ("shared.weight", "a umT5/T5 text encoder"),
    ("encoder.block.", "a umT5/T5 text encoder"),
    ("visual.", "an open-clip CLIP model"),
    ("vision_model.", "a CLIP vision encoder"),
    ("encoder.conv_in.", "an image VAE (Stable Diffusion/Flux AutoencoderKL layout)"),
    ("first_stage_model.", "a full image-model checkpoint (VAE under 'first_stage_model.')"),
    ("lora_", "a LoRA"),
)


def _check_is_wan21_vae(shapes: dict, path) -> None:
    """Raise VAEWeightsError unless the key names/shapes (no data read) are those of the Wan 2.1 VAE."""
    keys = list(shapes)
    conv_in = shapes.get("encoder.conv1.weight")
    if conv_in is not None and "conv2.weight" in shapes:
        if len(conv_in) == 5 and conv_in[1] == 12:
            raise VAEWeightsError(f"{path}: expected {_EXPECTED}; found the Wan 2.2 VAE (12 input channels, z_dim 48), "
                                  f"which Wan 2.1/SteadyDancer cannot use. Choose wan_2.1_vae.safetensors.")
        return
    for prefix, kind in _OTHER_KINDS:
        if any(k.startswith(prefix) or f".{prefix}" in k for k in keys):
            found = kind
            break
    else:
        found = f"{len(keys)} tensors with unrecognised names, e.g. {keys[:3]}"
    raise VAEWeightsError(f"{path}: expected {_EXPECTED}; found {found}. Select the VAE file in the VAE input.")


def load_vae(path, dtype: torch.dtype = torch.float32) -> WanVAE:
    """Load the Wan 2.1 VAE from an official .pth or a ComfyUI .safetensors (any float dtype) onto the CPU in
    ``dtype``, one tensor at a time. The width is read from the weights. Raises VAEWeightsError for a file of
    another component and WeightFileError (weights.py) for unreadable, truncated or incomplete files."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"load_vae: dtype must be float32, bfloat16 or float16, got {dtype}")
    sd = open_state_dict(path)
    shapes = sd.shapes()
    _check_is_wan21_vae(shapes, path)
    config = VAEConfig.from_shapes(shapes)
    with torch.device("meta"):
        model = WanVAE(config)
    load_state_dict_into(model, sd, compute_dtype=dtype, strict=True, what=f"Wan 2.1 VAE ({path})")
    return model.eval().requires_grad_(False)
