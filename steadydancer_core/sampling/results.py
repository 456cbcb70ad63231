"""What ``generate`` returns and how it becomes frames: ``SegmentLatent`` / ``GenerationResult``, and
``iter_decoded`` / ``decode``, which decode the segments (or read back the ones ``generate`` already decoded) and
apply the colour correction, cross-fades and exact first frame."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import torch

from . import conditioning as cond
from .decoded_store import DecodedSegments
from .guidance import Cancelled
from .options import VAE_TILING, vae_tile
from .segments import Assembler, apply_color, assemble_latent

__all__ = ["GenerationResult", "SegmentLatent", "decode", "decode_frames", "iter_decoded"]


@dataclass
class SegmentLatent:
    """One sampled segment: frames [start, start + num_frames) of the video; the first ``known_frames`` were given
    (the photo, or the previous segment's tail). latent [16, F, h, w] float32 on the CPU. color_gain/offset [3]:
    the per-channel correction applied to its decoded frames; color_drift [3]: what was measured before it.
    passes_computed / passes_skipped: DiT passes run / skipped by the step cache while sampling it."""

    start: int
    num_frames: int
    known_frames: int
    latent: torch.Tensor
    color_gain: Optional[torch.Tensor] = None
    color_offset: Optional[torch.Tensor] = None
    color_drift: Optional[torch.Tensor] = None
    passes_computed: int = 0
    passes_skipped: int = 0


@dataclass
class GenerationResult:
    """Segments, output size, first-frame mode and the photo at the output size ([H, W, 3] in [0, 1]).

    decoded: the segments already decoded while sampling (``DecodedSegments``, final colour-corrected frames),
    read by ``iter_decoded`` instead of decoding them again; None when ``generate`` kept none. memory_plan: the
    job's memory plan (what was placed where, and why; None when the model placed nothing itself)."""

    segments: list
    num_frames: int
    height: int
    width: int
    first_frame: str
    photo: torch.Tensor
    notices: list = field(default_factory=list)
    seed: int = 0
    decoded: Optional[DecodedSegments] = None
    memory_plan: Optional[object] = None

    @property
    def latent(self) -> torch.Tensor:
        """The whole video's normalised latent [1, 16, 1 + (T - 1) // 4, h, w]: a single segment's latent, or the
        segments' latents assembled (``segments.assemble_latent``: each latent frame from the segment that owns it).
        ``to_raw_latent`` of it is ComfyUI's convention (a LATENT's ``samples``)."""
        return assemble_latent(self.segments)[None]

    @property
    def passes_skipped(self) -> int:
        return sum(seg.passes_skipped for seg in self.segments)

    @property
    def passes_computed(self) -> int:
        return sum(seg.passes_computed for seg in self.segments)


def decode_frames(model, latent: torch.Tensor, tile, plan=None) -> torch.Tensor:
    """Normalised latent [16, F, h, w] -> frames [T, H, W, 3] in [0, 1] on the CPU (the VAE placed per ``plan``, a
    job's memory plan; None = the model's own)."""
    with model.use("vae", plan):
        video = model.vae.decode(latent[None].to(model.execution_device), tile=tile)[0]
    return cond.from_model_video(video.float()).cpu()


def _checked_frames(decoder: Callable, seg: SegmentLatent, result: GenerationResult) -> torch.Tensor:
    """``decoder(seg.latent)`` as float frames [n, H, W, 3] on the CPU, checked against the segment's size."""
    frames = decoder(seg.latent)
    expected = (seg.num_frames, result.height, result.width, 3)
    if tuple(frames.shape) != expected:
        raise ValueError(f"the VAE decoded a segment to shape {tuple(frames.shape)}, expected {expected} (frames, "
                         f"height, width, RGB); use a Wan 2.1 VAE (wan_2.1_vae.safetensors)")
    return frames.float().cpu()


@torch.inference_mode()
def iter_decoded(model, result: GenerationResult, tiling: str = VAE_TILING.default("tiling"),
                 tile_size: int = VAE_TILING.default("tile_size"), should_cancel: Optional[Callable[[], bool]] = None,
                 decoder: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 on_segment: Optional[Callable[[int, bool], None]] = None) -> Iterator[tuple]:
    """Yield (start, frames [n, H, W, 3] in [0, 1]) chunks covering the video in order, segment by segment, with the
    colour correction and cross-fades of ``generate`` applied and frame 0 = the photo in ``exact`` mode.

    Segments ``generate`` already decoded (``result.decoded``) are read back, not decoded again; ``tiling`` /
    ``tile_size`` (the options of ``options.VAE_TILING``) apply to the others. decoder: frames [T, H, W, 3] in [0, 1] from one segment's normalised latent [16, F, h, w] (for
    example another program's Wan 2.1 VAE applied to ``to_raw_latent`` of it); when given, every segment is decoded
    with it (the segments kept from sampling were decoded by the model's VAE); None = the model's VAE.
    on_segment(index, decoded) after each segment (decoded False: it was read back)."""
    tile = vae_tile(tiling, tile_size)
    chunks: list = []
    assembler = Assembler(lambda start, frames: chunks.append((start, frames)))
    segs = result.segments
    for s, seg in enumerate(segs):
        if should_cancel is not None and should_cancel():
            raise Cancelled(f"decoding cancelled before segment {s + 1}/{len(segs)}")
        frames = result.decoded.get(s) if result.decoded is not None and decoder is None else None
        decoded = frames is None
        if decoded:
            raw = decode_frames(model, seg.latent, tile) if decoder is None else _checked_frames(decoder, seg, result)
            frames = apply_color(raw, seg.color_gain, seg.color_offset)
        if s == 0 and result.first_frame == "exact":
            frames[0] = result.photo
        next_overlap = segs[s + 1].known_frames if s + 1 < len(segs) else 0
        assembler.push(seg.start, frames, seg.known_frames if s > 0 else 0, next_overlap)
        if on_segment is not None:
            on_segment(s, decoded)
        while chunks:
            yield chunks.pop(0)


def decode(model, result: GenerationResult, tiling: str = VAE_TILING.default("tiling"),
           tile_size: int = VAE_TILING.default("tile_size"), callback: Optional[Callable] = None,
           should_cancel: Optional[Callable[[], bool]] = None,
           decoder: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """The whole video [T, H, W, 3] in [0, 1] (CPU). For long videos prefer ``iter_decoded`` (constant memory);
    ``tiling``, ``tile_size`` and ``decoder`` as there."""
    out = torch.empty(result.num_frames, result.height, result.width, 3)
    done = 0
    for i, (start, frames) in enumerate(iter_decoded(model, result, tiling, tile_size, should_cancel, decoder)):
        out[start:start + frames.shape[0]] = frames
        done += frames.shape[0]
        if callback is not None:
            callback(i + 1, len(result.segments))
    if done != result.num_frames:
        raise RuntimeError(f"decoded {done} frames, expected {result.num_frames}")
    return out
