"""Long videos in segments: the frame count to generate, the segment plan, colour matching and the assembler that
cross-fades overlapping segments into one stream of frames.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ..models.vae_config import VAE_TEMPORAL_STRIDE

COLOR_GAIN_RANGE = (0.8, 1.25)   # per-channel contrast correction is clamped to this range


def resolve_length(requested: int, available: int) -> tuple[int, list]:
    """Frame count to generate (4n + 1) and the notices about any adjustment."""
    if available < 1:
        raise ValueError("no pose frames given; run ExtractPose/AlignPose on the driving video first")
    notices = []
    n = requested or available
    if n > available:
        notices.append(f"{n} frames requested but the driving video has only {available} pose frames: using "
                       f"{available}")
        n = available
    if is_4n1(n):
        return n, notices
    used = (n - 1) // VAE_TEMPORAL_STRIDE * VAE_TEMPORAL_STRIDE + 1
    notices.append(f"frame count {n} is not 4n+1: generating {used} frames (the last {n - used} pose frames are "
                   f"not used; give {used} or {used + VAE_TEMPORAL_STRIDE} frames to avoid this)")
    return used, notices


def plan_segments(num_frames: int, segment_frames: int, overlap: int) -> list:
    """[(start, num_frames, known_frames)]: one segment if it fits, else segments of ``segment_frames`` overlapping by
    ``overlap`` (every length is 4n + 1)."""
    if num_frames <= segment_frames:
        return [(0, num_frames, 1)]
    plan, start = [(0, segment_frames, 1)], 0
    while start + segment_frames < num_frames:
        start += segment_frames - overlap
        plan.append((start, min(segment_frames, num_frames - start), overlap))
    return plan


def latent_owners(plan: list) -> list:
    """Which segment gives each latent frame of the whole video: [(segment, first, stop)] over the whole video's latent
    frames (``1 + (T - 1) // 4`` of them), in order, covering them all once.

    plan: (start, num_frames, known_frames) per segment (``plan_segments``). Latent frame 0 is frame 0; latent
    frame j >= 1 is frames 4j-3 .. 4j. A later segment starts on that grid (every start is a multiple of 4), so its
    latent frame i >= 1 is the video's latent frame start/4 + i; its latent frame 0 (its first known frame alone)
    has no place in the whole video's latent. In an overlap, a latent frame comes from the segment that dominates the
    decoded cross-fade there: the earlier one while the frames' centre lies in the first half of the overlap, the
    later one after.
    """
    starts = [0]
    for start, _, known in plan[1:]:
        if start % VAE_TEMPORAL_STRIDE:
            raise ValueError(f"segment start {start} is not a multiple of {VAE_TEMPORAL_STRIDE}")
        middle = start + (known - 1) / 2                 # centre of the overlap (frames start .. start + known - 1)
        # first latent frame j whose frames (4j-3 .. 4j, centre 4j - 1.5) lie after the middle
        starts.append(max(start // VAE_TEMPORAL_STRIDE + 1, int((middle + 1.5) // VAE_TEMPORAL_STRIDE) + 1))
    last_start, last_frames, _ = plan[-1]
    total = 1 + (last_start + last_frames - 1) // VAE_TEMPORAL_STRIDE
    stops = starts[1:] + [total]
    return [(s, first, stop) for s, (first, stop) in enumerate(zip(starts, stops))]


def assemble_latent(segments: list) -> torch.Tensor:
    """The whole video's latent [16, F, h, w] from the segments' latents (``latent`` [16, f, h, w] with ``start``,
    ``num_frames`` and ``known_frames``), each latent frame from the segment ``latent_owners`` picks. A single
    segment is returned as it is."""
    if len(segments) == 1:
        return segments[0].latent
    plan = [(seg.start, seg.num_frames, seg.known_frames) for seg in segments]
    owners = latent_owners(plan)
    first = segments[0].latent
    out = first.new_empty((first.shape[0], owners[-1][2], *first.shape[2:]))
    for s, lo, hi in owners:
        offset = 0 if s == 0 else segments[s].start // VAE_TEMPORAL_STRIDE
        out[:, lo:hi] = segments[s].latent[:, lo - offset:hi - offset]
    return out


def color_match(frames: torch.Tensor, reference: torch.Tensor, strength: float):
    """Per-channel gain/offset mapping ``frames`` [n, H, W, 3] onto ``reference`` (same shape) statistics.

    Returns (gain [3], offset [3], drift [3] = mean(frames) - mean(reference)); gain/offset are scaled toward the
    identity by ``strength`` (0 = no correction)."""
    dims = (0, 1, 2)
    mean_f, mean_r = frames.mean(dims), reference.mean(dims)
    std_f, std_r = frames.std(dims), reference.std(dims)
    gain = (std_r / std_f.clamp_min(1e-4)).clamp(*COLOR_GAIN_RANGE)
    offset = mean_r - gain * mean_f
    # blend between the identity and the full mapping: x -> x + s * (g x + o - x)
    return 1.0 + strength * (gain - 1.0), strength * offset, mean_f - mean_r


def apply_color(frames: torch.Tensor, gain, offset) -> torch.Tensor:
    if gain is None:
        return frames
    return (frames * gain + offset).clamp(0.0, 1.0)


class Assembler:
    """Turns decoded, colour-matched segments into consecutive non-overlapping chunks; overlaps are cross-faded."""

    def __init__(self, emit: Callable[[int, torch.Tensor], None]):
        self.emit = emit
        self.tail: Optional[torch.Tensor] = None

    def push(self, start: int, frames: torch.Tensor, known: int, next_overlap: int) -> None:
        frames = frames.clone()
        if self.tail is not None:
            n = self.tail.shape[0]
            w = torch.arange(1, n + 1, dtype=frames.dtype).div(n + 1).view(-1, 1, 1, 1)
            frames[:n] = (1.0 - w) * self.tail + w * frames[:n]
        cut = frames.shape[0] - next_overlap
        self.emit(start, frames[:cut])
        self.tail = frames[cut:] if next_overlap else None


def is_4n1(n: int) -> bool:
    return n >= 1 and (n - 1) % VAE_TEMPORAL_STRIDE == 0
