"""Which execution providers the pose models ask onnxruntime for, and what the log says, with a stand-in onnxruntime
module (no GPU needed): CUDA only when a GPU is present, the providers a session really got, one plain warning with
the fix, and onnxruntime's own error lines kept out of the log."""
from __future__ import annotations

import logging
import re
import sys
import types

import pytest

from conftest import REPO_ROOT
from pose import onnx_runtime

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class FakeOrt:
    """An onnxruntime stand-in: ``available`` providers; sessions get ``granted`` (None = what they asked for)."""

    def __init__(self, available=(CUDA, CPU), granted=None, cuda_version="12.8"):
        self.available, self.granted = list(available), granted
        self.requests, self.severities = [], []
        self.__name__ = "onnxruntime"
        info = types.SimpleNamespace(cuda_version=cuda_version) if cuda_version else types.SimpleNamespace()
        self.capi = types.SimpleNamespace(build_and_package_info=info)
        fake = self

        class SessionOptions:
            log_severity_level = 2

        class InferenceSession:
            def __init__(self, path, sess_options=None, providers=()):
                fake.requests.append((list(providers), list(fake.severities)))
                self._providers = list(fake.granted if fake.granted is not None else providers)

            def get_providers(self):
                return self._providers

        self.SessionOptions, self.InferenceSession = SessionOptions, InferenceSession

    def get_available_providers(self):
        return self.available

    def set_default_logger_severity(self, level):
        self.severities.append(level)


@pytest.fixture
def host(monkeypatch, tmp_path):
    """Installs a fake onnxruntime and a fake torch (``gpu``: whether it sees CUDA, ``cuda``: its CUDA version)."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"stand-in")
    monkeypatch.setattr(onnx_runtime, "_WARNED", False)
    onnx_runtime.clear_cache()

    def install(ort: FakeOrt, gpu: bool, cuda: str | None = "12.8"):
        torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: gpu),
                                      version=types.SimpleNamespace(cuda=cuda))
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setattr(onnx_runtime, "_import_ort", lambda: ort)
        return ort

    yield install, model
    onnx_runtime.clear_cache()


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_no_gpu_never_asks_for_cuda_and_logs_nothing(host, caplog):
    install, model = host
    ort = install(FakeOrt(available=(CUDA, CPU)), gpu=False)        # onnxruntime-gpu on a machine without a GPU
    with caplog.at_level(logging.WARNING):
        onnx_runtime.get_session(model)
    assert ort.requests == [([CPU], [])], "CUDA is not requested, so onnxruntime prints no CUDA load errors"
    assert _warnings(caplog) == []


def test_host_on_cpu_keeps_onnxruntime_on_the_cpu(host, caplog):
    install, model = host
    ort = install(FakeOrt(), gpu=True)                                # ComfyUI --cpu on a GPU machine
    with caplog.at_level(logging.WARNING):
        onnx_runtime.get_session(model, onnx_runtime.CPU_ONLY)
    assert ort.requests == [([CPU], [])] and _warnings(caplog) == []


def test_gpu_session_that_gets_cuda_is_quiet_and_restores_the_log_level(host, caplog):
    install, model = host
    ort = install(FakeOrt(), gpu=True)
    with caplog.at_level(logging.WARNING):
        session = onnx_runtime.get_session(model)
    assert session.get_providers()[0] == CUDA
    (requested, severities_during), = ort.requests
    assert requested == [CUDA, CPU]
    assert severities_during == [onnx_runtime.ORT_QUIET_SEVERITY], "onnxruntime's own error lines are silenced"
    assert ort.severities == [onnx_runtime.ORT_QUIET_SEVERITY, onnx_runtime.ORT_DEFAULT_SEVERITY]
    assert _warnings(caplog) == []


def test_session_that_falls_back_to_the_cpu_warns_once_with_the_fix(host, caplog):
    install, model = host
    ort = install(FakeOrt(granted=[CPU], cuda_version="13.0"), gpu=True, cuda="12.8")   # a CUDA 13 build, cu128 torch
    with caplog.at_level(logging.WARNING):
        onnx_runtime.get_session(model)
        onnx_runtime.get_session(model, [CUDA, CPU, "AzureExecutionProvider"])           # another session: no repeat
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and len(ort.requests) == 2
    assert "built for CUDA 13 but ComfyUI's torch uses CUDA 12" in warnings[0]
    assert 'pip install "onnxruntime-gpu>=1.19,<1.27"' in warnings[0]
    assert ort.severities[-1] == onnx_runtime.ORT_DEFAULT_SEVERITY


def test_cuda_13_torch_is_told_the_cuda_13_build(host, caplog):
    install, model = host
    install(FakeOrt(granted=[CPU], cuda_version="12.8"), gpu=True, cuda="13.0")
    with caplog.at_level(logging.WARNING):
        onnx_runtime.get_session(model)
    (warning,) = _warnings(caplog)
    assert "built for CUDA 12 but ComfyUI's torch uses CUDA 13" in warning
    assert 'pip install "onnxruntime-gpu>=1.27"' in warning


def test_matching_build_whose_libraries_do_not_load_is_told_to_add_them(host, caplog):
    install, model = host
    install(FakeOrt(granted=[CPU], cuda_version="12.8"), gpu=True, cuda="12.6")
    with caplog.at_level(logging.WARNING):
        onnx_runtime.get_session(model)
    (warning,) = _warnings(caplog)
    assert "CUDA or cuDNN libraries did not load" in warning
    assert 'pip install "onnxruntime-gpu[cuda,cudnn]>=1.19,<1.27"' in warning


def test_cpu_only_onnxruntime_on_a_gpu_machine_warns_once(host, caplog):
    install, model = host
    ort = install(FakeOrt(available=("AzureExecutionProvider", CPU), cuda_version=None), gpu=True)
    with caplog.at_level(logging.WARNING):
        onnx_runtime.get_session(model)
        onnx_runtime.get_session(model)
    (warning,) = _warnings(caplog)
    assert "CPU-only package" in warning and "pip uninstall -y onnxruntime onnxruntime-gpu" in warning
    assert ort.requests[0][0] == [CPU]


def test_failed_model_load_restores_the_log_level(host):
    install, model = host
    ort = install(FakeOrt(), gpu=True)

    def broken(*args, **kwargs):
        raise RuntimeError("INVALID_PROTOBUF")

    ort.InferenceSession = broken
    with pytest.raises(onnx_runtime.OnnxModelError, match="download it again"):
        onnx_runtime.get_session(model)
    assert ort.severities == [onnx_runtime.ORT_QUIET_SEVERITY, onnx_runtime.ORT_DEFAULT_SEVERITY]


def test_no_torch_falls_back_to_the_nvidia_driver(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr(onnx_runtime.os.path, "isdir", lambda path: path == "/proc/driver/nvidia")
    assert onnx_runtime.gpu_present()
    monkeypatch.setattr(onnx_runtime.os.path, "isdir", lambda path: False)
    assert not onnx_runtime.gpu_present()


def test_requirements_pin_the_cuda_12_builds():
    """requirements.txt and pyproject's onnx-gpu extra install onnxruntime-gpu from the CUDA 12 range (the docs'
    install note is generated from ``ORT_GPU_FOR_CUDA``, see scripts/build_docs.py and tests/test_docs.py)."""
    cuda12 = onnx_runtime.ORT_GPU_FOR_CUDA[12]
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    (gpu_line,) = [line for line in lines if line.startswith("onnxruntime-gpu")]
    assert re.match(rf"onnxruntime-gpu{re.escape(cuda12)}\s*;", gpu_line), gpu_line
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^onnx-gpu = \["onnxruntime-gpu{re.escape(cuda12)}"\]', pyproject, re.M)
