"""Cost of the NaN / Inf check made on every tensor at load time (``loading/finite.py``), on the CPU.

  * tiny kit: the whole ``load_model`` of the kit's fp16 DiT (with its LoRA), VAE, umT5 and CLIP, and the check
    run again over every tensor the loaded model holds;
  * one tensor the size of the 14B DiT's largest (an FFN weight, 13824 x 5120): read from a safetensors file as
    fp16 and cast to bf16 (what loading does) versus checked, as bf16 and as fp8 e4m3fn; the 14B estimate scales
    the per-element rates to its 14.3e9 parameters.

Writes benchmarks/results/finite_check.json.

    python benchmarks/bench_finite_check.py
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BIG_SHAPE = (13824, 5120)             # the 14B DiT's FFN weights
PARAMS_14B = 14.3e9
REPEATS = 3


def _best(fn, repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def tiny_kit_load(tmp: Path) -> dict:
    """The kit's whole load_model, and the check run again over every tensor the loaded model holds."""
    import steadydancer_core as sd
    from steadydancer_core import tiny_kit

    kit = tiny_kit.write_kit(tmp / "models")
    m = kit.models_dir
    started = time.perf_counter()
    model = sd.load_model(m / "diffusion_models" / tiny_kit.DIT_FP16, m / "vae" / tiny_kit.VAE_FILE,
                          m / "text_encoders" / tiny_kit.T5_FP16, m / "clip_vision" / tiny_kit.CLIP_FILE,
                          loras=[(m / "loras" / tiny_kit.DISTILL_LORA, 1.0)])
    total = time.perf_counter() - started
    tensors = [t for net in (model.dit, model.vae, model.text_encoder.model, model.image_encoder.model)
               for t in list(net.parameters()) + list(net.buffers())]
    check = _best(lambda: [sd.nonfinite(t) for t in tensors])
    return {"load_s": round(total, 3), "check_s": round(check, 4), "tensors": len(tensors),
            "check_share": round(check / total, 4)}


def big_tensor(tmp: Path) -> dict:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from steadydancer_core import nonfinite

    path = tmp / "big.safetensors"
    save_file({"w": torch.randn(BIG_SHAPE).half()}, str(path))
    handle = safe_open(str(path), framework="pt", device="cpu")
    numel = BIG_SHAPE[0] * BIG_SHAPE[1]
    load = _best(lambda: handle.get_tensor("w").to(torch.bfloat16))
    bf16 = handle.get_tensor("w").to(torch.bfloat16)
    fp8 = handle.get_tensor("w").to(torch.float8_e4m3fn)
    check_bf16 = _best(lambda: nonfinite(bf16))
    check_fp8 = _best(lambda: nonfinite(fp8))
    per = {"load_fp16_to_bf16_s": load, "check_bf16_s": check_bf16, "check_fp8_s": check_fp8}
    out = {k: round(v, 4) for k, v in per.items()}
    out.update({"numel": numel, "check_bf16_share_of_load": round(check_bf16 / load, 3),
                "estimate_14b": {"load_bf16_s": round(load * PARAMS_14B / numel, 1),
                                 "check_bf16_s": round(check_bf16 * PARAMS_14B / numel, 1),
                                 "check_fp8_s": round(check_fp8 * PARAMS_14B / numel, 1)}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "finite_check.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="finite-check-") as tmp:
        record = {"tiny_kit": tiny_kit_load(Path(tmp)), "largest_14b_tensor": big_tensor(Path(tmp)),
                  "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                  "cpu": platform.processor() or platform.machine()}
    print(json.dumps(record, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
