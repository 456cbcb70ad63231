"""GPU proof part ``env``: what the other parts ran on. The device (name, compute capability, memory, the CUDA
context torch's allocator does not see), the driver (``nvidia-smi``), Python / torch / CUDA / cuDNN versions, the
SDPA kernels torch enables, and every package the project or the proof may import, with its version or
"missing" (missing ones are what the other parts report as skipped).

    python3 benchmarks/gpu/env.py
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys

import torch
from common import repo_relative, run_part

# import name -> distribution name
PACKAGES = {"torch": "torch", "numpy": "numpy", "safetensors": "safetensors", "einops": "einops", "onnx": "onnx",
            "onnxruntime": "onnxruntime", "cv2": "opencv-python-headless", "PIL": "pillow", "triton": "triton",
            "pytest": "pytest", "sentencepiece": "sentencepiece", "transformers": "transformers", "tqdm": "tqdm",
            "av": "av", "gguf": "gguf", "ftfy": "ftfy", "flash_attn": "flash-attn", "sageattention": "sageattention"}
GPU_ORT = "onnxruntime-gpu"


def version(module: str, dist: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    for name in (dist, GPU_ORT) if module == "onnxruntime" else (dist,):
        try:
            return f"{name} {importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "present (no version found)"


def nvidia_smi() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    proc = subprocess.run([exe, "--query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm",
                           "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    return (proc.stdout or proc.stderr).strip()


def body(args, device):
    packages = {m: version(m, d) for m, d in PACKAGES.items()}
    found = {"python_executable": repo_relative(sys.executable), "nvidia_smi": nvidia_smi(),
             "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             "sdpa_enabled": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                              "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                              "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
                              "math": torch.backends.cuda.math_sdp_enabled()},
             "packages": packages, "missing": sorted(m for m, v in packages.items() if v is None),
             "PYTHONPATH": [repo_relative(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]}
    env = found.get("nvidia_smi") or str(device)
    found["summary"] = f"{env}; torch {torch.__version__} CUDA {torch.version.cuda}; missing: " + (
        ", ".join(found["missing"]) or "none")
    if device.type != "cuda" and not args.tiny:
        found["status"] = (f"failed: no CUDA device (torch.cuda.is_available() is False; torch {torch.__version__}, "
                           f"CUDA build {torch.version.cuda})")
    return found


if __name__ == "__main__":
    raise SystemExit(run_part("env", __doc__, body, needs_cuda=False))
