"""Jobs that cannot work are refused in one line before they start: a plan that does not fit in host memory when
computing there, and a latent gone NaN (a user error with its fix, not a traceback)."""
import numpy as np
import pytest
import torch

from steadydancer_core import NonFiniteLatentError, cli, generate
from steadydancer_core.runtime.memory_plan import HostMemoryError
from steadydancer_core.runtime.model_plan import plan_for_model
from steadydancer_core.runtime.placement import DevicePolicy
from helpers import build_tiny_model as _build_tiny_model, inputs as _inputs, png_claiming, pose_run
from helpers import settings as _settings

MIB = 1 << 20


@pytest.fixture(scope="module")
def starved_model():
    """The tiny model computing on the CPU with 1 MiB of host memory said to be available."""
    model = _build_tiny_model()
    model.policy = DevicePolicy(execution_device="cpu", free_memory=lambda device: MIB)
    model.load_plan = plan_for_model(model, make_room=False)          # the load-time plan only reports
    return model


def test_a_cpu_job_that_does_not_fit_is_refused_before_it_starts(starved_model):
    assert not starved_model.load_plan.fits
    photo, pos, neg = _inputs(5)
    steps = []
    with pytest.raises(HostMemoryError, match="does not fit in host memory") as info:
        generate(starved_model, photo, pos, neg, _settings(), callback=lambda *a: steps.append(a))
    text = str(info.value)
    assert steps == [] and "\n" not in text and "GiB" in text and "lower max_area" in text
    assert isinstance(info.value, ValueError)


def test_a_device_plan_that_does_not_fit_keeps_todays_behaviour(starved_model):
    plan = plan_for_model(starved_model, width=64, height=64, frames=5, device="cuda", free_vram_bytes=MIB)
    assert not plan.fits and "DOES NOT FIT" in plan.explanation


def test_a_cpu_job_that_fits_runs():
    model = _build_tiny_model()
    model.policy = DevicePolicy(execution_device="cpu", free_memory=lambda device: 8 << 30)
    model.load_plan = plan_for_model(model, make_room=False)
    photo, pos, neg = _inputs(5)
    assert generate(model, photo, pos, neg, _settings(steps=1)).latent is not None


def test_a_nan_latent_is_a_one_line_cli_error(tmp_path, caplog, monkeypatch):
    def nan(*_args, **_kwargs):
        from steadydancer_core.sampling.guidance import check_finite

        check_finite(torch.full((2,), float("nan")), 1, 4)

    monkeypatch.setattr(cli, "load_model", lambda *a, **k: type("M", (), {"fp8_matmul_report": ""})())
    monkeypatch.setattr(cli, "check_model_files", lambda files: None)     # stand-in files hold no tensors
    monkeypatch.setattr(cli, "generate", nan)
    assert issubclass(NonFiniteLatentError, ValueError)
    assert cli.main(pose_run(tmp_path) + ["--out", str(tmp_path / "o.mp4")]) == 2
    assert "became NaN/Inf at sampling step 2/4" in caplog.text and "precision bf16" in caplog.text
    assert not (tmp_path / "o.mp4").exists()


def test_a_photo_over_the_limits_is_a_one_line_cli_error(tmp_path, caplog, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("a model was loaded for a photo that cannot be read")

    monkeypatch.setattr(cli, "load_model", refuse)
    monkeypatch.setattr(cli, "check_model_files", lambda files: None)     # stand-in files hold no tensors
    args = pose_run(tmp_path) + ["--out", str(tmp_path / "o.mp4")]
    args[args.index("--photo") + 1] = str(png_claiming(tmp_path / "huge.png", 60000, 60000))
    assert cli.main(args) == 2 and "megapixels" in caplog.text and "downscale it" in caplog.text
    assert np.all([not p.name.endswith(".mp4") for p in tmp_path.iterdir()])
