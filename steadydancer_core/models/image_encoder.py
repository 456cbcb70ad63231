"""CLIP ViT-H/14 image tower (open-clip xlm-roberta-large-vit-huge-14) with Wan's official preprocessing.

What Wan passes to the DiT as ``clip_fea`` is ``visual(x, use_31_block=True)``: patch conv (no bias), class token,
position embedding, ``pre_norm``, then every transformer block but the last; no ``post_norm``, no head.
Output [N, num_tokens, dim] (real model: [N, 257, 1280]).

Preprocessing (official ``CLIPModel.visual``): images in [-1, 1] -> bicubic ``F.interpolate`` straight to
image_size x image_size (align_corners=False, no antialias, no crop) -> ``x * 0.5 + 0.5`` -> (x - mean) / std.
ComfyUI's ``clip_preprocess`` differs (antialias, crop, 1/255 rounding) and is deliberately not used.

Parameter names: the official visual tower (under ``visual.`` in the checkpoint): ``patch_embedding.weight``,
``cls_embedding``, ``pos_embedding``, ``pre_norm.*``, ``transformer.<i>.{norm1,norm2}.*``,
``transformer.<i>.attn.{to_qkv,proj}.*``, ``transformer.<i>.mlp.{0,2}.*``. The unused last block(s),
``post_norm`` and ``head`` are not built.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder_base import EncoderWrapper
from .image_encoder_config import CLIPVisionConfig
from .ops import PLAIN_OPS, Ops

VISUAL_PREFIX = "visual."  # the official checkpoint holds the whole CLIP; the image tower is under this name


class CLIPLayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32, returned in the input dtype (as upstream)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class CLIPSelfAttention(nn.Module):
    """Fused-qkv attention (scale 1/sqrt(head_dim)). [N, L, dim] -> [N, L, dim]."""

    def __init__(self, dim: int, num_heads: int, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = ops.Linear(dim, dim * 3)
        self.proj = ops.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.to_qkv(x).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class CLIPBlock(nn.Module):
    """Pre-norm transformer block with an exact-GELU MLP. [N, L, dim] -> [N, L, dim]."""

    def __init__(self, config: CLIPVisionConfig, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.norm1 = CLIPLayerNorm(config.dim, eps=config.eps)
        self.attn = CLIPSelfAttention(config.dim, config.num_heads, ops)
        self.norm2 = CLIPLayerNorm(config.dim, eps=config.eps)
        self.mlp = nn.Sequential(ops.Linear(config.dim, config.mlp_dim), nn.GELU(),
                                 ops.Linear(config.mlp_dim, config.dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CLIPVisionTower(nn.Module):
    """Visual tower up to block ``num_layers - skip_last_blocks``.

    ``forward(pixel_values [N, 3, S, S] normalised) -> [N, num_tokens, dim]``. ``ops``: the layer factories every
    linear is built from (``ops.PLAIN_OPS`` unless a loader passes packed ones).
    """

    def __init__(self, config: CLIPVisionConfig, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.config = config
        p = config.patch_size
        self.patch_embedding = nn.Conv2d(3, config.dim, kernel_size=p, stride=p, bias=False)
        self.cls_embedding = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embedding = nn.Parameter(torch.zeros(1, config.num_tokens, config.dim))
        self.pre_norm = CLIPLayerNorm(config.dim, eps=config.eps)
        self.transformer = nn.ModuleList(CLIPBlock(config, ops) for _ in range(config.used_layers))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(pixel_values.to(dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_embedding.to(x.dtype).expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pre_norm(x + self.pos_embedding.to(x.dtype))
        for block in self.transformer:
            x = block(x)
        return x


def preprocess(images: torch.Tensor, config: CLIPVisionConfig) -> torch.Tensor:
    """Official Wan preprocessing. images [N, 3, H, W] in [-1, 1] -> pixel_values [N, 3, S, S] float32."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
    size = (config.image_size, config.image_size)
    x = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)
    x = x * 0.5 + 0.5
    mean = torch.tensor(config.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ImageEncoder(EncoderWrapper):
    """CLIP vision features as Wan uses them. Placement is the caller's business; inputs follow the weights.

    ``encode(images [N, 3, H, W] in [-1, 1]) -> [N, num_tokens, dim]`` in the encoder's dtype.
    """

    WHAT, LOADER, REFERENCE_WEIGHT = "image encoder", "load_image_encoder", "patch_embedding.weight"

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Already preprocessed pixel_values [N, 3, S, S] -> features [N, num_tokens, dim]."""
        model = self._model()
        size = self.config.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(f"pixel_values must be [N, 3, {size}, {size}], got {tuple(pixel_values.shape)}")
        chunks = pixel_values.split(batch_size or pixel_values.shape[0])
        return torch.cat([model(chunk.to(self.device)) for chunk in chunks])

    @torch.inference_mode()
    def encode(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (any H, W) -> features [N, num_tokens, dim].

        ``batch_size`` bounds how many images go through the tower at once (None: all).
        """
        chunks = images.split(batch_size or max(1, images.shape[0]))
        return torch.cat([
            self.encode_pixels(preprocess(chunk.to(self.device), self.config)) for chunk in chunks
        ])

    def encode_videos(self, videos: list[torch.Tensor], batch_size: int | None = None) -> torch.Tensor:
        """Official call form: a list of [3, T, H, W] in [-1, 1] -> [sum T, num_tokens, dim]."""
        return torch.cat([self.encode(v.transpose(0, 1), batch_size) for v in videos])


