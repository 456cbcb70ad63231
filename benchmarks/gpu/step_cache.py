"""GPU proof part ``step_cache``: ``generate()`` with the step cache off and on, the full-size random-weight DiT
at 480x272, 33 frames, 20 steps, text + pose guidance (a smaller video than 832x480x81 so that both runs fit the
proof's time; the share of skipped DiT passes is what carries over). Reported: seconds per run, the speed-up, the
passes the cache skipped and the relative L2 difference of the final latent.

The text / CLIP encoders are stand-ins that return random features of the right shapes (their cost is not what
is timed); the VAE is the real network with random weights. The step cache is turned on through
``step_cache_settings`` (the ``GenerationSettings`` fields named in STEP_CACHE); when this build has no such
field, the part reports "skipped: option missing".

    python3 benchmarks/gpu/step_cache.py [--steps 20]
"""
from __future__ import annotations

import dataclasses
import time

import torch
from common import TEXT_TOKENS, Skip, run_part, sync

import steadydancer_core as sd

STEP_CACHE = {"step_cache": "magcache"}     # GenerationSettings fields that turn the step cache on
SIZE, FRAMES = (272, 480), 33
TINY_SIZE, TINY_FRAMES = (32, 48), 5


def step_cache_settings() -> dict:
    """The ``GenerationSettings`` keyword arguments that turn the step cache on; Skip when this build lacks them."""
    fields = {f.name for f in dataclasses.fields(sd.GenerationSettings)}
    missing = sorted(set(STEP_CACHE) - fields)
    if missing:
        raise Skip(f"option missing: {', '.join(missing)} (GenerationSettings has no such field)")
    return dict(STEP_CACHE)


class RandomTextEncoder:
    """Stand-in for umT5: ``encode(prompts)`` -> one random [L, text_dim] context per prompt (fixed per position)."""

    def __init__(self, text_dim: int, text_len: int, device, dtype):
        self.text_dim, self.device, self.dtype = text_dim, device, dtype
        self.tokens = min(TEXT_TOKENS, text_len // 2)

    def encode(self, prompts):
        g = torch.Generator().manual_seed(7)
        return [torch.randn(self.tokens + i, self.text_dim, generator=g).to(self.device, self.dtype)
                for i, _ in enumerate(prompts)]


class RandomImageEncoder:
    """Stand-in for CLIP vision: ``encode(images [1, 3, H, W])`` -> random [1, clip_tokens, clip_dim]."""

    def __init__(self, tokens: int, dim: int, device, dtype):
        self.tokens, self.dim, self.device, self.dtype = tokens, dim, device, dtype
        self.calls = 0

    def encode(self, images):
        self.calls += 1
        g = torch.Generator().manual_seed(100 + self.calls)
        return torch.randn(1, self.tokens, self.dim, generator=g).to(self.device, self.dtype)


def build(args, device):
    config = sd.DiTConfig.tiny() if args.tiny else sd.DiTConfig()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    dit = sd.random_dit(config, device, dtype)
    with torch.device(device):
        vae = sd.WanVAE(sd.VAEConfig.tiny() if args.tiny else sd.VAEConfig())
    vae = vae.float().eval().requires_grad_(False)        # float32, as load_vae loads it by default
    text = RandomTextEncoder(config.text_dim, config.text_len, device, dtype)
    image = RandomImageEncoder(config.clip_tokens, config.clip_dim, device, dtype)
    return sd.SteadyDancerModel(dit=dit, vae=vae, text_encoder=text, image_encoder=image, dtype=dtype, device=device)


def run(model, device, settings, size, frames) -> tuple[float, object]:
    g = torch.Generator().manual_seed(3)
    photo = torch.rand(*size, 3, generator=g)
    positive = torch.rand(frames, *size, 3, generator=g)
    negative = torch.rand(frames, *size, 3, generator=g)
    sync(device)
    start = time.perf_counter()
    result = sd.generate(model, photo, positive, negative, settings)
    sync(device)
    return time.perf_counter() - start, result


def add_args(p):
    p.add_argument("--steps", type=int, default=20)


def body(args, device):
    size, frames = (TINY_SIZE, TINY_FRAMES) if args.tiny else (SIZE, FRAMES)
    model = build(args, device)
    common = dict(steps=args.steps if not args.tiny else 6, max_area=size[0] * size[1], length=frames,
                  text_cfg=5.0, pose_cfg=1.0, tiling="off", seed=1)
    off_seconds, off = run(model, device, sd.GenerationSettings(**common), size, frames)
    result = {"size": [size[1], size[0]], "frames": frames, "steps": common["steps"], "off_seconds": off_seconds}
    try:
        options = step_cache_settings()
    except Skip as why:
        result.update(status=f"skipped: {why}", summary=f"cache off: {off_seconds:.1f} s")
        return result
    on_seconds, on = run(model, device, sd.GenerationSettings(**common, **options), size, frames)
    a, b = off.latent.double(), on.latent.double()
    result.update(options=options, on_seconds=on_seconds, speedup=off_seconds / on_seconds,
                  passes_skipped=getattr(on, "passes_skipped", None),
                  passes_computed=getattr(on, "passes_computed", None),
                  latent_rel_l2=float((a - b).norm() / a.norm().clamp(min=1e-30)))
    skipped = "" if result["passes_skipped"] is None else (
        f", {result['passes_skipped']} of {result['passes_skipped'] + result['passes_computed']} passes skipped")
    result["summary"] = (f"{options}: {on_seconds:.1f} s vs {off_seconds:.1f} s off = {result['speedup']:.2f}x"
                         f"{skipped}, latent rel. L2 {result['latent_rel_l2']:.3g}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("step_cache", __doc__, body, add_args))
