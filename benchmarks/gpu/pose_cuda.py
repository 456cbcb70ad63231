"""GPU proof part ``pose_cuda``: do the pose models (YOLOX + DWPose, tiny random ONNX files from the tiny kit) load
on onnxruntime's CUDA execution provider, and how fast do a few 832x480 frames go through? An onnxruntime without
the CUDA provider (the CPU build) is reported "skipped: ..." with the fix, before anything is loaded. When the
provider is offered but does not start (CUDA / cuDNN mismatch), onnxruntime falls back to the CPU silently: the
part fails then, naming what onnxruntime offers.

    python3 benchmarks/gpu/pose_cuda.py
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO, Skip, run_part

CUDA = "CUDAExecutionProvider"
FRAMES = 8


def sessions(model) -> dict:
    """name -> active providers of every onnxruntime session held by the pose model's parts."""
    found = {}
    for name, part in vars(model).items():
        session = getattr(part, "session", None)
        if session is not None and hasattr(session, "get_providers"):
            found[name] = list(session.get_providers())
    return found


def body(args, device):
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise Skip(f"onnxruntime is not installed ({err}); pip install onnxruntime-gpu") from err
    available = list(ort.get_available_providers())
    if CUDA not in available:
        raise Skip(f"onnxruntime {ort.__version__} has no {CUDA} (the CPU build; offers {', '.join(available)}): "
                   f"pip install onnxruntime-gpu in place of onnxruntime")
    import pose
    from steadydancer_core import tiny_kit

    result = {"onnxruntime": ort.__version__, "available_providers": available}
    with tempfile.TemporaryDirectory() as tmp:
        kit = subprocess.run([sys.executable, "-m", "steadydancer_core.tiny_kit", tmp], cwd=REPO,
                             capture_output=True, text=True)
        if kit.returncode:
            raise Skip(f"the tiny kit could not be written: {kit.stderr.strip().splitlines()[-1:]}")
        det, est = (Path(tmp) / tiny_kit.kit_path(key) for key in ("detector", "pose_model"))
        providers = [CUDA, "CPUExecutionProvider"]
        start = time.perf_counter()
        model = pose.load_models(det, est, providers=providers)
        result["load_seconds"] = time.perf_counter() - start
        result["active_providers"] = sessions(model)
        frames = [np.random.default_rng(i).integers(0, 255, (480, 832, 3), dtype=np.uint8) for i in range(FRAMES)]
        pose.extract(frames[:1], det, est, providers=providers)                 # warm-up
        start = time.perf_counter()
        poses = pose.extract(frames, det, est, providers=providers)
        result["frames_per_second"] = FRAMES / (time.perf_counter() - start)
        result["frames"] = len(poses)
    on_cuda = bool(result["active_providers"]) and all(p[0] == CUDA for p in result["active_providers"].values())
    result["cuda_provider_active"] = on_cuda
    result["summary"] = (f"CUDA provider {'active' if on_cuda else 'NOT active'} (onnxruntime {ort.__version__}, "
                         f"available: {', '.join(available)}); {result['frames_per_second']:.1f} frames/s at 832x480")
    if not on_cuda:
        result["status"] = "failed: the CUDA provider is offered but did not start (CUDA / cuDNN versions)"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("pose_cuda", __doc__, body))
