"""Host memory one rank keeps for its DiT replica: loaded on the host and placed (a host copy stays as the source
of later uploads), against loaded straight onto the rank's device (``load_dit(..., device=)`` + ``book_on_device``,
what ``load_model(..., parallel=...)`` does).

Writes a random fp16 DiT file (mid-size config), then in a fresh process per path loads it in bf16 and records the
anonymous resident memory (RssAnon) after loading and placing, and the device bytes. On a CUDA machine the device
is the GPU. On a CPU-only machine the device is simulated in host memory (``Offloader.simulated``: device copies
are distinct host tensors), so every path's RssAnon includes its device copy; the host copies are what is left
after taking the device bytes off. Results go to ``benchmarks/results/replica_load.json``.

    python benchmarks/bench_replica_load.py [--dim 1024 --layers 8]
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
import gc, json, sys, torch
sys.path.insert(0, sys.argv[3])
import steadydancer_core as sd

def anon():
    return [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('RssAnon:')][0]

path, how = sys.argv[1], sys.argv[2]
cuda = torch.cuda.is_available()
device = torch.device("cuda") if cuda else torch.device("cpu")
if cuda:
    torch.zeros(1, device=device)              # the CUDA context's own host memory, before the baseline
base = anon()
if how == "host_then_place":
    dit = sd.load_dit(path, dtype=torch.bfloat16)
else:
    dit = sd.load_dit(path, dtype=torch.bfloat16, device=device)
model = sd.SteadyDancerModel(dit=dit, vae=None, text_encoder=None, image_encoder=None, dtype=torch.bfloat16,
                             policy=sd.DevicePolicy(execution_device=device))
if how == "host_then_place":
    offloader = sd.Offloader(device) if cuda else sd.Offloader.simulated()
    offloader.place(dit, "dit")
    model.offloader = offloader
else:
    sd.book_on_device(model)
gc.collect()
model_bytes = sd.module_bytes(dit)
device_bytes = torch.cuda.memory_allocated(device) if cuda else model_bytes
held = anon() - base
print(json.dumps({"device": "cuda" if cuda else "cpu (simulated device)", "model_bytes": model_bytes,
                  "device_bytes": device_bytes, "rss_anon_bytes": held,
                  "host_copy_bytes": held - (0 if cuda else device_bytes)}))
"""


def write_file(folder: Path, dim: int, layers: int) -> Path:
    import torch
    from safetensors.torch import save_file

    from steadydancer_core import DiTConfig, SteadyDancerDiT

    config = DiTConfig(dim=dim, ffn_dim=dim * 27 // 10 // 256 * 256, num_heads=dim // 128, num_layers=layers)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in SteadyDancerDiT(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    path = folder / "dit_fp16.safetensors"
    save_file({"model.diffusion_model." + k: (torch.randn(s, generator=gen) * 0.02).half() for k, s in shapes.items()},
              path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "replica_load.json"))
    args = parser.parse_args()
    results = {"dim": args.dim, "layers": args.layers, "file_dtype": "float16", "dtype": "bfloat16", "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_file(Path(tmp), args.dim, args.layers)
        results["file_bytes"] = path.stat().st_size
        for how in ("host_then_place", "straight_to_device"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), how, str(ROOT)], capture_output=True,
                                 text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["host_copies"] = round(row["host_copy_bytes"] / row["model_bytes"], 2)
            results["paths"][how] = row
            print(how, json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
