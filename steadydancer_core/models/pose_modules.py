"""SteadyDancer's pose-condition modules ("Synergistic Pose Modulation Modules" of the paper).

* SSAR - the spatial-structure adaptive module (the official code comment calls it "Spatial Structure Adaptive
  Extractor"): a dynamic (input-conditioned) 1x1 convolution applied per frame (official class ``DYModule`` from
  dynamic channel-wise decomposition, module name ``condition_embedding_spatial``).
* TMCM - Temporal Motion Coherence Module: three factorised (2+1)D convolutions, depthwise 1x3x3 in space then
  3x1x1 in time, each followed by SiLU (official ``FactorConv3d`` stack, ``condition_embedding_temporal``).
* FAAU - Frame-wise Attention Alignment Unit: cross-attention from the noisy latent (query) to the fused pose
  (key/value) (official ``PoseRefNetNoBNV3``, ``condition_embedding_align``). As in the official code the
  attention runs **across frames for each pixel** (``nn.MultiheadAttention`` with ``batch_first=False`` on a
  (frames, pixels, channels) tensor); here it is one batched SDPA over (batch x pixels) sequences of F frames,
  so a batch of B equals B single calls (the official module, only ever called with B = 1, would mix the
  samples of a batch; dropout is an inference no-op).

Parameter names equal the official checkpoint's. All modules take ``[B, C, F, H, W]`` latents.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dit_config import DIT_ALIGN_NORM_EPS, DIT_SSAR_FC_SQUEEZE, DIT_SSAR_GROUPS
from .ops import PLAIN_OPS, Ops


class HardSigmoid3(nn.Module):
    """relu6(x + 3) / 3 (sic: range [0, 2]; the official dynamic-conv code divides by 3, not 6)."""

    def forward(self, x):
        return F.relu6(x + 3.0) / 3.0


class SqueezeExcite(nn.Module):
    """x * hsigmoid(W x) on a [N, C] vector (official ``SEModule_small``)."""

    def __init__(self, channels: int, ops: Ops = PLAIN_OPS):
        super().__init__()
        self.fc = nn.Sequential(ops.Linear(channels, channels, bias=False), HardSigmoid3())

    def forward(self, x):
        return x * self.fc(x)


def ssar_sizes(channels: int) -> tuple[int, int]:
    """(dynamic width, squeeze width) of the official ``DYModule(inp=oup=channels)``: 4 and 4 for 16 channels."""
    reduction = 2
    width = channels // reduction
    while width ** 2 > channels * 2:
        reduction *= 2
        width = channels // reduction
    width = max(width, 4)
    squeeze = max(max(channels, width ** 2) // DIT_SSAR_FC_SQUEEZE, 4)
    return width, squeeze


class SSAR(nn.Module):
    """Spatial Structure Adaptive Refiner: dynamic conv over each frame of the pose latent.

    With the per-frame global average ``g`` [N, C]: ``s = SE(W_fc g)``, a dynamic channel mixer
    ``phi = W_phi s`` [N, d, d] and an output scale ``a = hsigmoid(W_scale s)``; then
    ``out = W_p (GN2(phi @ GN1(W_q x)) + GN1(W_q x)) + a * (W x)``.
    forward: [B, C, F, H, W] -> [B, C, F, H, W] (frames are independent).
    """

    def __init__(self, channels: int, ops: Ops = PLAIN_OPS):
        super().__init__()
        width, squeeze = ssar_sizes(channels)
        self.width = width
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv_q = nn.Conv2d(channels, width, 1, bias=False)
        self.fc = nn.Sequential(ops.Linear(channels, squeeze, bias=False), SqueezeExcite(squeeze, ops))
        self.fc_phi = ops.Linear(squeeze, width * width, bias=False)
        self.fc_scale = ops.Linear(squeeze, channels, bias=False)
        self.hs = HardSigmoid3()
        self.conv_p = nn.Conv2d(width, channels, 1, bias=False)
        self.bn1 = nn.GroupNorm(DIT_SSAR_GROUPS, width)
        self.bn2 = nn.GroupNorm(DIT_SSAR_GROUPS, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)                   # [N, C, H, W], N = B*F
        s = self.fc(frames.mean(dim=(2, 3)))                                  # [N, squeeze]
        phi = self.fc_phi(s).view(b * f, self.width, self.width)            # [N, d, d]
        scale = self.hs(self.fc_scale(s))[:, :, None, None]                 # [N, C, 1, 1]
        residual = self.conv(frames) * scale
        z = self.bn1(self.conv_q(frames)).flatten(2)                         # [N, d, H*W]
        z = self.bn2(torch.matmul(phi, z)) + z
        out = self.conv_p(z.view(b * f, self.width, h, w)) + residual
        return out.view(b, f, c, h, w).transpose(1, 2)


class FactorConv3d(nn.Module):
    """(2+1)D conv: depthwise 1xkxk spatial conv (no bias) -> SiLU -> kx1x1 temporal conv; 'same' padding."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        pad = (kernel - 1) // 2
        self.spatial = nn.Conv3d(channels, channels, (1, kernel, kernel), padding=(0, pad, pad), groups=channels,
                                 bias=False)
        self.temporal = nn.Conv3d(channels, channels, (kernel, 1, 1), padding=(pad, 0, 0))

    def forward(self, x):
        return self.temporal(F.silu(self.spatial(x)))


def build_tmcm(channels: int, depth: int = 3) -> nn.Sequential:
    """Temporal Motion Coherence Module: ``depth`` x [FactorConv3d, SiLU] (official indices 0, 2, 4)."""
    layers = []
    for _ in range(depth):
        layers += [FactorConv3d(channels), nn.SiLU()]
    return nn.Sequential(*layers)


class FAAU(nn.Module):
    """Frame-wise Attention Alignment Unit.

    query = proj_r(noisy latent), key = value = proj_p(fused pose) (1x1 convs to ``hidden``); multi-head attention
    across the F frames of each pixel; LayerNorm over channels; 1x1 FFN residual; LayerNorm; proj_p_back.
    forward(pose [B, Cp, F, H, W], latent [B, Cx, F, H, W]) -> [B, Cp, F, H, W].
    """

    def __init__(self, pose_channels: int, latent_channels: int, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.proj_p = nn.Conv2d(pose_channels, hidden, 1)
        self.proj_r = nn.Conv2d(latent_channels, hidden, 1)
        self.proj_p_back = nn.Conv2d(hidden, pose_channels, 1)
        self.cross_attn = nn.MultiheadAttention(hidden, heads)   # only its parameters are used (see forward)
        self.ffn_pose = nn.Sequential(nn.Conv2d(hidden, hidden, 1), nn.SiLU(), nn.Conv2d(hidden, hidden, 1))
        self.norm1 = ChannelLayerNorm(hidden)
        self.norm2 = ChannelLayerNorm(hidden)

    def forward(self, pose: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = pose.shape
        # channels-last per pixel sequence: [B, H, W, F, C]; every 1x1 conv is a linear on the last axis
        pose = _conv1x1(self.proj_p, pose.permute(0, 3, 4, 2, 1))
        query = _conv1x1(self.proj_r, latent.permute(0, 3, 4, 2, 1))
        wq, wk, wv = self.cross_attn.in_proj_weight.chunk(3)
        bq, bk, bv = self.cross_attn.in_proj_bias.chunk(3)
        hidden = query.shape[-1]
        split = (b * h * w, f, self.heads, hidden // self.heads)             # sequences over frames
        q = F.linear(query, wq, bq).reshape(split).transpose(1, 2)
        k = F.linear(pose, wk, bk).reshape(split).transpose(1, 2)
        v = F.linear(pose, wv, bv).reshape(split).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, h, w, f, hidden)
        out = self.norm1(self.cross_attn.out_proj(out))
        out = self.norm2(out + _conv1x1(self.ffn_pose[2], F.silu(_conv1x1(self.ffn_pose[0], out))))
        out = _conv1x1(self.proj_p_back, out)                                 # [B, H, W, F, Cp]
        return out.permute(0, 4, 3, 1, 2)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels (biased variance); parameters shaped [1, C, 1, 1] as in the official file.

    forward takes channels-last tensors [..., C].
    """

    def __init__(self, channels: int, eps: float = DIT_ALIGN_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight.flatten(), self.bias.flatten(), self.eps)


def _conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 1x1 Conv2d to a channels-last tensor [..., C_in] -> [..., C_out]."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)
