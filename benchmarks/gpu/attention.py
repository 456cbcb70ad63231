"""GPU proof part ``attention``: the attention backends at the 14B DiT's real shapes at 832x480x81, in the layout
the DiT calls them ([B, L, heads, head_dim], bf16, no mask):

  self    35880 query tokens x 35880 keys, 40 heads x 128 (54 % of the forward's FLOPs)
  cross   35880 query tokens x 512 text keys

Backends: SDPA restricted to one kernel each (``torch.nn.attention.sdpa_kernel``: flash, efficient, cudnn, and
SDPA's own choice), SDPA's math kernel (it materialises the L x L scores, 103 GB for all heads at once: it runs on
``--math-heads`` heads and its time is scaled to all of them, which the result says), ``sageattention.sageattn``
(the pure-Triton 1.0.x wheel, when carried) and ``flash_attn`` (when installed). An absent package is reported
"skipped: <why>"; a kernel that fails on the GPU is "failed". Reported per backend: ms per call (median of
``--repeats`` after a warm-up, whose time includes any compilation), TFLOP/s, and the difference from an fp32
reference on the first ``REF_ROWS`` query rows of head 0.

    python3 benchmarks/gpu/attention.py [--repeats 3] [--math-heads 1]
"""
from __future__ import annotations

import importlib
import importlib.util

import torch
import torch.nn.functional as F
from common import Skip, run_part, timed

import steadydancer_core as sd

FULL_LATENT = (21, 60, 104)
TEXT_KEYS = 512
TINY = dict(tokens=96, heads=2, head_dim=16, text_keys=8)
REF_ROWS = 1024
SDPA_KERNELS = ("flash", "efficient", "cudnn", "default")
# a failure of these on a GPU fails the part; the others (cuDNN's kernel depends on the cuDNN build) only say why
REQUIRED = ("sdpa_flash", "sdpa_efficient", "sdpa_default", "sdpa_math", "sageattention")


def shapes(tiny: bool) -> dict:
    if tiny:
        return dict(TINY)
    config = sd.DiTConfig()
    w, h, f = 8 * FULL_LATENT[2], 8 * FULL_LATENT[1], 1 + 4 * (FULL_LATENT[0] - 1)
    tokens = sd.dit_tokens(config, w, h, f)
    return dict(tokens=tokens, heads=config.num_heads, head_dim=config.dim // config.num_heads, text_keys=TEXT_KEYS)


def sdpa(kernel: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}

    def run(q, k, v):
        def call():
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        if kernel == "default":
            return call().transpose(1, 2)
        with sdpa_kernel(backends[kernel]):
            return call().transpose(1, 2)
    return run


HOW_TO_GET = {"sageattention": "carry its pure-Triton wheel: benchmarks/gpu_carry.py, see docs/gpu_proof.md",
              "flash_attn": "a compiled package, not carried"}


def package(module: str, call: str):
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} is not installed here ({HOW_TO_GET[module]})")
    mod = importlib.import_module(module)
    if module == "sageattention":
        return lambda q, k, v: mod.sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
    return lambda q, k, v: getattr(mod, call)(q, k, v)


def backends(device) -> dict:
    """name -> (function factory, heads it runs on: None = all)."""
    found = {f"sdpa_{k}": (lambda k=k: sdpa(k), None) for k in SDPA_KERNELS}
    found["sdpa_math"] = (lambda: sdpa("math"), "math")
    found["sageattention"] = (lambda: package("sageattention", "sageattn"), None)
    found["flash_attn"] = (lambda: package("flash_attn", "flash_attn_func"), None)
    return found


def reference(q, k, v, rows: int) -> torch.Tensor:
    """fp32 softmax attention of head 0's first ``rows`` queries: [rows, head_dim]."""
    qf, kf, vf = q[0, :rows, 0].float(), k[0, :, 0].float(), v[0, :, 0].float()
    weights = torch.softmax(qf @ kf.T / qf.shape[-1] ** 0.5, dim=-1)
    return weights @ vf


def one_shape(name, q, k, v, device, args) -> dict:
    heads = q.shape[2]
    flops = 4.0 * q.shape[1] * k.shape[1] * heads * q.shape[3]
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = reference(q, k, v, min(REF_ROWS, q.shape[1]))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    found = {}
    for backend, (make, which) in backends(device).items():
        try:
            fn = make()
            n = min(args.math_heads, heads) if which == "math" else heads
            qs, ks, vs = (t[:, :, :n] for t in (q, k, v)) if n < heads else (q, k, v)
            out = {}
            t = timed(lambda: out.__setitem__("o", fn(qs, ks, vs)), device, args.repeats)
            got = out["o"][0, :ref.shape[0], 0].float()
            scale = heads / n
            entry = dict(t, ms=1e3 * t["seconds"] * scale, heads_run=n, scaled_to_all_heads=n < heads,
                         tflops=flops / (t["seconds"] * scale) / 1e12,
                         rel_l2_vs_fp32=float((got - ref).norm() / ref.norm().clamp(min=1e-30)))
            found[backend] = entry
            del out
        except Skip as why:
            found[backend] = {"status": f"skipped: {why}"}
        except Exception as err:   # one backend failing does not lose the others
            state = "failed" if device.type == "cuda" and backend in REQUIRED else "unavailable"
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            found[backend] = {"status": f"{state}: {type(err).__name__}: {first}"}
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return found


def add_args(p):
    p.add_argument("--math-heads", type=int, default=1, help="heads the math kernel runs on (scaled to all)")


def body(args, device):
    dims = shapes(args.tiny)
    dtype = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)

    def randn(length):
        return torch.randn(1, length, dims["heads"], dims["head_dim"], device=device, dtype=dtype, generator=g)

    q, k, v = randn(dims["tokens"]), randn(dims["tokens"]), randn(dims["tokens"])
    result = {"shapes": dims, "dtype": str(dtype), "reference_rows": min(REF_ROWS, dims["tokens"])}
    result["self"] = one_shape("self", q, k, v, device, args)
    del k, v
    kt, vt = randn(dims["text_keys"]), randn(dims["text_keys"])
    result["cross"] = one_shape("cross", q, kt, vt, device, args)
    parts = []
    for backend, r in result["self"].items():
        if "ms" in r:
            extra = " (scaled from 1 head)" if r["scaled_to_all_heads"] else ""
            parts.append(f"{backend} {r['ms']:.0f} ms{extra}, {r['tflops']:.0f} TFLOP/s, rel. L2 "
                         f"{r['rel_l2_vs_fp32']:.2g}")
        else:
            parts.append(f"{backend} {r['status']}")
    result["summary"] = "self-attention: " + "; ".join(parts)
    failed = sorted({b for s in ("self", "cross") for b, r in result[s].items()
                     if r.get("status", "").startswith("failed")})
    if failed:
        result["status"] = f"failed: {', '.join(failed)}"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("attention", __doc__, body, add_args))
