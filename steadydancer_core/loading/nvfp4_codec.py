"""NVFP4 as ComfyUI stores it (``comfy_quant`` format ``nvfp4``): the storage geometry, the block-scale layout, the
dequantiser, and a reference quantiser for writing test files.

A linear weight W [out, in] is stored as three tensors:

* ``weight``: uint8 [roundup(out, 16), roundup(in, 16) / 2]. Each byte holds two fp4 e2m1 codes of one row; the
  element with the even column index is in the **high** nibble, the odd one in the low nibble. The padding rows and
  columns are zero.
* ``weight_scale``: float8 e4m3 (or its uint8 bytes) [roundup(out, 128), roundup(in_blocks, 4)], one scale per block
  of 16 consecutive elements of a row (``in_blocks`` = roundup(in, 16) / 16), laid out in cuBLAS's tiled "blocked"
  order: the padded scale matrix is cut into 128 x 4 tiles (row-tile major), and tile element (r, c) sits at byte
  ``(r % 32) * 16 + (r // 32) * 4 + c`` of its 512-byte tile.
* ``weight_scale_2``: float32 scalar, the global scale.

Decoded: ``W[i, j] = e2m1(code[i, j]) * weight_scale[i, j // 16] * weight_scale_2``. e2m1 codes 0..7 are
0, 0.5, 1, 1.5, 2, 3, 4, 6 and codes 8..15 the same values negated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NVFP4_BLOCK = 16                       # elements per block scale
NVFP4_ROW_PAD = 16                     # rows and columns of the packed weight are padded to multiples of this
SCALE_TILE = (128, 4)                  # block-scale tile (rows, blocks) of the blocked layout
E2M1_MAX = 6.0
E4M3_MAX = 448.0
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def _roundup(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def storage_shapes(out_features: int, in_features: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Stored shapes (packed ``weight``, blocked ``weight_scale``) of an nvfp4 linear weight [out, in]."""
    rows, cols = _roundup(out_features, NVFP4_ROW_PAD), _roundup(in_features, NVFP4_ROW_PAD)
    blocks = cols // NVFP4_BLOCK
    return (rows, cols // 2), (_roundup(rows, SCALE_TILE[0]), _roundup(blocks, SCALE_TILE[1]))


def logical_shape(packed_shape) -> tuple[int, int]:
    """The padded [rows, columns] a packed weight of ``packed_shape`` [rows, bytes] decodes to."""
    return int(packed_shape[0]), 2 * int(packed_shape[1])


def unswizzle_block_scales(blocked: torch.Tensor, rows: int, blocks: int) -> torch.Tensor:
    """Blocked (tiled) scales [roundup(rows, 128), roundup(blocks, 4)] -> plain row-major scales [rows, blocks]
    (same dtype; a one-byte dtype such as float8_e4m3fn or uint8)."""
    tr, tc = SCALE_TILE
    padded_rows, padded_cols = blocked.shape
    if padded_rows % tr or padded_cols % tc or padded_rows < rows or padded_cols < blocks:
        raise ValueError(f"nvfp4 block scales of shape {tuple(blocked.shape)} cannot hold {rows} x {blocks} scales")
    # within a tile: byte (r % 32) * 16 + (r // 32) * 4 + c  ->  axes [tile row, tile col, r % 32, r // 32, c]
    tiles = blocked.reshape(padded_rows // tr, padded_cols // tc, 32, tr // 32, tc)
    plain = tiles.permute(0, 3, 2, 1, 4).reshape(padded_rows, padded_cols)
    return plain[:rows, :blocks].contiguous()


def swizzle_block_scales(plain: torch.Tensor) -> torch.Tensor:
    """Plain scales [rows, blocks] -> the blocked layout [roundup(rows, 128), roundup(blocks, 4)] (zero padded)."""
    tr, tc = SCALE_TILE
    rows, blocks = plain.shape
    padded = torch.zeros(_roundup(rows, tr), _roundup(blocks, tc), dtype=plain.dtype)
    padded[:rows, :blocks] = plain
    tiles = padded.reshape(padded.shape[0] // tr, tr // 32, 32, padded.shape[1] // tc, tc)   # [R, r//32, r%32, C, c]
    return tiles.permute(0, 3, 2, 1, 4).reshape(padded.shape).contiguous()


def dequantize_nvfp4(packed: torch.Tensor, block_scale: torch.Tensor, global_scale: torch.Tensor,
                     shape, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Packed uint8 [rows_padded, cols_padded / 2] + plain block scales [out, ceil(in / 16)] (float8 e4m3) + global
    fp32 scalar -> ``dtype`` [out, in] (``shape``). Computed on the tensors' device, in ``dtype`` (fp32 when
    ``dtype`` is fp32)."""
    out_features, in_features = (int(n) for n in shape)
    blocks = block_scale.shape[1]
    # one lookup per byte: byte -> (value of its high nibble, value of its low nibble)
    pairs = torch.tensor([(E2M1_VALUES[b >> 4], E2M1_VALUES[b & 0x0F]) for b in range(256)], dtype=dtype,
                         device=packed.device)
    values = F.embedding(packed[:out_features].int(), pairs).reshape(out_features, -1)[:, :blocks * NVFP4_BLOCK]
    values = values.reshape(out_features, blocks, NVFP4_BLOCK)
    scale = block_scale.view(torch.float8_e4m3fn).to(torch.float32) * global_scale.to(torch.float32).reshape(())
    values = values * scale.to(dtype).unsqueeze(-1)
    return values.reshape(out_features, blocks * NVFP4_BLOCK)[:, :in_features].contiguous()


def quantize_nvfp4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W [out, in] -> (packed uint8 weight, blocked float8 e4m3 ``weight_scale``, fp32 scalar ``weight_scale_2``),
    the stored layout above. Global scale amax / (448 * 6); block scales rounded to e4m3; codes nearest e2m1."""
    w = w.detach().to(torch.float32)
    out_features, in_features = w.shape
    (rows, half_cols), _ = storage_shapes(out_features, in_features)
    padded = torch.zeros(rows, 2 * half_cols)
    padded[:out_features, :in_features] = w
    global_scale = (w.abs().amax() / (E4M3_MAX * E2M1_MAX)).clamp(min=torch.finfo(torch.float32).tiny)
    blocks = padded.reshape(rows, -1, NVFP4_BLOCK)
    block_scale = (blocks.abs().amax(dim=-1) / E2M1_MAX / global_scale).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)
    total = block_scale.to(torch.float32) * global_scale
    scaled = torch.where(total[..., None] > 0, blocks / total.clamp(min=1e-30)[..., None], torch.zeros(()))
    magnitudes = torch.tensor(E2M1_VALUES[:8])
    nearest = (scaled.abs().clamp(max=E2M1_MAX)[..., None] - magnitudes).abs().argmin(dim=-1)
    codes = (nearest + 8 * (scaled < 0)).to(torch.uint8).reshape(rows, -1)
    packed = (codes[:, 0::2] << 4) | codes[:, 1::2]
    return packed, swizzle_block_scales(block_scale[:out_features]), global_scale.reshape(())
