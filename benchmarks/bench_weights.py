"""Peak memory and time of ``load_dit`` per file format (random weights, mid-size config).

Writes a random SteadyDancer DiT in each format to a temporary folder, then loads each in a fresh process and
records wall time, peak resident memory (VmHWM) and peak anonymous memory (RssAnon, sampled), against the size of
the file and of the loaded model. Streaming works when the anonymous peak stays close to the model size (not file +
model). Results go to ``benchmarks/results/weights_load.json``.

    python benchmarks/bench_weights.py [--dim 1536 --layers 8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, sys, threading, time, torch
sys.path.insert(0, sys.argv[3])
from steadydancer_core import load_dit

def anon():
    for line in open('/proc/self/status'):
        if line.startswith('RssAnon:'):
            return int(line.split()[1]) * 1024
    return 0

peak = [anon()]
base = peak[0]
done = False
def sample():
    while not done:
        peak[0] = max(peak[0], anon())
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
model = load_dit(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
seconds = time.perf_counter() - t0
done = True
peak[0] = max(peak[0], anon())
hwm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]
size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
print(json.dumps({"seconds": seconds, "model_bytes": size, "peak_anon_bytes": peak[0] - base,
                  "peak_rss_bytes": hwm}))
"""


def write_files(folder: Path, dim: int, layers: int) -> dict[str, Path]:
    import torch
    from safetensors.torch import save_file

    from steadydancer_core import DiTConfig, SteadyDancerDiT, save_gguf, to_comfy_quant, to_fp8

    config = DiTConfig(dim=dim, ffn_dim=dim * 27 // 10 // 256 * 256, num_heads=dim // 128, num_layers=layers)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in SteadyDancerDiT(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(s, generator=gen) * 0.02).half() for k, s in shapes.items()}
    files = {"fp16_safetensors": folder / "dit_fp16.safetensors", "fp8_scaled": folder / "dit_fp8.safetensors",
             "gguf_q8_0": folder / "dit_q8_0.gguf", "comfy_fp8_e4m3fn": folder / "dit_comfy_fp8.safetensors",
             "comfy_nvfp4": folder / "dit_comfy_nvfp4.safetensors"}
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, files["fp16_safetensors"])
    blocks = [k for k in sd if k.startswith("blocks.") and k.endswith(".weight") and sd[k].dim() == 2]
    save_file(to_fp8(sd, names=blocks), files["fp8_scaled"])
    save_gguf(files["gguf_q8_0"], sd, "Q8_0")
    for fmt, name in (("float8_e4m3fn", "comfy_fp8_e4m3fn"), ("nvfp4", "comfy_nvfp4")):
        tensors, metadata = to_comfy_quant(sd, fmt, names=blocks)
        save_file({"model.diffusion_model." + k: v.contiguous() for k, v in tensors.items()}, files[name])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "weights_load.json"))
    args = parser.parse_args()
    results = {"dim": args.dim, "layers": args.layers, "dtype": args.dtype, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp), args.dim, args.layers)
        for name, path in files.items():
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), args.dtype, str(ROOT)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["file_bytes"] = path.stat().st_size
            row["peak_anon_over_model"] = round(row["peak_anon_bytes"] / row["model_bytes"], 3)
            results["formats"][name] = row
            print(name, json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
