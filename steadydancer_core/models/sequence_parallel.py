"""Ulysses sequence parallelism of the DiT's transformer blocks over a ``torch.distributed`` process group.

With ``n`` ranks in the group, every rank embeds the whole video (pose modules SSAR / TMCM / FAAU and the patch
embeddings see whole frames; the two reference frames appended in time are ordinary tokens), then keeps one
contiguous chunk of ``ceil(L / n)`` tokens; the sequence is padded at its end to ``n`` chunks. Per block:

    local tokens [B, c, D] -> adaLN, q / k / v, rotary at the tokens' global positions (rows of the whole table)
    all-to-all: q, k, v [B, c, H, d] -> [B, n * c, H / n, d]    (whole sequence, this rank's heads)
    attention over the L real keys (the padded keys are cut off, never attended)
    all-to-all back: [B, n * c, H / n, d] -> [B, c, H, d], output projection, cross-attention, FFN: all local

After the last block the chunks are gathered, so the DiT's head, its ``block_stack`` hook (step caching) and its
callers see the whole sequence, identical on every rank. The context cache stays per rank (each holds the whole
context: cross-attention keys / values are not split).

Traffic per block and pass: the all-to-alls send ``4 * B * c * D`` values (q, k, v out, one back) of which
``(n - 1) / n`` leave the rank; the final gather ``B * c * D`` float32 per forward. ``traffic`` counts the bytes
this rank sends.

``n`` must divide the head count (``valid_sequence_degrees``). The exchange waits on its collectives through
``wait(work)`` (given by the runtime, e.g. one that also watches for another rank's failure).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.distributed as dist

from .attention import attention

MAX_SEQUENCE_DEGREE = 8     # ranks of one machine: Ulysses' all-to-all wants the fast links between its GPUs


def valid_sequence_degrees(num_heads: int, limit: int = MAX_SEQUENCE_DEGREE) -> tuple[int, ...]:
    """Sequence-parallel degrees >= 2 usable with ``num_heads`` attention heads: divisors up to ``limit``
    (40 heads: 2, 4, 5, 8)."""
    return tuple(n for n in range(2, limit + 1) if num_heads % n == 0)


def chunk_size(length: int, degree: int) -> int:
    """Tokens per rank: ``ceil(length / degree)`` (the sequence is padded at its end to ``degree`` chunks)."""
    return -(-length // degree)


def _rows(x: torch.Tensor, start: int, count: int, dim: int) -> torch.Tensor:
    """``count`` rows of ``x`` along ``dim`` from ``start``; rows past the end are zeros (padding)."""
    part = x.narrow(dim, min(start, x.shape[dim]), max(0, min(count, x.shape[dim] - start)))
    missing = count - part.shape[dim]
    if missing == 0:
        return part
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([part, x.new_zeros(shape)], dim=dim)


def _wait(work) -> None:
    work.wait()


class SequenceParallel:
    """The exchange of one sequence-parallel group; ``attach(dit)`` makes the DiT run its blocks through it.

    group: the ranks that share one forward (``torch.distributed`` group); wait: ``wait(work)`` for each
    collective (default ``work.wait()``). ``traffic``: bytes sent by this rank, per collective kind.
    """

    def __init__(self, group, wait: Optional[Callable] = None):
        self.group = group
        self.degree = dist.get_world_size(group) if group is not None else 1
        self.rank = dist.get_rank(group) if group is not None else 0
        self.wait = wait if wait is not None else _wait
        self.traffic = {"all_to_all": 0, "all_gather": 0}
        self._length: Optional[int] = None        # real tokens of the forward in progress

    # --- installation ---------------------------------------------------------------------------------------

    def attach(self, dit) -> None:
        """Route ``dit``'s block stack and every block's self-attention through this group."""
        heads = dit.config.num_heads
        if heads % self.degree:
            valid = ", ".join(map(str, valid_sequence_degrees(heads))) or "none"
            raise ValueError(f"sequence-parallel degree {self.degree} does not divide the DiT's {heads} attention "
                             f"heads; use one of {valid}")
        dit.sequence_parallel = self
        for block in dit.blocks:
            block.self_attn.exchange = self

    @staticmethod
    def detach(dit) -> None:
        dit.sequence_parallel = None
        for block in dit.blocks:
            block.self_attn.exchange = None

    # --- the block stack ------------------------------------------------------------------------------------

    def run(self, run_blocks, tokens, e6, rope, context, text_pad, keep, kv=None):
        """Drop-in for ``SteadyDancerDiT.run_blocks``: tokens [B, L, D] fp32 (whole sequence) -> [B, keep, D].

        This rank runs the blocks on its chunk (rows ``rank * c`` .. ``(rank + 1) * c`` of the padded sequence,
        with the same rows of the rotary tables); the chunks are gathered after the last block.
        """
        length = tokens.shape[1]
        chunk = chunk_size(length, self.degree)
        start = self.rank * chunk
        local = _rows(tokens, start, chunk, 1)
        cos, sin = rope
        local_rope = (_rows(cos, start, chunk, 0), _rows(sin, start, chunk, 0))
        self._length = length
        try:
            out = run_blocks(local, e6, local_rope, context, text_pad, None, kv)
        finally:
            self._length = None
        return self.gather_tokens(out)[:, :keep]

    # --- the exchange ---------------------------------------------------------------------------------------

    @torch.compiler.disable
    def attend(self, q, k, v, backend: str = "sdpa") -> torch.Tensor:
        """Self-attention of this rank's tokens over the whole sequence: q, k, v [B, c, H, d] (rotated) ->
        [B, c, H, d]. Each rank attends with H / n heads over all L real keys."""
        if self._length is None:
            raise RuntimeError("SequenceParallel.attend called outside SequenceParallel.run")
        q, k, v = self.to_heads(torch.stack([q, k, v])).unbind(0)
        out = attention(q, k[:, :self._length], v[:, :self._length], backend)
        return self.to_tokens(out)

    def to_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[S, B, c, H, d] (this rank's tokens, all heads) -> [S, B, n * c, H / n, d] (all tokens, this rank's
        heads): head group j goes to rank j, chunk i comes from rank i."""
        s, b, c, h, d = x.shape
        n = self.degree
        send = x.reshape(s, b, c, n, h // n, d).permute(3, 0, 1, 2, 4, 5).contiguous()
        recv = self._all_to_all(send)
        return recv.permute(1, 2, 0, 3, 4, 5).reshape(s, b, n * c, h // n, d)

    def to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, n * c, H / n, d] (all tokens, this rank's heads) -> [B, c, H, d] (this rank's tokens, all heads)."""
        b, length, hn, d = x.shape
        n = self.degree
        send = x.reshape(b, n, length // n, hn, d).transpose(0, 1).contiguous()
        recv = self._all_to_all(send)
        return recv.permute(1, 2, 0, 3, 4).reshape(b, length // n, n * hn, d)

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's chunk [B, c, D] -> the whole padded sequence [B, n * c, D] (the same on every rank)."""
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.degree)]
        self.wait(dist.all_gather(parts, x, group=self.group, async_op=True))
        self.traffic["all_gather"] += x.numel() * x.element_size() * (self.degree - 1)
        return torch.cat(parts, dim=1)

    def _all_to_all(self, send: torch.Tensor) -> torch.Tensor:
        """``send`` [n, ...]: slice j goes to rank j; returns [n, ...] with slice i from rank i."""
        recv = torch.empty_like(send)
        self.wait(dist.all_to_all_single(recv, send, group=self.group, async_op=True))
        self.traffic["all_to_all"] += send.numel() * send.element_size() * (self.degree - 1) // self.degree
        return recv


class LoopbackSequenceParallel(SequenceParallel):
    """One rank's work of a ``degree``-way split, on one device and without other ranks (measurements): every
    exchange hands back this rank's own data where the other ranks' would arrive, so the shapes, the arithmetic
    and ``traffic`` (what would be sent) are a real rank's; the values are not."""

    def __init__(self, degree: int):
        super().__init__(None)
        self.degree = degree

    def gather_tokens(self, x: torch.Tensor) -> torch.Tensor:
        self.traffic["all_gather"] += x.numel() * x.element_size() * (self.degree - 1)
        return x.repeat(1, self.degree, 1)

    def _all_to_all(self, send: torch.Tensor) -> torch.Tensor:
        self.traffic["all_to_all"] += send.numel() * send.element_size() * (self.degree - 1) // self.degree
        return send[self.rank:self.rank + 1].expand_as(send).contiguous()

