"""The GPU proof's parts, in the order they run, with their timeouts and their estimated time on an H100.

Pure Python (no torch): ``benchmarks/gpu_proof.py --dry-run`` prints this plan without starting anything. The
must-have figures come first; ``optional`` parts (step cache, compile) run last and only while the time budget
allows. Estimates are arithmetic, not measurements:

    compute   FLOPs / the effective rate (600 TFLOP/s for bf16 matrix work on an H100)
    transfer  bytes / 50 GB/s (pinned host-to-device copies over PCIe 5)
    start     8 s per part process (Python, torch, the CUDA context, the package)

The FLOP counts: ``DIT_FORWARD_TFLOP`` = ``bench_dit.forward_flops(DiTConfig(), (21, 60, 104))`` (832x480x81, one
guidance pass; ``DIT_ATTENTION_TFLOP`` of it in self-attention, the rest mostly linears); ``DIT_SMALL_TFLOP`` the
same at 480x272x33 (latent 9x34x60); ``VAE_DECODE_TFLOP``: the Wan VAE decode of latent 21x60x104 counted with
``torch.utils.flop_counter.FlopCounterMode`` on the meta device. ``tests/test_gpu_proof.py`` checks the DiT counts
against ``forward_flops``.
"""
from __future__ import annotations

from dataclasses import dataclass

BF16_TFLOPS = 600.0          # effective dense bf16 rate assumed for the estimates (the card's peak is ~790-990)
FP8_LINEAR_SPEEDUP = 1.5     # fp8 _scaled_mm over bf16 for the DiT's linears (assumed)
TF32_CONV_TFLOPS = 100.0     # effective rate of fp32 3-D convolutions with TF32 (the VAE in float32)
H2D_GBS = 50.0               # pinned host-to-device copy rate (PCIe 5 x16)
START_S = 8.0                # one part process: Python, torch, the CUDA context, the package

DIT_FORWARD_TFLOP = 1938.3   # 832x480x81, one pass
DIT_ATTENTION_TFLOP = 1054.6  # of it: self-attention (QK^T and AV of 35880 tokens, 40 layers)
DIT_SMALL_TFLOP = 166.7      # 480x272x33, one pass
VAE_DECODE_TFLOP = 275.4     # 81x832x480 decode
FP8_BLOCK_GB = 0.404         # one fp8 block of the 14B DiT (its bytes streamed per pass when swapped)
SWAP_BLOCKS = 8              # blocks the block-swap part streams at least (benchmarks/gpu/block_swap.py)

DEFAULT_BUDGET_S = 400       # the whole run; parts that no longer fit are reported "skipped: out of the budget"


def _fwd(tflop: float, rate: float = BF16_TFLOPS) -> float:
    return tflop / rate


def _fp8_mm_forward() -> float:
    linears = DIT_FORWARD_TFLOP - DIT_ATTENTION_TFLOP
    return _fwd(DIT_ATTENTION_TFLOP) + _fwd(linears, BF16_TFLOPS * FP8_LINEAR_SPEEDUP)


@dataclass(frozen=True)
class Part:
    """One part: ``benchmarks/gpu/<name>.py``, run in its own process under ``timeout`` seconds."""

    name: str
    what: str
    timeout: int
    estimate: float          # seconds on an H100, start included
    how: str                 # the arithmetic behind ``estimate``
    args: tuple = ()
    optional: bool = False


def _part(name, what, timeout, work: dict, args=(), optional=False) -> Part:
    """``work``: label -> seconds; the estimate is START_S plus their sum."""
    total = START_S + sum(work.values())
    how = " + ".join([f"{START_S:.0f} start"] + [f"{s:.2g} {label}" for label, s in work.items()])
    return Part(name, what, timeout, round(total, 1), how, tuple(args), optional)


PARTS = (
    _part("env", "the device, driver, torch / CUDA versions, CUDA context size, packages present and missing", 60,
          {"nvidia-smi": 1.0}),
    _part("matmul", "dense bf16 matmul rate (8192^3) and its ratio to 790 TFLOP/s; fp8 _scaled_mm rate", 60,
          {"13 products x2 dtypes": 2 * 13 * _fwd(2 * 8192 ** 3 / 1e12)}),
    _part("dit", "full-size random-weight DiT at 832x480x81: bf16, fp8 upcast, fp8 scaled-mm: s/pass, peak "
                 "reserved + context; output difference between the three", 150,
          {"weights": 4.0, "3 bf16 passes": 3 * _fwd(DIT_FORWARD_TFLOP),
           "3 fp8 upcast passes": 3 * _fwd(DIT_FORWARD_TFLOP), "3 fp8 scaled-mm passes": 3 * _fp8_mm_forward()},
          args=("--repeats", "2")),
    _part("block_swap", "14B fp8 DiT forced into block swap under a 24 GB cap: reserved + context <= 22.5 GB, "
                        "s/step swapped vs resident, host-to-device bandwidth", 150,
          {"weights": 4.0, "pinning + 1 GiB copies": 2.0,
           "3 resident passes": 3 * _fwd(DIT_FORWARD_TFLOP),
           "3 swapped passes": 3 * max(_fwd(DIT_FORWARD_TFLOP), SWAP_BLOCKS * FP8_BLOCK_GB / H2D_GBS)},
          args=("--repeats", "1")),
    _part("attention", "attention at the DiT's shapes (35880 tokens, 40 heads x 128): SDPA flash / efficient / "
                       "math, sageattention when carried: ms per call, difference from fp32", 120,
          {"SDPA kernels": 1.0, "sageattention Triton compile": 30.0}),
    _part("vae", "VAE decode 81x832x480 in the loader's default precision, untiled and tiled: s, peak reserved", 120,
          {"untiled + tiled (1.3x) decode": 2.3 * _fwd(VAE_DECODE_TFLOP, TF32_CONV_TFLOPS)}),
    _part("pytest_gpu", "pytest -m gpu tests (as docs/testing.md writes it): passed / failed / skipped with reasons", 180,
          {"collection": 10.0, "inductor compile in test_compile": 30.0, "other tests": 5.0}),
    _part("pose_cuda", "pose models on onnxruntime's CUDA provider (skipped without it)", 60, {"load + 8 frames": 2.0}),
    _part("rank_share", "one rank's work of a multi-GPU job on one GPU: the full-size DiT as 1 of n sequence-parallel "
                        "ranks (n = 1, 2, 4, 8): s/forward, peak, bytes a rank sends per pass", 120,
          {"weights": 4.0, "n = 1, 2, 4, 8 (1.875 forwards)": 1.875 * _fwd(DIT_FORWARD_TFLOP)},
          args=("--repeats", "1"), optional=True),
    _part("step_cache", "generate() with the step cache off / on (full-size DiT, 480x272x33, 20 steps)", 120,
          {"weights": 4.0, "60 passes cache off": 60 * _fwd(DIT_SMALL_TFLOP),
           "~30 passes cache on": 30 * _fwd(DIT_SMALL_TFLOP), "VAE": 3.0}, optional=True),
    _part("compile", "regional torch.compile of the DiT blocks at 832x480x81: compile time, s/pass, difference", 180,
          {"weights": 4.0, "2 eager passes": 2 * _fwd(DIT_FORWARD_TFLOP), "inductor compile": 45.0,
           "2 compiled passes": 2 * _fwd(DIT_FORWARD_TFLOP)}, args=("--repeats", "1"), optional=True),
)
PART_NAMES = tuple(p.name for p in PARTS)


def by_name(name: str) -> Part:
    for part in PARTS:
        if part.name == name:
            return part
    raise KeyError(name)


def select(only: list[str] | None, skip: list[str]) -> list[Part]:
    """The parts to run, in plan order. Raises ValueError naming an unknown part."""
    unknown = [n for n in (only or []) + skip if n not in PART_NAMES]
    if unknown:
        raise ValueError(f"unknown part {', '.join(repr(n) for n in unknown)}; parts: {', '.join(PART_NAMES)}")
    return [p for p in PARTS if (only is None or p.name in only) and p.name not in skip]


def plan_lines(parts: list[Part], budget: float) -> list[str]:
    """The dry run's text: one line per part with its estimate and timeout, and the totals."""
    lines = [f"{'part':<11} {'est. s':>6} {'limit':>6}  what (estimate: arithmetic for an H100)"]
    for p in parts:
        lines.append(f"{p.name:<11} {p.estimate:>6.0f} {p.timeout:>6}  {p.what}{' [optional]' if p.optional else ''}")
        lines.append(f"{'':<27}{p.how}")
    must = sum(p.estimate for p in parts if not p.optional)
    total = sum(p.estimate for p in parts)
    lines.append(f"estimated: {must:.0f} s must-have parts, {total:.0f} s in all ({total / 60:.1f} min); "
                 f"time budget {budget:.0f} s")
    return lines
