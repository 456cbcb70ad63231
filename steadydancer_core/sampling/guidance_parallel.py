"""Guidance parallelism: the guidance passes of a step run on different groups of ranks; their predictions are
gathered, so every rank combines the same predictions into the same latent.

Passes go to groups round robin in their fixed order over the whole job (``job_passes``: COND, UNCOND_TEXT,
UNCOND_CONDITION, those the job uses), so a pass always runs on the same group and its step-cache state stays
there: every group decides for its own passes exactly as a single process would. At the defaults (40 steps, text
CFG 5, pose CFG while 0.1 < step/steps < 0.4: 2 passes on 29 steps, 3 on 11, 91 in all) the busiest group runs
51 passes on 2 groups and 40 on 3 (``busiest_group_passes``).

Each step the groups exchange one tensor [most passes of a group, 16, F, h, w] (a group with fewer passes pads
with zeros) among the ranks with the same sequence rank, and the pass counts over all ranks.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .guidance import COND, UNCOND_CONDITION, UNCOND_TEXT, Guidance

PASS_ORDER = (COND, UNCOND_TEXT, UNCOND_CONDITION)


def job_passes(guidance: Guidance, steps: int) -> tuple[str, ...]:
    """The passes the job runs at any step, in ``PASS_ORDER``."""
    used = {p for i in range(steps) for p in guidance.passes(i, steps)}
    return tuple(p for p in PASS_ORDER if p in used)


def pass_owners(passes: Sequence[str], groups: int) -> dict[str, int]:
    """pass -> the guidance group that computes it (round robin over ``passes``)."""
    return {p: i % groups for i, p in enumerate(passes)}


def busiest_group_passes(guidance: Guidance, steps: int, groups: int) -> int:
    """DiT passes the busiest group runs in one segment, i.e. the steps' critical path in passes."""
    owners = pass_owners(job_passes(guidance, steps), groups)
    total = 0
    for i in range(steps):
        per_group = [0] * groups
        for p in guidance.passes(i, steps):
            per_group[owners[p]] += 1
        total += max(per_group)
    return total


class GuidanceParallelPredictor:
    """``predict(latent, t, passes, step) -> {pass: prediction}`` on one rank of a guidance-parallel job.

    inner: this rank's ``pipeline._Predictor`` (it computes its group's passes, with its own step cache);
    runtime: the ``ParallelRuntime`` (``layout.guidance_group``, ``config``, ``gather_guidance``, ``sum_ranks``);
    owners: ``pass_owners``; dtype: the predictions' dtype. ``computed`` / ``skipped`` count the passes of every
    group, the same numbers on every rank.
    """

    def __init__(self, inner, runtime, owners: dict, dtype: torch.dtype):
        self.inner, self.runtime, self.owners, self.dtype = inner, runtime, owners, dtype
        self.groups = runtime.config.guidance
        self.computed = self.skipped = 0

    def __call__(self, latent, t, passes, step) -> dict:
        passes = tuple(passes)
        lists = [tuple(p for p in passes if self.owners[p] == g) for g in range(self.groups)]
        mine = lists[self.runtime.layout.guidance_group]
        before = (self.inner.computed, self.inner.skipped)
        out = self.inner(latent, t, mine, step) if mine else {}
        stack = torch.zeros((max(map(len, lists)), *latent.shape), dtype=self.dtype, device=self.inner.device)
        for i, p in enumerate(mine):
            stack[i] = out[p]
        parts = self.runtime.gather_guidance(stack)
        computed, skipped = self.runtime.sum_ranks([self.inner.computed - before[0], self.inner.skipped - before[1]])
        sequence = self.runtime.config.sequence           # every rank of a group counted its passes
        self.computed += computed // sequence
        self.skipped += skipped // sequence
        return {p: parts[self.owners[p]][lists[self.owners[p]].index(p)] for p in passes}
