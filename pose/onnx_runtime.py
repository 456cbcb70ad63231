"""onnxruntime sessions: shared while in use, execution providers, model signature inspection.

Sessions are shared by path: while one is alive (held by a detector or estimator, e.g. in a node's cached output),
asking for the same file again returns it. The cache holds them weakly, so a session is freed, with its host and
device memory, as soon as nothing uses it.

Providers: the CUDA provider (or another GPU provider) is asked for only when a GPU is there - torch sees a CUDA
device, or, without torch, the NVIDIA driver is loaded - so a machine without a GPU never sees onnxruntime's own
"failed to load the CUDA provider" error lines. The host can force the CPU (ComfyUI's ``--cpu``) by passing
``providers=CPU_ONLY``. What a created session really uses is read back from ``session.get_providers()``
(onnxruntime falls back to the CPU silently, e.g. when an ``onnxruntime-gpu`` built for CUDA 13 meets a CUDA 12
torch); when the GPU is not used although it is there, one warning says so in plain words, with the fix.

``onnxruntime-gpu`` on PyPI: 1.19.0 .. 1.26.x are built for CUDA 12 (cuDNN 9), 1.27.0 and later for CUDA 13;
``ORT_GPU_FOR_CUDA`` holds the matching version ranges (the requirements pin the CUDA 12 range).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
NEEDS_GPU = ("CUDAExecutionProvider", "ROCMExecutionProvider")   # asked for only when gpu_present()
CPU_PROVIDER = "CPUExecutionProvider"
CPU_ONLY = (CPU_PROVIDER,)
# onnxruntime-gpu releases on PyPI by the CUDA major version they are built for (checked on the wheels' CUDA
# libraries: 1.26.0 links libcudart.so.12, 1.27.0 libcudart.so.13).
ORT_GPU_FOR_CUDA = {12: ">=1.19,<1.27", 13: ">=1.27"}
# onnxruntime's logger severities: 0 verbose, 1 info, 2 warning (its default), 3 error, 4 fatal.
ORT_DEFAULT_SEVERITY = 2
ORT_QUIET_SEVERITY = 4
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


def _torch():
    """torch when the process has already imported it (ComfyUI and the CLI do), else None; never imports it."""
    return sys.modules.get("torch")


def gpu_present() -> bool:
    """Whether there is a CUDA (or ROCm) GPU for onnxruntime: torch (when imported) sees one; without torch, the
    NVIDIA driver is loaded."""
    torch = _torch()
    if torch is not None:
        return bool(torch.cuda.is_available())
    return os.path.isdir("/proc/driver/nvidia")


def torch_cuda_major() -> int | None:
    """The CUDA major version torch was built with (12 for cu126 / cu128), None for a CPU or ROCm build."""
    torch = _torch()
    version = getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None
    return _major(version)


def ort_cuda_major(ort=None) -> int | None:
    """The CUDA major version the installed onnxruntime-gpu was built for (None when it does not say)."""
    ort = ort or _import_ort()
    info = getattr(getattr(ort, "capi", None), "build_and_package_info", None)
    if info is None:
        try:
            info = importlib.import_module(ort.__name__ + ".capi.build_and_package_info")
        except ImportError:
            return None
    return _major(getattr(info, "cuda_version", None))


def _major(version) -> int | None:
    try:
        return int(str(version).split(".")[0]) if version else None
    except ValueError:
        return None


def gpu_install_hint(cuda_major: int | None = None, libraries: bool = False) -> str:
    """The pip command that installs the onnxruntime-gpu build matching torch's CUDA (CUDA 12 when unknown);
    ``libraries``: with NVIDIA's CUDA and cuDNN libraries as pip packages (the build's ``cuda,cudnn`` extras)."""
    cuda_major = cuda_major if cuda_major in ORT_GPU_FOR_CUDA else 12
    extras = "[cuda,cudnn]" if libraries else ""
    what = f"the CUDA {cuda_major} build" + (" with its CUDA and cuDNN libraries" if libraries else "")
    return ("pip uninstall -y onnxruntime onnxruntime-gpu && "
            f'pip install "onnxruntime-gpu{extras}{ORT_GPU_FOR_CUDA[cuda_major]}"'
            f" ({what}; run it with ComfyUI's Python, then restart)")


def choose_providers(available: Sequence[str] | None = None) -> list[str]:
    """The GPU providers onnxruntime offers, then CPU. CUDA / ROCm only when a GPU is present (else onnxruntime
    prints errors while it fails to load them); CoreML / DirectML whenever offered.

    Warns once when a GPU is present but the installed onnxruntime offers no GPU provider."""
    if available is None:
        available = _import_ort().get_available_providers()
    gpu = gpu_present()
    chosen = [p for p in GPU_PROVIDERS if p in available and (gpu or p not in NEEDS_GPU)] + [CPU_PROVIDER]
    if gpu and not any(p in NEEDS_GPU for p in chosen):
        _warn_once("pose detection runs on the CPU although this machine has a GPU: the installed onnxruntime is "
                   "the CPU-only package (or both onnxruntime and onnxruntime-gpu are installed, which hides the "
                   f"GPU). Fix: {gpu_install_hint(torch_cuda_major())}.")
    return chosen


def get_session(path: str | os.PathLike, providers: Sequence[str] | None = None):
    """An ``onnxruntime.InferenceSession`` for ``path``: the live one for the same path, mtime and providers, else a
    new one (kept while the caller holds it).

    providers: None = ``choose_providers()``; ``CPU_ONLY`` keeps onnxruntime on the CPU (the host runs on the CPU).
    """
    p = Path(path)
    if not p.is_file():
        raise OnnxModelError(f"ONNX model not found: {p}. Put the file in ComfyUI's models/dwpose folder "
                             f"and select it again.")
    providers = list(providers) if providers is not None else choose_providers()
    key = (str(p.resolve()), p.stat().st_mtime_ns, tuple(providers))
    with _LOCK:
        sess = _CACHE.get(key)
        if sess is None:
            ort = _import_ort()
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            asks_gpu = any(name in GPU_PROVIDERS for name in providers)
            if asks_gpu:   # a GPU provider that cannot start is reported below in plain words instead
                ort.set_default_logger_severity(ORT_QUIET_SEVERITY)
            try:
                sess = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
            except Exception as exc:  # onnxruntime raises several private exception types
                raise OnnxModelError(f"could not load ONNX model {p}: {exc}. The file may be truncated or not an "
                                     f"ONNX model: download it again.") from exc
            finally:
                if asks_gpu:
                    ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
            _warn_if_gpu_dropped(providers, sess.get_providers(), ort)
            _CACHE[key] = sess
    return sess


def _warn_if_gpu_dropped(requested: Sequence[str], active: Sequence[str], ort=None) -> None:
    """onnxruntime silently falls back to the CPU when a GPU provider cannot start (a CUDA / cuDNN mismatch)."""
    dropped = [p for p in requested if p in GPU_PROVIDERS and p not in active]
    if not dropped:
        return
    built_for, torch_major = (ort_cuda_major(ort) if ort is not None else None), torch_cuda_major()
    mismatch = bool(built_for and torch_major and built_for != torch_major)
    if mismatch:
        why = (f"the installed onnxruntime-gpu is built for CUDA {built_for} but ComfyUI's torch uses CUDA "
               f"{torch_major}")
    else:
        why = "its CUDA or cuDNN libraries did not load"
    _warn_once(f"onnxruntime could not start {dropped[0]} and runs pose detection on the CPU ({why}). "
               f"Fix: {gpu_install_hint(torch_major or built_for, libraries=not mismatch)}.")


def _warn_once(message: str) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        log.warning(message)


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
