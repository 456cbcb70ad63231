"""umT5-XXL text encoder (Wan 2.1), hand-written with the official module names and semantics.

Semantics of the official ``T5Encoder`` (shared_pos=False): token embedding -> N blocks of
[RMS norm -> self-attention with a per-block bidirectional relative-position bias and the padding mask,
no 1/sqrt(d) scaling -> residual; RMS norm -> gated tanh-GELU FFN -> residual] -> final RMS norm.
Hand-written rather than via ``transformers``: the official names load without renaming, every linear is built from
the ``ops`` given at construction (packed fp8 / GGUF ops from ``loading/quant_ops.py`` when a loader passes them), and the encoder runs only over the real tokens (see ``TextEncoder.encode``).

Parameter names (official): ``token_embedding.weight``, ``blocks.<i>.{norm1,norm2}.weight``,
``blocks.<i>.attn.{q,k,v,o}.weight``, ``blocks.<i>.ffn.{gate.0,fc1,fc2}.weight``,
``blocks.<i>.pos_embedding.embedding.weight``, ``norm.weight``.
"""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder_base import EncoderWrapper
from .ops import PLAIN_OPS, Ops
from .text_encoder_config import T5Config
from .tokenizer import UMT5Tokenizer

log = logging.getLogger(__name__)


def relative_position_buckets(length: int, num_buckets: int, max_dist: int, device=None) -> torch.Tensor:
    """Bidirectional T5 buckets of (key - query) offsets -> [length, length] int64 in [0, num_buckets)."""
    pos = torch.arange(length, device=device)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).long() * half
    rel = rel.abs()
    max_exact = half // 2
    large = max_exact + (
        torch.log(rel.float() / max_exact) / math.log(max_dist / max_exact) * (half - max_exact)
    ).long()
    large = torch.clamp(large, max=half - 1)
    return buckets + torch.where(rel < max_exact, rel, large)


class T5RMSNorm(nn.Module):
    """T5 layer norm: scale only, no mean subtraction; statistics in fp32. [..., dim] -> [..., dim]."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight.to(x.dtype) * y.to(x.dtype)


class T5RelativeEmbedding(nn.Module):
    """Learned per-head bias for each relative-position bucket. ``forward(L)`` -> [1, heads, L, L]."""

    def __init__(self, num_buckets: int, num_heads: int, max_dist: int):
        super().__init__()
        self.num_buckets, self.max_dist = num_buckets, max_dist
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def forward(self, length: int) -> torch.Tensor:
        buckets = relative_position_buckets(length, self.num_buckets, self.max_dist, self.embedding.weight.device)
        return self.embedding(buckets).permute(2, 0, 1).unsqueeze(0)


class T5Attention(nn.Module):
    """Multi-head self-attention without 1/sqrt(d) scaling. x [B, L, dim], bias [B|1, H, L, L] -> [B, L, dim]."""

    def __init__(self, dim: int, dim_attn: int, num_heads: int, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.num_heads = num_heads
        self.q = ops.Linear(dim, dim_attn, bias=False)
        self.k = ops.Linear(dim, dim_attn, bias=False)
        self.v = ops.Linear(dim, dim_attn, bias=False)
        self.o = ops.Linear(dim_attn, dim, bias=False)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        q, k, v = (proj(x).view(b, length, self.num_heads, -1).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.o(out.transpose(1, 2).reshape(b, length, -1))


class T5FeedForward(nn.Module):
    """Gated FFN: fc2(fc1(x) * gelu_tanh(gate(x))). [B, L, dim] -> [B, L, dim]."""

    def __init__(self, dim: int, dim_ffn: int, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.gate = nn.Sequential(ops.Linear(dim, dim_ffn, bias=False), nn.GELU(approximate="tanh"))
        self.fc1 = ops.Linear(dim, dim_ffn, bias=False)
        self.fc2 = ops.Linear(dim_ffn, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(x) * self.gate(x))


def _fp16_clamp(x: torch.Tensor) -> torch.Tensor:
    """As upstream: in fp16, clamp infinities to the largest finite value minus 1000."""
    if x.dtype == torch.float16 and torch.isinf(x).any():
        limit = torch.finfo(x.dtype).max - 1000
        x = x.clamp(-limit, limit)
    return x


class T5Block(nn.Module):
    """One encoder block with its own relative-position table. x [B, L, dim], key_mask [B, L] -> [B, L, dim]."""

    def __init__(self, config: T5Config, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.norm1 = T5RMSNorm(config.dim, config.eps)
        self.attn = T5Attention(config.dim, config.dim_attn, config.num_heads, ops)
        self.norm2 = T5RMSNorm(config.dim, config.eps)
        self.ffn = T5FeedForward(config.dim, config.dim_ffn, ops)
        self.pos_embedding = T5RelativeEmbedding(config.num_buckets, config.num_heads, config.max_dist)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        bias = self.pos_embedding(x.shape[1]).to(x.dtype)
        bias = bias.masked_fill(key_mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        x = _fp16_clamp(x + self.attn(self.norm1(x), bias))
        return _fp16_clamp(x + self.ffn(self.norm2(x)))


class UMT5Encoder(nn.Module):
    """The umT5 encoder stack. ``forward(ids [B, L] int64, mask [B, L]) -> [B, L, dim]`` (pad rows included).

    ``ops``: the layer factories every linear is built from (``ops.PLAIN_OPS`` unless a loader passes packed ones).
    """

    def __init__(self, config: T5Config, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(T5Block(config, ops) for _ in range(config.num_layers))
        self.norm = T5RMSNorm(config.dim, config.eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.token_embedding(ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class TextEncoder(EncoderWrapper):
    """Tokenizer + umT5 encoder. Placement is the caller's business (``offload.py``); inputs follow the weights.

    ``encode(prompts)`` -> list of [L_i, dim] tensors, L_i = true token count incl. EOS (<= text_len).
    """

    WHAT, LOADER, REFERENCE_WEIGHT = "text encoder", "load_text_encoder", "token_embedding.weight"

    def __init__(self, model: UMT5Encoder, tokenizer: UMT5Tokenizer):
        super().__init__(model)
        self.tokenizer = tokenizer

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask [B, text_len] int64 (official cleaning, EOS, padding, truncation)."""
        return self.tokenizer(prompts)

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> list[torch.Tensor]:
        """Encode prompts -> [L_i, dim] each, in the encoder's dtype, on its device.

        Padding is masked out of attention and the position bias depends only on offsets, so the stack runs over
        the longest true length only: the rows kept are the same as over the full ``text_len`` padding.
        Prompts longer than ``text_len - 1`` tokens are truncated as upstream, with a warning.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        for text in prompts:
            if isinstance(text, str) and self.tokenizer.was_truncated(text):
                log.warning("prompt truncated to %d tokens (umT5 limit): %.60s...", self.config.text_len, text)
        if not prompts:
            return []
        ids, mask = self.tokenize(prompts)
        lengths = mask.sum(dim=1).tolist()
        longest = max(lengths)
        model = self._model()
        device = self.device
        out = model(ids[:, :longest].to(device), mask[:, :longest].to(device))
        return [row[:n].clone() for row, n in zip(out, lengths)]


