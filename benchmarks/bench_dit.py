"""SteadyDancer DiT forward benchmark.

CPU (always): mid-size random-weight model (dim 512, 4 heads, 4 layers, ffn 1024), latent 5x16x16, 60 text tokens
(padded to text_len 512), real CLIP / text / condition widths; fp32 forward time. With ``--official PATH`` (a
checkout of the official SteadyDancer repository) the official ``wan/modules/model_dancer.py`` forward is timed on
the same weights and inputs (loaded at run time, attention replaced by exact SDPA and its CUDA-only bf16 cast
neutralised, as in the reference fixtures) and the ratio ours / official is reported.

GPU (only when CUDA exists): the full 40-layer dim-5120 model with random bf16 weights at 832x480x81 frames
(latent 21x60x104): seconds per forward, peak memory and achieved TFLOP/s.

With ``--breakdown`` each CPU forward is also profiled once: the time spent in matrix products (linears, convolutions,
attention kernels) is reported apart from everything else (norms, rotary, elementwise, copies, Python), which shows
how close each implementation is to its arithmetic floor.

Writes benchmarks/results/dit_cpu.json (and dit_gpu.json on a GPU).
    python benchmarks/bench_dit.py [--official /path/to/SteadyDancer] [--repeats 5] [--threads N] [--breakdown]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steadydancer_core import DiTConfig, SteadyDancerDiT  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MID_CONFIG = dict(dim=512, ffn_dim=1024, num_heads=4, num_layers=4)
MID_LATENT = (5, 16, 16)
MID_TEXT_TOKENS = 60
GPU_LATENT = (21, 60, 104)      # 832x480, 81 frames
GPU_TEXT_TOKENS = 120


# --- inputs and weights ---------------------------------------------------------------------------------------

def make_inputs(config: DiTConfig, latent, text_tokens, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    f, h, w = latent

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device=device, dtype=dtype)

    return dict(x=randn(1, config.out_dim, f, h, w), t=torch.tensor([713], device=device),
                context=randn(1, text_tokens, config.text_dim), y=randn(1, config.y_channels, f, h, w),
                condition=randn(1, config.condition_channels, f, h, w), ref_x=randn(1, config.in_dim, 1, h, w),
                ref_c=randn(1, config.in_dim, 1, h, w), clip_fea_x=randn(1, config.clip_tokens, config.clip_dim),
                clip_fea_c=randn(1, config.clip_tokens, config.clip_dim))


@torch.no_grad()
def randomise(model: torch.nn.Module, seed=0):
    """Non-trivial random weights (norm gains around 1, small biases, scaled linears)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1 and "norm" in name or name.endswith(("norm1.weight", "norm2.weight")):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith("bias"):
            p.copy_(0.02 * torch.randn(p.shape, generator=g))
        else:
            fan_in = max(p[0].numel(), 1) if p.dim() > 1 else p.shape[-1]
            p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def timed(fns: dict, repeats, sync=lambda: None):
    """Interleaved timing of several callables (fair under background load): {name: (wall[], cpu[])}.

    cpu = process CPU time (all threads), less sensitive to other processes than wall time.
    """
    for fn in fns.values():  # warm-up
        fn()
    sync()
    times = {name: ([], []) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return times


# --- the official implementation, loaded from a checkout at run time (never vendored) ------------------------

def _install_diffusers_stub():
    """model_dancer.py imports diffusers only for ModelMixin / ConfigMixin; stub them when diffusers is absent."""
    if importlib.util.find_spec("diffusers") is not None:
        return
    root, cfg, models, modeling = (types.ModuleType(n) for n in (
        "diffusers", "diffusers.configuration_utils", "diffusers.models", "diffusers.models.modeling_utils"))
    cfg.ConfigMixin = type("ConfigMixin", (), {})
    cfg.register_to_config = lambda fn: fn
    modeling.ModelMixin = torch.nn.Module
    sys.modules.update({"diffusers": root, "diffusers.configuration_utils": cfg, "diffusers.models": models,
                        "diffusers.models.modeling_utils": modeling})


def _exact_attention(q, k, v, k_lens=None, **_):
    """Stand-in for the official CUDA flash_attention: exact SDPA in v's dtype ([B, L, H, D] layout)."""
    q, k = q.to(v.dtype), k.to(v.dtype)
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def load_official_model_class(checkout: Path):
    modules_dir = checkout / "wan" / "modules"
    if not (modules_dir / "model_dancer.py").is_file():
        raise SystemExit(f"--official: {modules_dir / 'model_dancer.py'} not found; pass the repository root of "
                         "a MCG-NJU/SteadyDancer checkout")
    _install_diffusers_stub()
    package = types.ModuleType("official_wan_modules")
    package.__path__ = [str(modules_dir)]
    sys.modules["official_wan_modules"] = package
    source = (modules_dir / "model_dancer.py").read_text()
    # the official self-attention casts to bf16 for flash-attn on CUDA; neutralised for an fp32 CPU comparison
    source = source.replace("x = x.to(torch.bfloat16)", "pass")
    module = types.ModuleType("official_wan_modules.model_dancer")
    module.__package__ = "official_wan_modules"
    module.__file__ = str(modules_dir / "model_dancer.py")
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    module.flash_attention = _exact_attention
    return module.WanModel


def official_forward(model, inputs):
    def run():
        seq_len = None  # the official forward recomputes it
        return model([inputs["x"][0]], inputs["t"], [inputs["context"][0]], seq_len,
                     condition=inputs["condition"][0], ref_x=inputs["ref_x"][0], ref_c=inputs["ref_c"][0],
                     clip_fea_x=inputs["clip_fea_x"], clip_fea_c=inputs["clip_fea_c"], y=[inputs["y"][0]])[0]
    return run


# --- CPU benchmark --------------------------------------------------------------------------------------------

# profiler op names counted as matrix products (the arithmetic a faithful forward cannot avoid)
MATMUL_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise",
              "aten::_scaled_dot_product_flash_attention_for_cpu", "aten::mkldnn_convolution",
              "aten::slow_conv3d_forward", "aten::_convolution")


def breakdown(fn, repeats=3) -> dict:
    """Profile ``fn``: seconds per call in matrix products vs the rest (self CPU time over all threads / wall)."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        wall = (time.perf_counter() - start) / repeats
    matmul = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in MATMUL_OPS) / 1e6 / repeats
    return dict(profiled_seconds=wall, matmul_seconds=matmul, other_seconds=wall - matmul)


def bench_cpu(args):
    config = DiTConfig(**MID_CONFIG)
    model = SteadyDancerDiT(config).eval()
    randomise(model)
    inputs = make_inputs(config, MID_LATENT, MID_TEXT_TOKENS)
    fns = {"ours": lambda: model(**inputs)}
    if args.official:
        official_cls = load_official_model_class(Path(args.official))
        official = official_cls(model_type="i2v", in_dim=config.in_dim, dim=config.dim, ffn_dim=config.ffn_dim,
                                freq_dim=config.freq_dim, text_dim=config.text_dim, out_dim=config.out_dim,
                                num_heads=config.num_heads, num_layers=config.num_layers,
                                text_len=config.text_len, eps=config.eps).eval()
        official.load_state_dict(model.state_dict(), strict=True)
        fns["official"] = official_forward(official, inputs)
    with torch.inference_mode():
        outputs = {name: fn() for name, fn in fns.items()}
        times = timed(fns, args.repeats)
    result = dict(
        config=MID_CONFIG, latent=list(MID_LATENT), text_tokens=MID_TEXT_TOKENS, text_len=config.text_len,
        dtype="float32", threads=torch.get_num_threads(), torch=torch.__version__,
        machine=platform.processor() or platform.machine(), repeats=args.repeats)
    for name, (wall, cpu) in times.items():
        result[name] = dict(seconds=statistics.median(wall), min_seconds=min(wall), cpu_seconds=statistics.median(cpu),
                            all_seconds=wall, all_cpu_seconds=cpu)
        print(f"{name}: {statistics.median(wall):.4f} s wall (median of {args.repeats}, min {min(wall):.4f}), "
              f"{statistics.median(cpu):.4f} s CPU, {result['threads']} threads")
    if args.breakdown:
        with torch.inference_mode():
            for name, fn in fns.items():
                result[name]["breakdown"] = split = breakdown(fn)
                print(f"{name} (profiled): {split['profiled_seconds']:.4f} s = matrix products "
                      f"{split['matmul_seconds']:.4f} s + other {split['other_seconds']:.4f} s")
    if args.official:
        ours, official = result["ours"], result["official"]
        diff = outputs["official"].double() - outputs["ours"][0].double()
        result.update(ratio_wall_median=ours["seconds"] / official["seconds"],
                      ratio_wall_min=ours["min_seconds"] / official["min_seconds"],
                      ratio_cpu=ours["cpu_seconds"] / official["cpu_seconds"],
                      max_abs_diff_vs_official=diff.abs().max().item(),
                      rel_l2_vs_official=(diff.norm() / outputs["official"].double().norm()).item())
        print(f"ours / official: wall median {result['ratio_wall_median']:.3f}, wall min {result['ratio_wall_min']:.3f}"
              f", CPU time {result['ratio_cpu']:.3f}; max|diff| {result['max_abs_diff_vs_official']:.2e}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dit_cpu.json").write_text(json.dumps(result, indent=1))
    return result


# --- GPU benchmark ----------------------------------------------------------------------------------------------

def forward_flops(config: DiTConfig, latent) -> float:
    """Nominal matmul FLOPs of one forward as the official model computes it (all F+2 frames in every block,
    all text_len keys attended); the small pose modules are ignored. TFLOP/s derived from it are "achieved"
    model FLOPs (the skipped work of the last block and the padding-key dedup count as done)."""
    f, h, w = latent
    pt, ph, pw = config.patch_size
    d, L = config.dim, (f // pt + 2) * (h // ph) * (w // pw)
    lt = config.text_len                             # text rows (the official model embeds the padding)
    lk = config.clip_tokens + config.text_len          # keys attended (padding counted by multiplicity)
    per_block = (2 * L * d * d * 4                     # self-attention q, k, v, o
                 + 2 * 2 * L * L * d                   # QK^T and AV
                 + 2 * L * d * d * 2                   # cross-attention q, o
                 + 2 * (config.clip_tokens + lt) * d * d * 2   # cross k, v (image, text)
                 + 2 * 2 * L * lk * d                  # cross attention
                 + 2 * L * d * config.ffn_dim * 2)     # ffn
    embed = 2 * lt * (config.text_dim * d + d * d) + 2 * 2 * config.clip_tokens * (
        config.clip_dim ** 2 + config.clip_dim * d)
    return config.num_layers * per_block + embed


def bench_full(device, config: DiTConfig, latent, text_tokens, repeats, dtype=torch.bfloat16, attention="sdpa"):
    """Random-weight forward at full size on ``device``: seconds, peak memory, TFLOP/s."""
    with torch.device("meta"):
        model = SteadyDancerDiT(config, attention_backend=attention).to(dtype)
    model = model.to_empty(device=device).eval()      # allocated once, directly in ``dtype``
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
            elif p.dim() == 1 or "norm" in name:
                p.normal_(1, 0.1)
            else:
                p.normal_(0, 1 / max(p[0].numel(), 1) ** 0.5 if p.dim() > 1 else 1)
    inputs = make_inputs(config, latent, text_tokens, device=device, dtype=dtype)
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 30
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        times = timed({"ours": lambda: model(**inputs)}, repeats, sync)["ours"][0]
    seconds = statistics.median(times)
    flops = forward_flops(config, latent)
    return dict(latent=list(latent), text_tokens=text_tokens, dtype=str(dtype), attention=attention,
                layers=config.num_layers, dim=config.dim, seconds=seconds, all_seconds=times,
                weights_gib=weights_gib,
                peak_memory_gib=torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
                nominal_tflop=flops / 1e12, tflops_per_s=flops / seconds / 1e12,
                device=torch.cuda.get_device_name() if cuda else str(device))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", help="path of an official SteadyDancer checkout to time against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--breakdown", action="store_true",
                        help="profile the CPU forwards: time in matrix products vs the rest")
    parser.add_argument("--gpu-repeats", type=int, default=2)
    parser.add_argument("--attention", default="sdpa", help="attention backend for the GPU run")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_cpu:
        bench_cpu(args)
    if torch.cuda.is_available():
        result = bench_full("cuda", DiTConfig(), GPU_LATENT, GPU_TEXT_TOKENS, args.gpu_repeats,
                            attention=args.attention)
        print(f"GPU full size: {result['seconds']:.2f} s/forward, peak {result['peak_memory_gib']:.1f} GiB, "
              f"{result['tflops_per_s']:.0f} TFLOP/s")
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "dit_gpu.json").write_text(json.dumps(result, indent=1))
    else:
        print("no CUDA device: full-size GPU benchmark skipped")


if __name__ == "__main__":
    main()
