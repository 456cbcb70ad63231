"""The SteadyDancer DiT: Wan 2.1 I2V transformer blocks plus SteadyDancer's condition reconciliation.

Reading order: norms -> attention layers -> WanBlock -> Head -> SteadyDancerDiT.forward.

Forward in one picture (B batch, F latent frames, h x w latent size, p = patch size, D = dim):

    condition --TMCM--+--SSAR--+ (sum) -> fused --FAAU(query = x)--> aligned
    [x | y | fused | aligned] --patch_embedding_fuse--> F frames      \
    ref_x --patch_embedding--> 1 frame                                 > concatenated in time: F + 2 frames
    ref_c[:16] --patch_embedding_ref_c--> 1 frame                     /   (rotary frame indices 0..F+1)
    text (zero-padded to text_len, padding NOT masked) -> text_embedding; CLIP x and c -> img_emb, summed
    tokens -> num_layers x WanBlock -> Head -> unpatchify -> first F frames  [B, out_dim, F, h, w]

With a ``sequence_parallel.SequenceParallel`` attached, each rank runs the blocks on its chunk of the tokens and
attends over the whole sequence through the group's all-to-all exchange (everything else is unchanged).

Inside ``caching_context`` the embedded context and every block's cross-attention keys / values are computed once
per distinct context and reused bit for bit by later steps (``context_cache.py``). Each block's ``core`` (all but
that projection) is the region ``runtime/compile.py`` compiles.

Parameter names equal the released checkpoint's, so ``load_state_dict(official, strict=True)`` works.
Precision: the residual stream, the modulation and every norm run in float32; linear layers and attention run in
``compute_dtype`` (the parameter dtype unless set). Rotary tables are real-valued float32 cos/sin built once per
forward from float64 angles (float32 on devices without float64).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import attention, check_backend
from .context_cache import CONTEXT_CACHE_ENTRIES, ContextCache
from .dit_config import DiTConfig
from .fused_linear import GeluMLP, linear_gelu
from .ops import PLAIN_OPS, Ops
from .pose_modules import FAAU, SSAR, build_tmcm
from .rotary import apply_rope, rope_tables, timestep_embedding

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --- norms -------------------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Wan RMSNorm: normalise in fp32, cast back, then scale (official order)."""
    return F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype) * weight


def norm_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """adaLN in fp32: LayerNorm(x) * (1 + scale) + shift; x [B, L, D], shift / scale [B or 1, 1, D].

    When one modulation serves the whole batch (one timestep for every sample) it is the LayerNorm's own affine,
    a single pass over x.
    """
    x = x.float()
    if shift.shape[0] == 1:
        return F.layer_norm(x, x.shape[-1:], (1 + scale).flatten(), shift.flatten(), eps)
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=eps), 1 + scale)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


# --- attention layers -----------------------------------------------------------------------------------------

class SelfAttention(nn.Module):
    """Multi-head self-attention with RMS-normalised q/k and 3-axis rotary embedding.

    forward(x [B, L, D] (compute dtype), rope (cos_pairs [L, 1, head_dim], sin [L, 1, head_dim/2]), keep)
    -> [B, keep or L, D].
    ``keep``: only the first ``keep`` tokens are queried (keys and values still see all L tokens).
    ``exchange``: None, or a ``sequence_parallel.SequenceParallel`` whose ``attend`` attends over the whole sequence
    when x holds one rank's chunk of it.
    """

    def __init__(self, config: DiTConfig, backend: str, ops: Ops = PLAIN_OPS):
        super().__init__()
        dim, self.heads, self.backend = config.dim, config.num_heads, backend
        self.q = ops.Linear(dim, dim)
        self.k = ops.Linear(dim, dim)
        self.v = ops.Linear(dim, dim)
        self.o = ops.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, config.eps) if config.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, config.eps) if config.qk_norm else nn.Identity()
        self.exchange = None

    def forward(self, x, rope, keep=None):
        cos_pairs, sin = rope
        xq = x if keep is None else x[:, :keep]
        q = self.norm_q(self.q(xq)).unflatten(-1, (self.heads, -1))
        k = self.norm_k(self.k(x)).unflatten(-1, (self.heads, -1))
        v = self.v(x).unflatten(-1, (self.heads, -1))
        q = apply_rope(q, cos_pairs[:q.shape[1]], sin[:q.shape[1]])
        k = apply_rope(k, cos_pairs, sin)
        attend = attention if self.exchange is None else self.exchange.attend
        return self.o(attend(q, k, v, self.backend).flatten(2))


class I2VCrossAttention(nn.Module):
    """Cross-attention to [CLIP image tokens | text tokens]: two softmaxes, outputs summed, one projection.

    In three steps: ``context_kv(context [B, clip_tokens + Lt, D])`` projects the keys / values (they depend only on
    the context, so they can be cached across steps), ``attention_keys(kv, text_pad)`` expands the padding row (the
    official model attends to all text_len tokens, padding included; the last text row stands for ``text_pad``
    identical zero-padding tokens and is weighted exactly by its multiplicity), ``forward(x [B, Lq, D], keys)``
    -> [B, Lq, D].
    """

    def __init__(self, config: DiTConfig, backend: str, ops: Ops = PLAIN_OPS):
        super().__init__()
        dim, self.heads, self.backend = config.dim, config.num_heads, backend
        self.clip_tokens = config.clip_tokens
        self.q = ops.Linear(dim, dim)
        self.k = ops.Linear(dim, dim)
        self.v = ops.Linear(dim, dim)
        self.o = ops.Linear(dim, dim)
        self.k_img = ops.Linear(dim, dim)
        self.v_img = ops.Linear(dim, dim)
        norm = (lambda: RMSNorm(dim, config.eps)) if config.qk_norm else nn.Identity
        self.norm_q, self.norm_k, self.norm_k_img = norm(), norm(), norm()

    def context_kv(self, context):
        """Keys and values of context [B, clip_tokens + Lt, D] -> (k_img, v_img, k, v), each [B, tokens, heads,
        head_dim]: the part of the cross-attention that depends only on the context (cacheable across steps)."""
        image, text = context[:, :self.clip_tokens], context[:, self.clip_tokens:]
        split = (self.heads, -1)
        k_img = self.norm_k_img(self.k_img(image)).unflatten(-1, split)
        v_img = self.v_img(image).unflatten(-1, split)
        k = self.norm_k(self.k(text)).unflatten(-1, split)
        v = self.v(text).unflatten(-1, split)
        return k_img, v_img, k, v

    def attention_keys(self, kv, text_pad=0):
        """What the two softmaxes read, from ``context_kv``'s tuple: (k_img, v_img, k, v, bias).

        ``text_pad`` > 1: the last text row stands for that many identical padding rows. With ``sdpa`` in float32
        / float64 it is kept once and weighted by an additive log-multiplicity ``bias`` [1, 1, 1, Lt] (softmax over
        one key with weight n == n identical keys); half precision cannot hold log(n) exactly enough, so there the
        row is repeated and ``bias`` is None.
        """
        k_img, v_img, k, v = kv
        if text_pad <= 1:
            return k_img, v_img, k, v, None
        if self.backend == "sdpa" and k.dtype in (torch.float32, torch.float64):
            bias = torch.zeros(1, 1, 1, k.shape[1], dtype=k.dtype, device=k.device)
            bias[..., -1] = math.log(text_pad)
            return k_img, v_img, k, v, bias
        k = torch.cat([k, k[:, -1:].expand(-1, text_pad - 1, -1, -1)], dim=1)
        v = torch.cat([v, v[:, -1:].expand(-1, text_pad - 1, -1, -1)], dim=1)
        return k_img, v_img, k, v, None

    def forward(self, x, keys):
        """x [B, Lq, D], keys: ``attention_keys(context_kv(context), text_pad)`` -> [B, Lq, D]."""
        k_img, v_img, k, v, bias = keys
        q = self.norm_q(self.q(x)).unflatten(-1, (self.heads, -1))
        out = attention(q, k_img, v_img, self.backend).add_(attention(q, k, v, self.backend, bias=bias))
        return self.o(out.flatten(2))


# --- transformer block and head -------------------------------------------------------------------------------

class WanBlock(nn.Module):
    """Wan 2.1 block: adaLN self-attention, (LayerNorm) cross-attention, adaLN GELU-tanh FFN; 6-way modulation.

    forward(x [B, L, D] fp32 residual, e [B or 1, 6, D] fp32 time projection, rope, context [B, Lc, D] (compute
    dtype), text_pad, keep, kv) -> [B, keep or L, D] fp32.
    ``kv``: None (the cross-attention keys / values are projected from ``context``), or a list used as a cache
    slot: empty -> they are projected and appended; holding the tuple -> it is used and ``context`` is not read.
    The projection runs in ``forward``; everything else in ``core``, the region ``torch.compile`` may replace
    (``runtime/compile.py``), so hooks on the block and the K/V cache stay outside any compiled code.
    """

    def __init__(self, config: DiTConfig, backend: str, ops: Ops = PLAIN_OPS):
        super().__init__()
        dim, self.eps = config.dim, config.eps
        self.self_attn = SelfAttention(config, backend, ops)
        self.norm3 = nn.LayerNorm(dim, eps=config.eps) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = I2VCrossAttention(config, backend, ops)
        self.ffn = GeluMLP(dim, config.ffn_dim, dim, approximate="tanh", ops=ops)
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)

    def forward(self, x, e, rope, context, text_pad=0, keep=None, kv=None):
        if kv is None:
            pairs = self.cross_attn.context_kv(context)
        else:
            if not kv:
                kv.append(self.cross_attn.context_kv(context))
            pairs = kv[0]
        return self.core(x, e, rope, self.cross_attn.attention_keys(pairs, text_pad), keep)

    def core(self, x, e, rope, keys, keep=None):
        """The block given its cross-attention ``keys`` (``I2VCrossAttention.attention_keys``); no int but ``keep``
        changes between calls, so a compiled ``core`` is reused for every prompt length."""
        dtype = keys[1].dtype                     # v_img: a linear of the context, in the compute dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e).unsqueeze(2).unbind(1)
        h = norm_modulate(x, shift1, scale1, self.eps).to(dtype)
        attn = self.self_attn(h, rope, keep)
        if keep is not None:
            x = x[:, :keep]
        x = torch.addcmul(x, attn.float(), gate1)
        x = x + self.cross_attn(self._norm3(x).to(dtype), keys).float()
        h = norm_modulate(x, shift2, scale2, self.eps).to(dtype)
        return torch.addcmul(x, self.ffn(h).float(), gate2)

    def _norm3(self, x):
        if isinstance(self.norm3, nn.LayerNorm):
            n = self.norm3
            return F.layer_norm(x.float(), x.shape[-1:], n.weight.float(), n.bias.float(), n.eps)
        return x


class Head(nn.Module):
    """Output head: adaLN (2-way modulation by the un-projected time embedding) + linear to patch pixels."""

    def __init__(self, config: DiTConfig, ops: Ops = PLAIN_OPS):
        super().__init__()
        dim, self.eps = config.dim, config.eps
        self.head = ops.Linear(dim, math.prod(config.patch_size) * config.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim ** 0.5)

    def forward(self, x, e, dtype):
        """x [B, L, D] fp32, e [B or 1, D] fp32 -> [B, L, prod(patch) * out_dim] in ``dtype``."""
        shift, scale = (self.modulation.float() + e[:, None]).unsqueeze(2).unbind(1)
        return self.head(norm_modulate(x, shift, scale, self.eps).to(dtype))


class MLPProj(nn.Module):
    """CLIP feature projection ``img_emb``: LayerNorm, Linear, GELU, Linear, LayerNorm; [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, out_dim: int, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), ops.Linear(in_dim, in_dim), nn.GELU(),
                                  ops.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))

    def forward(self, x):
        norm_in, fc1, act, fc2, norm_out = self.proj
        return norm_out(fc2(linear_gelu(fc1, act, norm_in(x))))


# --- the model ------------------------------------------------------------------------------------------------

class SteadyDancerDiT(nn.Module):
    """SteadyDancer-14B denoiser (Wan 2.1 I2V + condition reconciliation + pose modulation modules).

    Every linear layer is built from ``ops.Linear`` (``ops.PLAIN_OPS``: the fused ``Linear``; loaders of fp8 / GGUF
    files pass packed ops), the rest from nn.Conv / norm modules. The class attributes below declare what the
    runtime may stream between devices and what stays in high precision; offload and the file writers read them.
    The model never moves itself between devices.
    """

    BLOCKS = "blocks"                                      # nn.ModuleList of blocks, called through __call__
    SWAPPABLE_EMBEDDINGS = ("text_embedding", "img_emb")   # embedding modules that may be streamed like blocks
    HIGH_PRECISION = ("modulation",)                      # parameter names never quantised (kept BF16 in GGUF)

    def __init__(self, config: DiTConfig, attention_backend: str = "sdpa", ops: Ops = PLAIN_OPS):
        super().__init__()
        check_backend(attention_backend)
        self.config = config
        self.attention_backend = attention_backend
        self._compute_dtype = None
        self.context_cache: ContextCache | None = None     # set inside ``caching_context``
        self.sequence_parallel = None       # a SequenceParallel runs the blocks on one rank's tokens (its attach)
        c, patch, cc = config, config.patch_size, config.condition_channels
        # condition reconciliation: fused [x | y | fused pose | aligned pose], reference image, first pose
        self.patch_embedding = nn.Conv3d(c.in_dim, c.dim, patch, patch)
        self.patch_embedding_fuse = nn.Conv3d(c.in_dim + 2 * cc, c.dim, patch, patch)
        self.patch_embedding_ref_c = nn.Conv3d(cc, c.dim, patch, patch)
        # synergistic pose modulation modules
        self.condition_embedding_spatial = SSAR(cc, ops)
        self.condition_embedding_temporal = build_tmcm(cc)
        self.condition_embedding_align = FAAU(cc, c.out_dim, c.align_hidden, c.align_heads)
        # Wan 2.1 I2V embeddings, blocks, head
        self.text_embedding = GeluMLP(c.text_dim, c.dim, c.dim, approximate="tanh", ops=ops)
        self.time_embedding = nn.Sequential(ops.Linear(c.freq_dim, c.dim), nn.SiLU(), ops.Linear(c.dim, c.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), ops.Linear(c.dim, 6 * c.dim))
        self.blocks = nn.ModuleList([WanBlock(c, attention_backend, ops) for _ in range(c.num_layers)])
        self.head = Head(c, ops)
        self.img_emb = MLPProj(c.clip_dim, c.dim, ops)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.invalidate_context_cache())

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of linear/attention inputs: set explicitly, else the patch-embedding parameter dtype."""
        if self._compute_dtype is not None:
            return self._compute_dtype
        dtype = self.patch_embedding_fuse.weight.dtype
        return dtype if dtype in _FLOAT_DTYPES else torch.bfloat16

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype | None):
        if dtype is not None and dtype not in _FLOAT_DTYPES:
            raise ValueError(f"compute_dtype must be one of {_FLOAT_DTYPES} or None, got {dtype}")
        self._compute_dtype = dtype

    @contextlib.contextmanager
    def caching_context(self, max_entries: int = CONTEXT_CACHE_ENTRIES) -> Iterator[ContextCache]:
        """Inside the ``with`` block, forwards reuse the embedded context and every block's cross-attention keys /
        values for inputs seen before (``context_cache.py``: exact, keyed by value); on exit they are dropped.
        Nested use keeps the outer cache."""
        if self.context_cache is not None:
            yield self.context_cache
            return
        self.context_cache = ContextCache(max_entries)
        try:
            yield self.context_cache
        finally:
            self.context_cache.clear()
            self.context_cache = None

    def invalidate_context_cache(self) -> None:
        """Forget cached context projections (call after changing weights in place, e.g. merging a LoRA)."""
        if self.context_cache is not None:
            self.context_cache.clear()

    def forward(self, x, t, context, y, condition, ref_x, ref_c, clip_fea_x, clip_fea_c, block_stack=None):
        """Predict the flow (velocity) for a batch.

        x [B, 16, F, h, w] noisy latent; t [B] timesteps 0..1000, or [1] (one for the whole batch: cheaper);
        context [B, L, text_dim] umT5 embedding, L <= text_len, zero rows as padding (or a list of [L_i, text_dim]);
        y [B, 20, F, h, w] (4 mask + 16 image-latent channels); condition [B, 16, F, h, w] pose latent;
        ref_x [B, 36, 1, h, w] reference image; ref_c [B, >=16, 1, h, w] first pose (first 16 channels used);
        clip_fea_x / clip_fea_c [B, clip_tokens, clip_dim] CLIP features of the photo / first pose.
        block_stack: optional ``fn(run, tokens, keep) -> tokens`` called in place of the blocks (step caching):
        ``run(tokens)`` runs them, tokens [B, L, D] fp32 -> [B, keep, D] (the first F frames' tokens).
        Returns [B, out_dim, F, h, w] in ``compute_dtype``.
        """
        cfg, dtype = self.config, self.compute_dtype
        context = self._pad_context_list(context)
        t = self._check_inputs(x, t, context, y, condition, ref_x, ref_c, clip_fea_x, clip_fea_c)
        b, _, frames, _, _ = x.shape
        x, y, condition, ref_x, ref_c = (u.to(dtype) for u in (x, y, condition, ref_x, ref_c))

        # 1. pose modulation: TMCM + SSAR fused with the raw pose; FAAU aligns it to the noisy latent
        fused = condition + self.condition_embedding_temporal(condition) + self.condition_embedding_spatial(condition)
        aligned = self.condition_embedding_align(fused, x)

        # 2. condition reconciliation: three patch embeddings concatenated along time (F + 2 grid frames)
        tokens = torch.cat([
            self.patch_embedding_fuse(torch.cat([x, y, fused, aligned], dim=1)),
            self.patch_embedding(ref_x),
            self.patch_embedding_ref_c(ref_c[:, :cfg.condition_channels]),
        ], dim=2)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2).contiguous().float()         # [B, L, D] residual stream

        # 3. time: e modulates the head, e6 the blocks ([1, ...] when one timestep serves the batch)
        e, e6 = self.time_embeddings(t)

        # 4. context: [img_emb(clip x) + img_emb(clip c) | text], and per block its keys / values (cached or not)
        context, text_pad, kv = self._context(context, clip_fea_x, clip_fea_c, dtype)

        # 5. blocks; the last one computes only the tokens that are returned (the first F frames)
        cos, sin = rope_tables(grid, cfg.rope_pairs, tokens.device)
        rope = (cos.repeat_interleave(2, dim=-1), sin)
        keep = (frames // cfg.patch_size[0]) * grid[1] * grid[2]
        sp = self.sequence_parallel
        blocks = self.run_blocks if sp is None else functools.partial(sp.run, self.run_blocks)
        run = functools.partial(blocks, e6=e6, rope=rope, context=context, text_pad=text_pad, keep=keep, kv=kv)
        tokens = run(tokens) if block_stack is None else block_stack(run, tokens, keep)
        out = self.head(tokens[:, :keep], e.float(), dtype)
        return self.unpatchify(out, (frames // cfg.patch_size[0], grid[1], grid[2]))

    def run_blocks(self, tokens, e6, rope, context, text_pad, keep, kv=None):
        """The block stack: tokens [B, L, D] fp32 -> [B, keep, D]; the last block computes only the first keep.
        kv: per block its cache slot (``ContextEntry.kv``), or None. ``tokens`` is not modified in place (step
        caching takes the residual as output minus input)."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            tokens = block(tokens, e6, rope, context, text_pad, keep if i == last else None,
                           None if kv is None else kv[i])
        return tokens

    def time_embeddings(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps t [B] (or [1]) -> (e [B, D] for the head, e6 [B, 6, D] float32 modulating the blocks)."""
        e = self.time_embedding(timestep_embedding(t, self.config.freq_dim).to(self.compute_dtype))
        return e, self.time_projection(e).unflatten(1, (6, self.config.dim)).float()

    def embed_context(self, context, clip_fea_x, clip_fea_c, dtype) -> tuple[torch.Tensor, int]:
        """[img_emb(clip x) + img_emb(clip c) | embed_text(context)] -> ([B, clip_tokens + Lt, D], text pad)."""
        b = context.shape[0]
        text, text_pad = self.embed_text(context.to(dtype))
        clip = self.img_emb(torch.cat([clip_fea_x, clip_fea_c]).to(dtype))
        return torch.cat([clip[:b] + clip[b:], text], dim=1), text_pad

    def _context(self, context, clip_fea_x, clip_fea_c, dtype):
        """(embedded context, text pad, per-block K/V slots or None without a cache); see ``caching_context``."""
        cache = self.context_cache
        if cache is None:
            return (*self.embed_context(context, clip_fea_x, clip_fea_c, dtype), None)
        keys = (context, clip_fea_x, clip_fea_c)
        entry = cache.lookup(keys, dtype)
        if entry is None:
            embedded, text_pad = self.embed_context(context, clip_fea_x, clip_fea_c, dtype)
            entry = cache.insert(keys, dtype, embedded, text_pad, len(self.blocks))
        return entry.context, entry.text_pad, entry.kv

    def embed_text(self, context: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Text embedding of context [B, L, text_dim] zero-padded to text_len, padding unmasked.

        The text_len - L padding rows are identical, so one padding row is embedded and its multiplicity
        returned: -> ([B, L (+1), D], pad count).
        """
        pad = self.config.text_len - context.shape[1]
        if pad > 0:
            context = torch.cat([context, context.new_zeros(context.shape[0], 1, context.shape[2])], dim=1)
        return self.text_embedding(context), max(pad, 0)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, f*h*w, pt*ph*pw*C] tokens -> [B, C, f*pt, h*ph, w*pw]."""
        (pt, ph, pw), c = self.config.patch_size, self.config.out_dim
        f, h, w = grid
        x = x.reshape(x.shape[0], f, h, w, pt, ph, pw, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(x.shape[0], c, f * pt, h * ph, w * pw)

    # --- input validation -----------------------------------------------------------------------------------

    def _pad_context_list(self, context):
        if isinstance(context, (list, tuple)):
            longest = max(u.shape[0] for u in context)
            return torch.stack([torch.cat([u, u.new_zeros(longest - u.shape[0], u.shape[1])]) for u in context])
        return context

    def _check_inputs(self, x, t, context, y, condition, ref_x, ref_c, clip_fea_x, clip_fea_c):
        cfg = self.config
        if x.dim() != 5:
            raise ValueError(f"x must be [B, {cfg.out_dim}, F, h, w], got {tuple(x.shape)}")
        b, _, f, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent size F x h x w = {f}x{h}x{w} must be divisible by the patch size "
                             f"{cfg.patch_size}; use a video size that is a multiple of 16 pixels")
        expected = {
            "x": (x, (b, cfg.out_dim, f, h, w)),
            "y": (y, (b, cfg.y_channels, f, h, w)),
            "condition": (condition, (b, cfg.condition_channels, f, h, w)),
            "ref_x": (ref_x, (b, cfg.in_dim, 1, h, w)),
            "clip_fea_x": (clip_fea_x, (b, cfg.clip_tokens, cfg.clip_dim)),
            "clip_fea_c": (clip_fea_c, (b, cfg.clip_tokens, cfg.clip_dim)),
        }
        for name, (tensor, shape) in expected.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must have shape {list(shape)} (batch {b}, latent {f}x{h}x{w}), "
                                 f"got {list(tensor.shape)}")
        if ref_c.dim() != 5 or ref_c.shape[0] != b or ref_c.shape[1] < cfg.condition_channels \
                or tuple(ref_c.shape[2:]) != (1, h, w):
            raise ValueError(f"ref_c must be [{b}, >={cfg.condition_channels}, 1, {h}, {w}], "
                             f"got {list(ref_c.shape)}")
        if context.dim() != 3 or context.shape[0] != b or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context must be [{b}, L, {cfg.text_dim}], got {list(context.shape)}")
        if context.shape[1] > cfg.text_len:
            raise ValueError(f"text context has {context.shape[1]} tokens, more than text_len {cfg.text_len}; "
                             "shorten the prompt")
        t = torch.as_tensor(t, device=x.device).reshape(-1)
        if t.numel() not in (1, b):
            raise ValueError(f"t must be one timestep for the batch or one per sample ({b}), got {t.numel()}")
        return t
