"""Step cache (TeaCache / MagCache style): DiT passes skipped and the output's difference at each threshold.

Two cases, both through the whole ``generate`` pipeline (conditioning, dual guidance, UniPC, decode) on the CPU in
float32, 40 steps (the step count of the published Wan 2.1 calibrations), text CFG 5, pose CFG 1 in the official
window 0.1..0.4, shift 3, 17 frames:

* ``tiny_pipeline``: the tiny random-weight model kit (``steadydancer_core.tiny_kit``), 64x64 pixels;
* ``mid_dit``: the kit's encoders and VAE with the mid-size DiT of ``bench_dit.py`` (dim 512, 4 heads, 4 layers,
  ffn 1024, random weights from ``bench_dit.randomise``) at 128x128 pixels (latent 5x16x16).

For every (mode, threshold): DiT passes skipped of all passes, relative L2 difference (``|a - b| / |b|``) of the
final latents and of the decoded video against the uncached run, and the wall and process CPU time of
``generate`` (CPU time is the steadier figure on a shared machine; both include the VAE encodes, which the cache
does not touch). Threshold 0 must give exactly the uncached output.

Random weights are not the real model: their output changes differently from step to step than SteadyDancer's,
and their timestep embedding moves about 40 % per step where the trained one moves a few percent, so TeaCache's
fitted polynomial (made for the trained embedding) rates every step as a large change and skips only at
thresholds far above the published ones (shown with 1e4 and 1e5 to exercise the path). Whether a threshold keeps
the video's quality can only be judged on videos made with the real weights.

Writes benchmarks/results/cache.json.
    python benchmarks/bench_cache.py [--steps 40] [--cases tiny_pipeline mid_dit]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import steadydancer_core as sd  # noqa: E402
from bench_dit import MID_CONFIG, randomise  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
THRESHOLDS = {"magcache": (0.0, 0.06, 0.12, 0.24), "teacache": (0.0, 0.2, 1e4, 1e5)}
CASES = {"tiny_pipeline": 64, "mid_dit": 128}        # case -> frame side in pixels
FRAMES = 17


def load_case(case: str, kit_models: Path):
    from steadydancer_core import tiny_kit

    m = kit_models
    model = sd.load_model(sd.ModelFiles(m / "diffusion_models" / tiny_kit.DIT_FP16, m / "vae" / tiny_kit.VAE_FILE,
                                        m / "text_encoders" / tiny_kit.T5_FP16, m / "clip_vision" / tiny_kit.CLIP_FILE),
                          sd.LoaderSettings(precision="fp32", offload="all_resident"))
    if case == "mid_dit":
        config = dataclasses.replace(model.dit.config, **MID_CONFIG)
        dit = sd.SteadyDancerDiT(config).eval().requires_grad_(False)
        randomise(dit)
        model.dit = dit
    return model


def inputs(side: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(side, side, 3, generator=g)
    positive = torch.rand(FRAMES, side, side, 3, generator=g)
    negative = torch.rand(FRAMES, side, side, 3, generator=g)
    return photo, positive, negative


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def run_case(case: str, kit_models: Path, steps: int) -> dict:
    model = load_case(case, kit_models)
    side = CASES[case]
    photo, positive, negative = inputs(side)
    base_settings = dict(prompt="a person dancing", steps=steps, text_cfg=5.0, pose_cfg=1.0, shift=3.0, seed=1,
                         max_area=side * side, tiling="off")

    def sample(**cache):
        settings = sd.GenerationSettings(**base_settings, **cache)
        started, cpu = time.perf_counter(), time.process_time()
        result = sd.generate(model, photo, positive, negative, settings)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        latent = torch.cat([s.latent for s in result.segments], dim=1)
        return result, latent, sd.decode(model, result, tiling="off"), (seconds, cpu)

    plain, plain_latent, plain_video, (plain_s, plain_cpu) = sample()
    rows = []
    for mode, thresholds in THRESHOLDS.items():
        for threshold in thresholds:
            result, latent, video, (seconds, cpu) = sample(step_cache=mode, cache_threshold=threshold)
            total = result.passes_computed + result.passes_skipped
            rows.append(dict(mode=mode, threshold=threshold, passes_skipped=result.passes_skipped, passes=total,
                             skipped_fraction=result.passes_skipped / total, latent_rel_l2=rel_l2(latent, plain_latent),
                             video_rel_l2=rel_l2(video, plain_video), identical=bool(torch.equal(latent, plain_latent)),
                             seconds=seconds, cpu_seconds=cpu, cpu_speedup=plain_cpu / cpu))
            print(f"{case:14s} {mode:9s} {threshold:8g}: skipped {result.passes_skipped:3d}/{total} passes, "
                  f"latent rel L2 {rows[-1]['latent_rel_l2']:.2e}, video rel L2 {rows[-1]['video_rel_l2']:.2e}, "
                  f"{seconds:.1f} s wall, {cpu:.1f} s CPU ({plain_cpu / cpu:.2f}x)", flush=True)
    cfg = model.dit.config
    return dict(dit=dict(dim=cfg.dim, ffn_dim=cfg.ffn_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers),
                pixels=[FRAMES, side, side], uncached_seconds=plain_s, uncached_cpu_seconds=plain_cpu,
                uncached_passes=plain.passes_computed,
                runs=rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cases", nargs="+", choices=tuple(CASES), default=list(CASES))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    from steadydancer_core import tiny_kit

    out = dict(steps=args.steps, solver="unipc", text_cfg=5.0, pose_cfg=1.0, pose_cfg_start=0.1, pose_cfg_end=0.4,
               defaults=dict(keep_first=sd.SAMPLER.default("cache_keep_first"), keep_last=sd.SAMPLER.default("cache_keep_last"),
                             max_skip=sd.SAMPLER.default("cache_max_skip")),
               torch=torch.__version__, machine=platform.machine(), threads=torch.get_num_threads(),
               note="random weights: quality at a threshold can only be judged with the real weights", cases={})
    with tempfile.TemporaryDirectory(prefix="steadydancer-bench-cache-") as tmp:
        kit = tiny_kit.write_kit(Path(tmp) / "models")
        for case in args.cases:
            out["cases"][case] = run_case(case, kit.models_dir, args.steps)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "cache.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
