"""generate(): photo + positive/negative pose frames + prompt -> video latents, in overlapping segments.

Images are torch float32 [T, H, W, 3] in [0, 1]. One segment is what the official pipeline does for one clip
(any 4n + 1 frames). A longer video is cut into segments of ``segment_frames`` that share ``segment_overlap``
frames: a later segment gets the previous segment's last decoded frames as known first frames (through the I2V
mask in ``y``), while ``ref_x``, ``ref_c``, ``clip_fea_x`` and ``clip_fea_c`` stay those of the original photo and
first pose. The overlap is cross-faded and each later segment's colours are matched (per channel gain/offset
measured on the overlap) to the previous, already matched segment, hence to the first one.

Determinism: the noise of every segment comes from one ``torch.Generator`` seeded with ``settings.seed``: on the CPU
by default (the same video on every machine), on the execution device with ``noise="official"`` (the official
code's noise for the same seed); see ``noise.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..models.vae_config import LATENT_CHANNELS
from . import conditioning as cond
from .pose_source import as_pose_frames, read_pose_video
from .guidance import (
    COND,
    UNCOND_CONDITION,
    UNCOND_TEXT,
    Guidance,
    StepInfo,
    denoise,
)
from .decoded_store import DecodedSegments
from .results import GenerationResult, SegmentLatent, decode, decode_frames, iter_decoded
from .model_interface import JobPlan, SamplingModel
from .settings import GenerationSettings
from .noise import NoiseSource
from .parallel_job import agreed_cancel, decodes_here, parallel_job, parallel_predictor, shared
from .preview import latent_to_rgb
from .progress import JobProgress, Progress, plan_tasks
from .schedulers import make_solver
from .segments import (
    Assembler,
    apply_color,
    color_match,
    plan_segments,
    resolve_length,
)
from .step_cache import calibration_for, make_step_cache


__all__ = ["GenerationSettings", "GenerationResult", "Job", "SegmentLatent", "decode", "finish_segment", "generate",
           "iter_decoded", "prepare_job", "prepare_references", "sample_segment"]


class _Predictor:
    """predict(latent, t, passes, step) -> {pass: velocity}: DiT forwards for the requested guidance passes.

    batch: the passes run as one batched forward (else one forward each). cache: a ``StepCache`` (or None): before
    each step it decides per pass whether to compute or to reuse the pass's cached residual; the passes to compute
    and the passes to reuse run as separate forwards, the DiT's ``block_stack`` hook records or adds the residual.
    computed / skipped count the passes.
    """

    def __init__(self, model, refs: cond.ReferenceConditions, y, condition, condition_null, batch: bool,
                 cache=None):
        self.model, self.refs, self.y, self.batch, self.cache = model, refs, y, batch, cache
        self.device = model.execution_device
        self.contexts = {COND: refs.context, UNCOND_TEXT: refs.context_null, UNCOND_CONDITION: refs.context}
        self.conditions = {COND: condition, UNCOND_TEXT: condition, UNCOND_CONDITION: condition_null}
        self._stacked: dict = {}          # passes -> their conditions stacked [b, 16, F, h, w] (built once)
        self.computed = self.skipped = 0

    def _forward(self, latent, t, passes, block_stack=None):
        b, refs = len(passes), self.refs
        if passes not in self._stacked:
            self._stacked[passes] = torch.stack([self.conditions[p] for p in passes])
        hook = {} if block_stack is None else {"block_stack": block_stack}
        return self.model.dit(
            latent[None].expand(b, *latent.shape),
            torch.tensor([t], dtype=torch.long, device=self.device),     # one timestep for every pass
            [self.contexts[p] for p in passes],
            self.y[None].expand(b, *self.y.shape),
            self._stacked[passes],
            refs.ref_x[None].expand(b, *refs.ref_x.shape),
            refs.ref_c[None].expand(b, *refs.ref_c.shape),
            refs.clip_fea_x.expand(b, *refs.clip_fea_x.shape[1:]),
            refs.clip_fea_c.expand(b, *refs.clip_fea_c.shape[1:]),
            **hook,
        )

    def _record(self, passes):
        def stack(run, tokens, keep):
            out = run(tokens)
            for i, p in enumerate(passes):
                self.cache.store(p, out[i] - tokens[i, :keep])
            return out
        return stack

    def _reuse(self, passes):
        def stack(run, tokens, keep):
            residual = torch.stack([self.cache.residual(p) for p in passes]).to(tokens.device)
            return tokens[:, :keep] + residual
        return stack

    def _run(self, latent, t, passes, hook_for) -> dict:
        if self.batch:
            out = self._forward(latent, t, passes, hook_for(passes) if hook_for else None)
            return {p: out[i] for i, p in enumerate(passes)}
        return {p: self._forward(latent, t, (p,), hook_for((p,)) if hook_for else None)[0] for p in passes}

    @torch.inference_mode()
    def __call__(self, latent, t, passes, step) -> dict:
        latent, passes = latent.to(self.device), tuple(passes)
        if self.cache is None:
            self.computed += len(passes)
            return self._run(latent, t, passes, None)
        reuse = tuple(p for p in passes if self.cache.decide(step, t, p))
        compute = tuple(p for p in passes if p not in reuse)
        self.computed += len(compute)
        self.skipped += len(reuse)
        out = {}
        if compute:
            out.update(self._run(latent, t, compute, self._record))
        if reuse:
            out.update(self._run(latent, t, reuse, self._reuse))
        return {p: out[p] for p in passes}


def _make_step_cache(model, job: "Job", settings: GenerationSettings):
    """A fresh StepCache for one segment's denoising (None when caching is off)."""
    dit, device = model.dit, model.execution_device

    def modulation(t: int) -> torch.Tensor:          # TeaCache's indicator: the blocks' timestep modulation e0
        return dit.time_embeddings(torch.tensor([t], dtype=torch.long, device=device))[1]

    return make_step_cache(settings.step_cache, settings.cache_threshold, settings.cache_keep_first,
                           settings.cache_keep_last, settings.cache_max_skip, job.schedule.steps,
                           job.size[0] * job.size[1], indicator=modulation)


def _reference_conditions(model: SamplingModel, photo, first_pose, settings, size, device,
                          plan: Optional[JobPlan]) -> cond.ReferenceConditions:
    """first_pose [H', W', 3]: the first positive pose frame after the PIL resize of ``settings.pose_resize``
    (``cond.pose_pil_size``: the photo's size or the output size); CLIP sees it there, ``ref_c`` has it at the
    output size, as ``condition`` has every pose frame."""
    with model.use("text_encoder", plan):
        context, context_null = model.text_encoder.encode([settings.prompt, settings.effective_negative_prompt])
    with model.use("image_encoder", plan):
        # each image in [-1, 1] once ([3, 1, H, W], full size), for its CLIP features and its reference latent;
        # one at a time, so a large photo has one such copy in memory
        photo_m = cond.to_model_video(photo[None])
        clip_x = model.image_encoder.encode(photo_m.transpose(0, 1))
        photo_v = cond.resize_bicubic(photo_m, size)
        del photo_m
        pose_m = cond.to_model_video(first_pose[None])
        clip_c = model.image_encoder.encode(pose_m.transpose(0, 1))
        pose_v = cond.resize_bicubic(pose_m, size)
        del pose_m
    with model.use("vae", plan):
        ref_x = cond.build_reference(model.vae, photo_v, 1.0, settings.vae_tile)
        ref_c = cond.build_reference(model.vae, pose_v, 0.0, settings.vae_tile)
    return cond.ReferenceConditions(context=context.to(device), context_null=context_null.to(device),
                                    clip_fea_x=clip_x.to(device), clip_fea_c=clip_c.to(device),
                                    ref_x=ref_x.to(device), ref_c=ref_c.to(device), photo=photo_v)


@dataclass
class Job:
    """A validated generation request, ready to sample: the inputs at their working layout and the plan.

    photo [H, W, 3]; positive / negative: pose frame sources (``pose_source``; frames [n, H', W', 3] float in
    [0, 1] on the CPU, read one segment at a time); size (h, w) of the output;
    segments: (start, frames, known frames) per segment; schedule: the sampler's sigmas and timesteps; plan: the
    job's memory plan (None when the model places nothing itself).
    """

    photo: torch.Tensor
    positive: object
    negative: object
    num_frames: int
    size: tuple
    segments: list
    schedule: object
    guidance: Guidance
    batch_passes: bool
    photo_out: torch.Tensor
    notices: list
    plan: Optional[JobPlan] = None


def prepare_job(model: SamplingModel, photo, positive_pose, negative_pose, settings: GenerationSettings) -> Job:
    """Validate the inputs against the settings, plan the segments and the schedule, and the job's memory for its
    real size. Nothing is encoded yet."""
    photo = cond.as_frames(photo, "photo")
    if photo.shape[0] != 1:
        raise ValueError(f"one photo expected, got a batch of {photo.shape[0]} images")
    photo = photo[0]
    pos = as_pose_frames(positive_pose, "positive_pose")
    neg = as_pose_frames(negative_pose, "negative_pose")
    num_frames, notices = resolve_length(settings.length, len(pos))
    if len(neg) < num_frames:
        raise ValueError(f"negative_pose has {len(neg)} frames but {num_frames} are generated; connect the "
                         f"negative output of the same AlignPose")
    size = cond.target_size(photo.shape[0], photo.shape[1], settings.max_area)
    segments = plan_segments(num_frames, settings.segment_frames, settings.segment_overlap)
    schedule = settings.schedule
    guidance = settings.guidance
    plan = model.plan_job(width=size[1], height=size[0], frames=segments[0][1],
                          guidance_passes=max(len(guidance.passes(i, schedule.steps)) for i in range(schedule.steps)))
    batch = bool(plan is not None and plan.batch_passes) if settings.batch_passes is None else settings.batch_passes
    return Job(photo=photo, positive=pos, negative=neg, num_frames=num_frames, size=size, segments=segments,
               schedule=schedule, guidance=guidance, batch_passes=batch, photo_out=cond.photo_at(photo, size),
               notices=notices, plan=plan)


def prepare_references(model, job: Job, settings: GenerationSettings) -> cond.ReferenceConditions:
    """What stays the same for every segment and step: text contexts, CLIP features of the photo and the first
    pose, and the reference latents ``ref_x`` / ``ref_c`` (all on the execution device)."""
    def encode() -> cond.ReferenceConditions:
        pil_hw = cond.pose_pil_size(tuple(job.photo.shape[:2]), job.size, settings.pose_resize)
        first_pose = cond.resize_like_pil(job.positive.frames(0, 1), pil_hw)[0]
        return _reference_conditions(model, job.photo, first_pose, settings, job.size, model.execution_device,
                                     job.plan)
    return shared(model, encode, cond.ReferenceConditions)     # parallel: encoded on rank 0, broadcast


def sample_segment(model, job: Job, refs: cond.ReferenceConditions, settings: GenerationSettings, index: int,
                   known: Optional[torch.Tensor], noise_source: NoiseSource, on_step: Optional[Callable] = None,
                   should_cancel: Optional[Callable[[], bool]] = None,
                   on_encoded: Optional[Callable[[], None]] = None) -> SegmentLatent:
    """Sample segment ``index`` of ``job.segments``.

    known: the frames given to it [k, H, W, 3] (None = the photo, for the first segment). The noise
    [16, F, h, w] is the next draw of ``noise_source``. on_encoded() is called once its VAE encodes are done,
    before the first step. Returns its latent on the CPU (float32), with the DiT passes computed / skipped.
    """
    start, n, known_count = job.segments[index]
    device = model.execution_device
    condition, condition_null, y = shared(model, lambda: _encode_segment(model, job, refs, settings, index, known))
    if on_encoded is not None:
        on_encoded()
    noise = noise_source.draw((LATENT_CHANNELS, cond.latent_frames(n), *y.shape[-2:]))
    pin = None
    if settings.first_frame in ("latent", "exact"):
        clean = cond.known_frame_latents(y)
        k = clean.shape[1]
        pin = lambda x: torch.cat([clean.to(x), x[:, k:]], dim=1)  # noqa: E731
    predict = parallel_predictor(model, job, _Predictor(model, refs, y, condition, condition_null, job.batch_passes,
                                                        cache=_make_step_cache(model, job, settings)))
    with model.use("dit", job.plan):
        latent = denoise(noise.to(device), job.schedule, make_solver(settings.solver, job.schedule), predict,
                         job.guidance, pin=pin, on_step=on_step, should_cancel=agreed_cancel(model, should_cancel))
    return SegmentLatent(start=start, num_frames=n, known_frames=known_count, latent=latent.float().cpu(),
                         passes_computed=predict.computed, passes_skipped=predict.skipped)


def _encode_segment(model, job: Job, refs: cond.ReferenceConditions, settings: GenerationSettings, index: int,
                    known: Optional[torch.Tensor]) -> tuple:
    """The VAE latents of segment ``index`` on the execution device: (condition, condition_null, y)."""
    start, n, _ = job.segments[index]
    device = model.execution_device
    pil_hw = cond.pose_pil_size(tuple(job.photo.shape[:2]), job.size, settings.pose_resize)
    with model.use("vae", job.plan):
        # only this segment's pose frames are read (a lazy source renders them now), one frame at a time, and
        # only their output-size pixels are kept
        condition = cond.encode_video(model.vae, read_pose_video(job.positive, start, start + n, pil_hw, job.size),
                                      settings.vae_tile).to(device)
        condition_null = cond.encode_video(model.vae, read_pose_video(job.negative, start, start + n, pil_hw,
                                                                      job.size), settings.vae_tile).to(device)
        known_v = refs.photo if known is None else cond.to_model_video(known)
        y = cond.build_y(model.vae, known_v, n, settings.vae_tile).to(device)
    return condition, condition_null, y


def finish_segment(model, job: Job, seg: SegmentLatent, index: int, tail: Optional[torch.Tensor],
                   settings: GenerationSettings) -> torch.Tensor:
    """Decode a sampled segment to frames [n, H, W, 3]: frame 0 = the photo in ``exact`` mode (first segment);
    later segments are colour-matched on their known frames to ``tail`` (the previous segment's last frames),
    and the correction is recorded on ``seg``."""
    frames = decode_frames(model, seg.latent, settings.vae_tile, job.plan)
    if index == 0 and settings.first_frame == "exact":
        frames[0] = job.photo_out
    if index > 0:
        seg.color_gain, seg.color_offset, seg.color_drift = color_match(frames[:seg.known_frames], tail,
                                                                        settings.color_correction)
        if settings.color_correction > 0:
            frames = apply_color(frames, seg.color_gain, seg.color_offset)
        else:
            seg.color_gain = seg.color_offset = None
    return frames


def _seam_notice(segments: list, settings: GenerationSettings) -> Optional[str]:
    drifts = [seg.color_drift for seg in segments if seg.color_drift is not None]
    if not drifts:
        return None
    worst = max(float(d.abs().max()) for d in drifts)
    return (f"{len(segments)} segments of up to {settings.segment_frames} frames (overlap "
            f"{settings.segment_overlap}); largest colour drift at a seam {worst:.3f}"
            + (" (corrected)" if settings.color_correction > 0 else " (not corrected)"))


def _cache_notice(segments: list, settings: GenerationSettings, area: int) -> Optional[str]:
    if settings.step_cache == "off":
        return None
    skipped = sum(seg.passes_skipped for seg in segments)
    total = skipped + sum(seg.passes_computed for seg in segments)
    return (f"step cache {settings.step_cache} (threshold {settings.cache_threshold:g}, Wan 2.1 I2V "
            f"{calibration_for(area)} calibration): {skipped} of {total} DiT passes skipped")


@parallel_job
@torch.inference_mode()
def generate(model, photo, positive_pose, negative_pose, settings: GenerationSettings,
             callback: Optional[Callable] = None, should_cancel: Optional[Callable[[], bool]] = None,
             on_frames: Optional[Callable[[int, torch.Tensor], None]] = None,
             progress: Optional[Callable[[Progress], None]] = None, spill_dir=None) -> GenerationResult:
    """Sample the video latents: ``prepare_job`` -> ``prepare_references`` -> per segment ``sample_segment`` and
    ``finish_segment`` (the decode that gives the next segment its known frames).

    photo [H, W, 3] (or [1, H, W, 3]) float in [0, 1]; positive_pose / negative_pose: frames [T, H', W', 3] float
    in [0, 1], or pose frame sources (``len()`` and ``frames(start, stop)``, see ``pose_source``) read one segment
    at a time, so a long video's pose frames need not all be in memory.
    callback(step, total, preview) after every sampling step (step counts finished steps over all segments;
    preview [h, w, 3] in [0, 1] when ``settings.preview``, else None). progress(Progress) after every unit of
    the whole job (reference encodes, each segment's encodes, steps and decodes; ``progress.py``: weighted
    fraction, phase, ETA). should_cancel() polled between steps -> ``Cancelled``. on_frames(start, frames
    [n, H, W, 3]) receives the final decoded frames segment by segment (in order, no overlap) while generating,
    so a caller can write a long video without holding it in memory. spill_dir: a folder where the segments
    decoded while sampling are kept (``DecodedSegments``, in a subfolder removed with the result), so that
    ``iter_decoded`` / ``decode`` read them instead of decoding them a second time; None keeps none.
    With ``model.parallel`` (``runtime/parallel.py``) it is called on every rank with the same arguments: rank 0
    encodes and decodes, every rank returns the same latents (``on_frames`` and ``spill_dir`` act on rank 0 only).
    """
    job = prepare_job(model, photo, positive_pose, negative_pose, settings)
    count = len(job.segments)
    decoded_here = tuple(range(count if on_frames is not None else count - 1)) if decodes_here(model) else ()
    steps = job.schedule.steps
    step_costs = tuple(len(job.guidance.passes(i, steps)) for i in range(steps))
    tracker = JobProgress(plan_tasks(count, step_costs, decoded_here), progress, plan=job.plan)
    tracker.start("references", -1)
    refs = prepare_references(model, job, settings)
    tracker.advance()
    noise_source = NoiseSource(settings.noise, settings.seed, model.execution_device)
    total = steps * count
    assembler = Assembler(on_frames) if on_frames is not None else None
    store = DecodedSegments(spill_dir) if spill_dir is not None and decoded_here else None
    segments: list = []
    tail: Optional[torch.Tensor] = None   # colour-matched last frames of the previous segment (its decode)

    for s in range(count):
        def on_step(info: StepInfo, offset=s * steps):
            preview = None
            if settings.preview and (callback is not None or progress is not None):
                preview = latent_to_rgb(info.latent[:, info.latent.shape[1] // 2:][:, :1])[0].cpu()
            if callback is not None:
                callback(offset + info.step + 1, total, preview)
            tracker.advance(preview)

        def on_encoded(s=s):
            tracker.advance()
            tracker.start("sample", s)

        tracker.start("encode", s)
        seg = sample_segment(model, job, refs, settings, s, tail, noise_source, on_step, should_cancel, on_encoded)
        segments.append(seg)
        if s not in decoded_here:
            continue
        tracker.start("decode", s)
        frames = finish_segment(model, job, seg, s, tail, settings)
        if store is not None:
            store.put(s, frames)
        tracker.advance()
        next_overlap = 0 if s == count - 1 else job.segments[s + 1][2]
        if assembler is not None:
            assembler.push(seg.start, frames, seg.known_frames if s > 0 else 0, next_overlap)
        tail = frames[frames.shape[0] - next_overlap:] if next_overlap else None
    notices = list(job.notices)
    for note in (_seam_notice(segments, settings), _cache_notice(segments, settings, job.size[0] * job.size[1])):
        if note is not None:
            notices.append(note)
    return GenerationResult(segments=segments, num_frames=job.num_frames, height=job.size[0], width=job.size[1],
                            first_frame=settings.first_frame, photo=job.photo_out, notices=notices,
                            seed=settings.seed, decoded=store, memory_plan=job.plan)
