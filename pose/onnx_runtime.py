"""onnxruntime sessions: shared while in use, execution providers, model signature inspection.

Sessions are shared by path: while one is alive (held by a detector or estimator, e.g. in a node's cached output),
asking for the same file again returns it. The cache holds them weakly, so a session is freed, with its host and
device memory, as soon as nothing uses it.

CUDA is used when the installed onnxruntime offers it. When onnxruntime can only run on the CPU
although an NVIDIA GPU is present (the common "onnxruntime instead of onnxruntime-gpu" install),
one warning line says so and how to fix it. A GPU is detected without torch: ``/proc/driver/nvidia``
or ``nvidia-smi`` on PATH.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
_CACHE: "weakref.WeakValueDictionary[tuple, object]" = weakref.WeakValueDictionary()
_LOCK = threading.Lock()
_WARNED = False


class OnnxModelError(ValueError):
    """An ONNX model file is missing, unreadable or has an unexpected signature."""


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "onnxruntime is not installed: pose extraction needs it. Install `onnxruntime-gpu` "
            "(NVIDIA GPU) or `onnxruntime` (CPU only) into ComfyUI's Python, not both.") from exc
    return onnxruntime


def nvidia_gpu_present() -> bool:
    return os.path.isdir("/proc/driver/nvidia") or shutil.which("nvidia-smi") is not None


def choose_providers(available: Sequence[str] | None = None) -> list[str]:
    """GPU providers first (those available), then CPU; warns once if a GPU exists but only CPU is usable."""
    global _WARNED
    if available is None:
        available = _import_ort().get_available_providers()
    chosen = [p for p in GPU_PROVIDERS if p in available] + ["CPUExecutionProvider"]
    if len(chosen) == 1 and not _WARNED and nvidia_gpu_present():
        _WARNED = True
        log.warning("onnxruntime runs pose detection on the CPU although an NVIDIA GPU is present: "
                    "`pip uninstall onnxruntime && pip install onnxruntime-gpu` to use the GPU.")
    return chosen


def get_session(path: str | os.PathLike, providers: Sequence[str] | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path``: the live one for the same path, mtime and providers, else a
    new one (kept while the caller holds it)."""
    p = Path(path)
    if not p.is_file():
        raise OnnxModelError(f"ONNX model not found: {p}. Put the file in ComfyUI's models folder "
                             f"(e.g. models/detection or models/pose) and select it again.")
    providers = list(providers) if providers is not None else choose_providers()
    key = (str(p.resolve()), p.stat().st_mtime_ns, tuple(providers))
    with _LOCK:
        sess = _CACHE.get(key)
        if sess is None:
            ort = _import_ort()
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                sess = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises several private exception types
                raise OnnxModelError(f"could not load ONNX model {p}: {exc}. The file may be truncated or not an "
                                     f"ONNX model: download it again.") from exc
            _warn_if_gpu_dropped(providers, sess.get_providers())
            _CACHE[key] = sess
    return sess


def _warn_if_gpu_dropped(requested: Sequence[str], active: Sequence[str]) -> None:
    """onnxruntime silently falls back to the CPU when a GPU provider cannot start (missing CUDA/cuDNN)."""
    global _WARNED
    dropped = [p for p in requested if p in GPU_PROVIDERS and p not in active]
    if dropped and not _WARNED:
        _WARNED = True
        log.warning("onnxruntime could not start %s and runs pose detection on the CPU: install the CUDA and cuDNN "
                    "versions your onnxruntime-gpu release needs (see onnxruntime's install matrix).", dropped[0])


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


@dataclass(frozen=True)
class Signature:
    """Input name/shape/dtype of a model (None for symbolic dims) and its output names."""

    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: np.dtype
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | None, ...], ...]

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] is None


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def signature(sess, path: str | os.PathLike = "") -> Signature:
    inputs = sess.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise OnnxModelError(f"{path}: expected one image input [N, 3, H, W], got "
                             f"{[(i.name, i.shape) for i in inputs]}. Is this the right model file?")
    i = inputs[0]
    if i.type not in _ORT_TYPES:
        raise OnnxModelError(f"{path}: unsupported input type {i.type}; use the float32 or float16 export.")
    outs = sess.get_outputs()
    return Signature(i.name, _dims(i.shape), np.dtype(_ORT_TYPES[i.type]), tuple(o.name for o in outs),
                     tuple(_dims(o.shape) for o in outs))


def run_batched(sess, sig: Signature, batch: np.ndarray, max_batch: int) -> list[np.ndarray]:
    """Run ``batch`` [N, 3, H, W] in chunks (size 1 when the model's batch dim is fixed); float32 outputs."""
    step = max(1, max_batch) if sig.dynamic_batch else (sig.input_shape[0] or 1)
    results: list[list[np.ndarray]] = []
    for s in range(0, batch.shape[0], step):
        chunk = batch[s:s + step].astype(sig.input_dtype, copy=False)
        n = chunk.shape[0]
        if n < step and not sig.dynamic_batch:  # fixed batch size: pad the last chunk
            chunk = np.concatenate([chunk, np.zeros((step - n,) + chunk.shape[1:], chunk.dtype)], axis=0)
        outs = sess.run(None, {sig.input_name: chunk})
        results.append([np.asarray(o[:n], dtype=np.float32) for o in outs])
    return [np.concatenate([r[k] for r in results], axis=0) for k in range(len(results[0]))]
