"""Wan 2.1 VAE: causal 3D-conv autoencoder with streamed (chunked) time and spatial tiling.

Video [B, 3, T, H, W] in [-1, 1] with T = 1 + 4k and H, W multiples of 8  <->  latent [B, 16, 1 + k, H/8, W/8].

Time is streamed as the official code does: the encoder sees frame 0 alone and then chunks of 4 frames, the decoder
one latent frame at a time; every causal convolution keeps the last frames of its input in a per-call cache, so
the activation memory does not grow with the number of frames. Space is optionally cut into overlapping tiles
that are blended with linear ramps (``tile="auto"`` picks the tiling from a memory budget; planning and
blending live in ``vae_tiling.py``, ``TilePlan`` and ``plan_tiles`` are re-exported here).

Parameter names follow the official ``Wan2.1_VAE.pth`` (ComfyUI's ``wan_2.1_vae.safetensors`` uses the same names).
Models never move themselves between devices: the caller places the module; inputs follow it.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from .vae_config import (LATENT_CHANNELS, VAE_LATENTS_MEAN, VAE_LATENTS_STD, VAE_SPATIAL_STRIDE, VAE_TEMPORAL_STRIDE,
                         VAEConfig)
from .vae_tiling import TileBlender, TilePlan, plan_tiles

__all__ = ["WanVAE", "VAEConfig", "TilePlan", "plan_tiles", "check_video_shape", "to_raw_latent", "from_raw_latent"]

log = logging.getLogger(__name__)
_RMS_EPS = 1e-12  # F.normalize's epsilon, as upstream


# ----------------------------------------------------------------------------------------------------------------
# the two latent conventions
# ----------------------------------------------------------------------------------------------------------------
def _latent_stats(latent: torch.Tensor):
    """(mean, std) float32 shaped to broadcast over ``latent`` [16, F, h, w] or [B, 16, F, h, w]."""
    if latent.ndim not in (4, 5) or latent.shape[-4] != LATENT_CHANNELS:
        raise ValueError(f"expected a Wan 2.1 latent [{LATENT_CHANNELS}, F, h, w] or [B, {LATENT_CHANNELS}, F, h, w], "
                         f"got shape {tuple(latent.shape)}")
    shape = (-1, 1, 1, 1)
    mean = torch.tensor(VAE_LATENTS_MEAN, dtype=torch.float32, device=latent.device).view(shape)
    std = torch.tensor(VAE_LATENTS_STD, dtype=torch.float32, device=latent.device).view(shape)
    return mean, std


def to_raw_latent(latent: torch.Tensor) -> torch.Tensor:
    """Normalised latent (what the DiT works on) -> raw latent (the VAE encoder's mean ``mu``, what ComfyUI keeps in a
    LATENT's ``samples`` for Wan 2.1 and what its VAE Decode takes): ``latent * std + mean`` per channel, float32.
    [16, F, h, w] or [B, 16, F, h, w]; ComfyUI's ``latent_formats.Wan21.process_out``."""
    mean, std = _latent_stats(latent)
    return latent.float() * std + mean


def from_raw_latent(raw: torch.Tensor) -> torch.Tensor:
    """Raw latent (ComfyUI's ``samples``) -> normalised latent: ``(raw - mean) / std`` per channel, float32; the
    inverse of ``to_raw_latent`` (ComfyUI's ``latent_formats.Wan21.process_in``)."""
    mean, std = _latent_stats(raw)
    return (raw.float() - mean) / std


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
            self.resample = nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest-exact"),
                                          nn.Conv2d(dim, dim // 2, 3, padding=1))
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
    """Channel widths at the stage boundaries: encoder [dim, dim*m1, ...], decoder [dim*m_last, ..., dim*m1]."""
    mult = [config.dim_mult[-1]] + list(config.dim_mult[::-1]) if decoder else [1] + list(config.dim_mult)
    return [config.dim * m for m in mult]


def _stage(in_dim: int, out_dim: int, blocks: int, attention: bool) -> list:
    """``blocks`` ResidualBlocks in_dim -> out_dim (then out_dim -> out_dim), each followed by an AttentionBlock
    if ``attention``."""
    layers = []
    for _ in range(blocks):
        layers.append(ResidualBlock(in_dim, out_dim))
        if attention:
            layers.append(AttentionBlock(out_dim))
        in_dim = out_dim
    return layers


def _middle(dim: int) -> nn.Sequential:
    """Bottleneck at the lowest resolution: residual, attention, residual. [B, dim, t, h, w] -> same."""
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    """Output head: RMSNorm, SiLU, causal 3^3 conv. [B, dim, t, H, W] -> [B, out_dim, t, H, W]."""
    return nn.Sequential(RMSNorm(dim), nn.SiLU(), CausalConv3d(dim, out_dim, 3, padding=1))


class _Coder3d(nn.Module):
    """Shared streamed forward of Encoder3d / Decoder3d: conv1, the body layers in order, head."""

    def body(self) -> tuple:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        x = self.conv1(x, state)
        for layer in self.body():
            x = layer(x, state)
        return self.head[2](F.silu(self.head[0](x), inplace=True), state)


class Encoder3d(_Coder3d):
    """Video chunk [B, 3, t, H, W] -> [B, 2*z_dim, t', H/8, W/8] (upstream ``Encoder3d``; t' = 1 for the first
    chunk of 1 frame and for every later chunk of 4 frames)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        dims = _stage_dims(config, decoder=False)
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        layers, scale = [], 1.0
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            layers += _stage(in_dim, out_dim, config.num_res_blocks, scale in config.attn_scales)
            if i != len(config.dim_mult) - 1:
                layers.append(Resample(out_dim, "downsample3d" if config.temperal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(out_dim)
        self.head = _head(out_dim, 2 * config.z_dim)

    def body(self) -> tuple:
        return (*self.downsamples, *self.middle)


class Decoder3d(_Coder3d):
    """Latent chunk [B, z_dim, t, h, w] -> video [B, 3, t', 8h, 8w] (upstream ``Decoder3d``; one latent frame gives
    1 frame first, 4 frames afterwards)."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        dims = _stage_dims(config, decoder=True)
        upsample_time = config.temperal_downsample[::-1]
        self.conv1 = CausalConv3d(config.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        layers, scale = [], 1.0 / 2 ** (len(config.dim_mult) - 2)
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim = in_dim // 2  # every upsample halves the width
            layers += _stage(in_dim, out_dim, config.num_res_blocks + 1, scale in config.attn_scales)
            if i != len(config.dim_mult) - 1:
                layers.append(Resample(out_dim, "upsample3d" if upsample_time[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.Sequential(*layers)
        self.head = _head(out_dim, 3)

    def body(self) -> tuple:
        return (*self.middle, *self.upsamples)


# ----------------------------------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------------------------------
def check_video_shape(shape) -> None:
    """Raise a ValueError naming the fix unless ``shape`` is [B, 3, 1 + 4k, H, W] with H, W multiples of 8."""
    if len(shape) != 5 or shape[1] != 3:
        raise ValueError(f"VAE encode expects a video [B, 3, T, H, W] in [-1, 1], got shape {tuple(shape)}")
    t, h, w = shape[2:]
    if t < 1 or (t - 1) % VAE_TEMPORAL_STRIDE:
        lo = 1 + max(0, (t - 1) // VAE_TEMPORAL_STRIDE) * VAE_TEMPORAL_STRIDE
        raise ValueError(
            f"VAE encode needs 1 + {VAE_TEMPORAL_STRIDE}k frames, got {t}: use {lo} or {lo + VAE_TEMPORAL_STRIDE} "
            f"frames (trim or pad the video)"
        )
    s = VAE_SPATIAL_STRIDE
    if h % s or w % s or h == 0 or w == 0:
        def near(v):
            return f"{max(s, v // s * s)} or {-(-v // s) * s}" if v % s else str(v)
        raise ValueError(
            f"VAE encode needs height and width that are multiples of {s}, got {h}x{w} (HxW): "
            f"resize or crop to height {near(h)} and width {near(w)}"
        )


def _frame_span(i: int) -> slice:
    """Video frames of latent frame i: frame 0 alone, then 4 frames per latent frame ([1, 5), [5, 9), ...)."""
    return slice(0, 1) if i == 0 else slice(1 + VAE_TEMPORAL_STRIDE * (i - 1), 1 + VAE_TEMPORAL_STRIDE * i)


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
            raise ValueError(f"VAE decode expects a latent [B, {self.config.z_dim}, t, h, w], "
                             f"got shape {tuple(z.shape)}")

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
        """Normalised latent -> raw decoder input: latent * std + mean per channel (``to_raw_latent``)."""
        self._check_latent(latent)
        return to_raw_latent(latent)

    def tile_plan(self, height: int, width: int, mode: str, tile="auto", overlap=None, memory_budget=None) -> TilePlan:
        """The tiling an encode/decode of a (height x width)-pixel video would use (see ``plan_tiles``)."""
        return plan_tiles(self.config, height, width, self.dtype, mode, tile, overlap, memory_budget, self.device)

    # --- encode -------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_raw(self, video: torch.Tensor, tile="auto", tile_overlap=None, memory_budget=None) -> torch.Tensor:
        """video [B,3,T,H,W] in [-1,1] -> encoder mean mu [B,16,1+(T-1)//4,H/8,W/8] (float32, not normalised).

        Per tile, time is streamed: latent frame i comes from video frames ``_frame_span(i)`` (frame 0 alone,
        then chunks of 4) with the causal convolutions' caches carried in ``state``."""
        check_video_shape(video.shape)
        b, _, t, h, w = video.shape
        plan = self.tile_plan(h, w, "encode", tile, tile_overlap, memory_budget)
        self.last_tile_plan = plan
        log.debug("VAE encode %dx%d, %d frames: %s", h, w, t, plan.explanation)
        s, lt = VAE_SPATIAL_STRIDE, 1 + (t - 1) // VAE_TEMPORAL_STRIDE
        blend = TileBlender(plan, b, self.config.z_dim, lt, h // s, w // s, scale=1, device=video.device)
        for tile in blend.tiles():
            py, px = tile.pixels
            state = {}
            for i in range(lt):
                chunk = video[:, :, _frame_span(i), py, px].to(device=self.device, dtype=self.dtype)
                mu = self.conv1(self.encoder(chunk, state))[:, :self.config.z_dim]
                blend.add(tile, slice(i, i + 1), mu.float().to(video.device))
        return blend.result()

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
        """Raw (denormalised) latent [B,16,t,h,w] -> video [B,3,1+4(t-1),8h,8w] float32.

        Per tile, time is streamed: latent frame i alone gives video frames ``_frame_span(i)`` (1 frame, then 4),
        with the causal convolutions' caches carried in ``state``."""
        self._check_latent(z)
        b, _, lt, h, w = z.shape
        s = VAE_SPATIAL_STRIDE
        t = 1 + VAE_TEMPORAL_STRIDE * (lt - 1)
        plan = self.tile_plan(h * s, w * s, "decode", tile, tile_overlap, memory_budget)
        self.last_tile_plan = plan
        log.debug("VAE decode %dx%d, %d frames: %s", h * s, w * s, t, plan.explanation)
        blend = TileBlender(plan, b, 3, t, h, w, scale=s, device=z.device)
        for tile in blend.tiles():
            state = {}
            for i in range(lt):
                zi = z[:, :, i:i + 1, tile.ys, tile.xs].to(device=self.device, dtype=self.dtype)
                frames = self.decoder(self.conv2(zi), state).float().to(z.device)
                blend.add(tile, _frame_span(i), frames)
        out = blend.result()
        return out.clamp_(-1.0, 1.0) if clamp else out


