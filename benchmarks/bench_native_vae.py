"""ComfyUI's own Wan 2.1 VAE vs the pack's on the same latent: what a native VAE Decode of the sampler's LATENT gives
against DecodeVideo for one segment (the sampler's ``samples`` are ``to_raw_latent`` of the latent DecodeVideo
decodes). Needs a ComfyUI checkout (its ``comfy`` package is imported from ``--comfy``; run with ComfyUI's Python)
and a Wan 2.1 VAE file (``wan_2.1_vae.safetensors``, or the tiny kit's). Writes benchmarks/results/native_vae.json.

    python benchmarks/bench_native_vae.py --comfy ComfyUI --vae ComfyUI/models/vae/wan_2.1_vae.safetensors
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import steadydancer_core as sd  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", required=True, help="ComfyUI folder (holds the comfy package)")
    parser.add_argument("--vae", required=True, help="Wan 2.1 VAE file")
    parser.add_argument("--frames", type=int, default=13, help="video frames (4n+1)")
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "native_vae.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(args.comfy).resolve()))
    from comfy.cli_args import args as comfy_args

    comfy_args.cpu = comfy_args.cpu or not torch.cuda.is_available()     # as ComfyUI's --cpu without a GPU
    import comfy.sd
    import comfy.utils

    native = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae))
    pack = sd.load_vae(args.vae).eval()
    shape = (1, 16, 1 + (args.frames - 1) // sd.VAE_TEMPORAL_STRIDE, args.height // sd.VAE_SPATIAL_STRIDE,
             args.width // sd.VAE_SPATIAL_STRIDE)
    latent = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))   # normalised, as the DiT's
    with torch.inference_mode():
        theirs = native.decode(sd.to_raw_latent(latent)).float().cpu()               # [1, T, H, W, 3] in 0..1
        ours = ((pack.decode(latent, tile=False)[0] + 1) / 2).clamp(0, 1).permute(1, 2, 3, 0).cpu()
    theirs = theirs.reshape(ours.shape)
    diff = (theirs - ours).abs()
    result = {"vae": Path(args.vae).name, "comfy_vae_dtype": str(native.vae_dtype), "frames": args.frames,
              "height": args.height, "width": args.width, "max_abs": float(diff.max()),
              "mean_abs": float(diff.mean()), "output_std": float(ours.std())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
