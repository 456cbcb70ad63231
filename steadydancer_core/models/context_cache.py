"""``ContextCache``: the DiT's context projections, computed once per distinct context instead of once per step.

Within one sampling run the text contexts and the CLIP features of a guidance pass do not change between steps or
segments, so neither do the embedded context ``[img_emb(clip x) + img_emb(clip c) | text_embedding(text)]`` nor,
in every block, the cross-attention keys and values projected from it (``k_img``, ``v_img``, ``k``, ``v``).
The cache keeps them for the last ``max_entries`` distinct inputs and hands them back bit for bit.

Key: the exact raw inputs of the context path (the padded text context [B, L, text_dim] and the CLIP features
[B, clip_tokens, clip_dim] of the photo and the first pose), compared by value (``torch.equal``; shape, dtype and
device must match) against private copies, so a tensor changed in place or a new tensor with the same values is
handled correctly; plus the compute dtype. A whole batch is one entry: the projections of a row depend on what it
is batched with (the text is padded to the longest row), so a row is never reused from another batch layout.
Weights: ``clear()`` whenever they change (the DiT clears it on ``load_state_dict``; LoRA loading clears it).

Memory per entry (B rows, Lt = embedded text rows <= text_len, Lc = clip_tokens, D = dim, b = bytes of the compute
dtype): ``B * (Lc + Lt) * D * b * (1 + 2 * num_layers)`` plus the key copies; for the 14B model (40 blocks,
D 5120, bf16) about 0.8 MB per context token per row: 0.33 GB per row for a 150-token prompt, 0.63 GB at the
512-token maximum. ``runtime/sizes.context_cache_bytes`` is the planner's upper bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

CONTEXT_CACHE_ENTRIES = 2   # distinct batch layouts kept: e.g. [cond | uncond] and [cond | uncond | uncond pose]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b)))


@dataclass
class ContextEntry:
    """One cached batch: ``context`` [B, Lc + Lt, D] embedded context (compute dtype), ``text_pad`` (multiplicity
    of the padding row), ``kv``: per block a list that holds, once the block has run, its
    (k_img, v_img, k, v) tuple, each [B, tokens, heads, head_dim]."""

    keys: tuple
    dtype: torch.dtype
    context: torch.Tensor
    text_pad: int
    kv: list = field(default_factory=list)

    def nbytes(self) -> int:
        tensors = list(self.keys) + [self.context] + [t for slot in self.kv for group in slot for t in group]
        return sum(t.numel() * t.element_size() for t in tensors)


class ContextCache:
    """Least-recently-used cache of ``ContextEntry`` (at most ``max_entries``); see the module docstring."""

    def __init__(self, max_entries: int = CONTEXT_CACHE_ENTRIES):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self.entries: list[ContextEntry] = []
        self.hits = self.misses = 0

    def lookup(self, keys: tuple, dtype: torch.dtype) -> ContextEntry | None:
        """The entry computed from exactly these key tensors in ``dtype`` (moved to most recent), or None."""
        for i, entry in enumerate(self.entries):
            if entry.dtype == dtype and len(entry.keys) == len(keys) \
                    and all(_same(a, b) for a, b in zip(entry.keys, keys)):
                self.entries.append(self.entries.pop(i))
                self.hits += 1
                return entry
        self.misses += 1
        return None

    def insert(self, keys: tuple, dtype: torch.dtype, context: torch.Tensor, text_pad: int,
               n_blocks: int) -> ContextEntry:
        """Store a new entry (copies of ``keys``, empty K/V slots for ``n_blocks`` blocks); the oldest goes first."""
        entry = ContextEntry(keys=tuple(k.clone() for k in keys), dtype=dtype, context=context, text_pad=text_pad,
                             kv=[[] for _ in range(n_blocks)])
        self.entries.append(entry)
        del self.entries[:-self.max_entries]
        return entry

    def clear(self) -> None:
        self.entries = []

    def nbytes(self) -> int:
        return sum(e.nbytes() for e in self.entries)
