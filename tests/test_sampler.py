"""Sampler fidelity against the official schedules, solvers and dual-guidance loop (fixtures), plus unit checks."""
import functools
import json
import math

import pytest
import torch
from conftest import fixture_file
from safetensors.torch import load_file

from steadydancer_core.sampling.guidance import (
    COND,
    UNCOND_CONDITION,
    UNCOND_TEXT,
    Cancelled,
    Guidance,
    pose_window_active,
    denoise,
)
from steadydancer_core.sampling.options import SAMPLER
from steadydancer_core.sampling.schedulers import (
    make_schedule,
    make_solver,
    schedule_from_sigmas,
)

SAMPLER_DIR = "steadydancer_sampler"


# plain cached loaders, not pytest fixtures: a missing file then fails each test (a fixture would make it an error)
@functools.cache
def _sampler_io():
    return load_file(str(fixture_file(SAMPLER_DIR, "sampler_io.safetensors")))


@functools.cache
def _sampler_meta():
    return json.loads(fixture_file(SAMPLER_DIR, "sampler_meta.json").read_text())


def _toy_cond(x, t):
    return 0.3 * x + 0.1 * math.sin(t / 100)


def _toy_uncond_text(x, t):
    return 0.2 * x - 0.05 * math.cos(t / 300)


def _toy_uncond_condition(x, t):
    return 0.4 * x + 0.03


TOYS = {COND: _toy_cond, UNCOND_TEXT: _toy_uncond_text, UNCOND_CONDITION: _toy_uncond_condition}
# the formulas above as the fixture set's sampler_meta.json writes them
TOY_FORMULAS = {"v_cond": "0.3*x + 0.1*sin(t/100)", "v_uncond_context": "0.2*x - 0.05*cos(t/300)",
                "v_uncond_condition": "0.4*x + 0.03"}


def test_the_fixture_set_uses_these_toy_predictions():
    toy = _sampler_meta()["toy"]
    found = {k: toy.get(k) for k in TOY_FORMULAS}
    assert found == TOY_FORMULAS, f"this fixture set's toy predictions differ from the test's: {found}"


def _toy_predict(calls=None):
    def predict(x, t, passes, step):
        if calls is not None:
            calls.append(tuple(passes))
        return {p: TOYS[p](x, float(t)) for p in passes}
    return predict


@pytest.mark.fidelity
def test_sampler_schedules_match_official():
    sampler_io, sampler_meta = _sampler_io(), _sampler_meta()
    for entry in sampler_meta["schedules"]:
        key = entry["key"]
        sched = make_schedule(entry["solver"], entry["steps"], entry["shift"])
        assert torch.equal(sched.timesteps, sampler_io[f"sched.{key}.timesteps"]), key
        assert (sched.sigmas - sampler_io[f"sched.{key}.sigmas"]).abs().max() <= 1e-6, key


@pytest.mark.fidelity
def test_sampler_toy_trajectories_match_official():
    sampler_io, sampler_meta = _sampler_io(), _sampler_meta()
    for entry in sampler_meta["schedules"]:
        key = entry["key"]
        sched = make_schedule(entry["solver"], entry["steps"], entry["shift"])
        solver = make_solver(entry["solver"], sched)
        x = sampler_io["toy.x_init"].clone()
        traj = sampler_io[f"toy.{key}.traj"]
        for i, t in enumerate(sched.timesteps.tolist()):
            x = solver.step(_toy_cond(x, float(t))[None], x[None])[0]
            assert (x - traj[i]).abs().max() <= 1e-5, (key, i)
        assert (x - sampler_io[f"toy.{key}.final"]).abs().max() <= 1e-5, key


@pytest.mark.fidelity
def test_sampler_dual_guidance_records_match_official():
    sampler_io, sampler_meta = _sampler_io(), _sampler_meta()
    for rec in sampler_meta["cfg"]:
        k = rec["index"]
        guidance = Guidance(rec["guide_scale"], rec["condition_guide_scale"], rec["st_cond_cfg"], rec["end_cond_cfg"])
        sched = make_schedule(rec["solver"], rec["steps"], rec["shift"])
        window = [int(guidance.window_active(i, sched.steps)) for i in range(sched.steps)]
        assert window == sampler_io[f"cfg.{k}.window"].tolist() == rec["window"]
        traj = []
        final = denoise(sampler_io["toy.x_init"].clone(), sched, make_solver(rec["solver"], sched), _toy_predict(),
                        guidance, on_step=lambda info: traj.append(info.latent.clone()))
        assert (torch.stack(traj) - sampler_io[f"cfg.{k}.traj"]).abs().max() <= 1e-5, k
        assert (final - sampler_io[f"cfg.{k}.final"]).abs().max() <= 1e-5, k


@pytest.mark.fidelity
def test_sampler_official_loop_matches():
    sampler_io, sampler_meta = _sampler_io(), _sampler_meta()
    loop = sampler_meta["loop"]
    noise = torch.randn(*loop["latent_shape"], generator=torch.Generator("cpu").manual_seed(loop["seed"]))
    assert torch.equal(noise, sampler_io["loop.noise"])
    sched = make_schedule(loop["solver"], loop["steps"], loop["shift"])
    guidance = Guidance(loop["gs"], loop["cgs"], loop["st"], loop["end"])
    calls = []
    final = denoise(noise, sched, make_solver(loop["solver"], sched), _toy_predict(calls), guidance)
    assert sum(len(c) for c in calls) == loop["model_calls"]
    assert [int(UNCOND_CONDITION in c) for c in calls] == loop["window"]
    assert (final - sampler_io["loop.final"]).abs().max() <= 1e-5


def test_sampler_window_is_strict():
    assert not pose_window_active(2, 10, 0.2, 0.5)
    assert pose_window_active(3, 10, 0.2, 0.5)
    assert not pose_window_active(5, 10, 0.2, 0.5)
    assert not pose_window_active(0, 4, 0.0, 1.0)


def test_sampler_neutral_scales_skip_passes():
    g = Guidance(1.0, 0.0, 0.0, 1.0)
    assert g.passes(2, 4) == (COND,)
    g = Guidance(5.0, 1.0, 0.0, 1.0)  # cgs 1 is not neutral in the official formula
    assert g.passes(2, 4) == (COND, UNCOND_TEXT, UNCOND_CONDITION)


def test_sampler_custom_sigmas_and_euler():
    sched = schedule_from_sigmas([1.0, 0.75, 0.5, 0.25, 0.0])
    assert sched.timesteps.tolist() == [1000, 750, 500, 250]
    assert sched.sigmas[-1] == 0
    # Euler on v = x1 - x0 with a straight path lands exactly on x0.
    x0, n = torch.randn(16, 1, 2, 2), torch.randn(16, 1, 2, 2)
    solver = make_solver("euler", sched)
    x = n.clone()
    for _ in range(sched.steps):
        x = solver.step((n - x0)[None], x[None])[0]
    assert torch.allclose(x, x0, atol=1e-6)
    for bad in ([0.5, 0.7], [1.5, 0.2], [], [0.0]):
        with pytest.raises(ValueError):
            schedule_from_sigmas(bad)


def test_sampler_cancel_between_steps():
    sched = make_schedule("unipc", 4, 5.0)
    seen = []
    with pytest.raises(Cancelled):
        denoise(torch.zeros(16, 1, 2, 2), sched, make_solver("unipc", sched), _toy_predict(), Guidance(5.0, 1.0, 0.1, 0.4),
                on_step=lambda info: seen.append(info.step), should_cancel=lambda: len(seen) >= 2)
    assert seen == [0, 1]


class _MarkerText:
    """Stub text encoder: the positive prompt embeds to +1, anything else to -1."""

    def __init__(self, positive):
        self.positive = positive

    def encode(self, prompts):
        return [torch.full((3, 8), 1.0 if p == self.positive else -1.0) for p in prompts]


class _ZeroImage:
    def encode(self, images):
        return torch.zeros(images.shape[0], 257, 8)


class _MeanVAE:
    """Stub VAE: the latent is filled with the video's mean (tells positive from negative pose frames)."""

    def encode(self, video, tile="auto"):
        b, _, t, h, w = video.shape
        return video.mean().expand(b, 16, 1 + (t - 1) // 4, h // 8, w // 8).clone()


class _ToyDiT(torch.nn.Module):
    """Stub DiT returning the fixture's three toy predictions, chosen from the context / condition markers.

    Like the real DiT it takes one timestep per sample or one for the whole batch."""

    def forward(self, x, t, context, y, condition, ref_x, ref_c, clip_fea_x, clip_fea_c):
        out = []
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        for i in range(x.shape[0]):
            ti = float(t[i])
            if float(context[i].mean()) < 0:
                out.append(_toy_uncond_text(x[i], ti))
            elif float(condition[i].mean()) > 0:
                out.append(_toy_uncond_condition(x[i], ti))
            else:
                out.append(_toy_cond(x[i], ti))
        return torch.stack(out)


@pytest.mark.fidelity
@pytest.mark.parametrize("batch", [False, True])
def test_sampler_pipeline_reproduces_official_loop(batch):
    """pipeline.generate (first_frame='model') = the official generate() loop: seed -> noise, size -> latent shape,
    schedule, guidance window, solver."""
    sampler_io, sampler_meta = _sampler_io(), _sampler_meta()
    from steadydancer_core.runtime.bundle import SteadyDancerModel
    from steadydancer_core.sampling.pipeline import GenerationSettings, generate

    loop = sampler_meta["loop"]
    _, frames, lat_h, lat_w = loop["latent_shape"]
    h, w = lat_h * 8, lat_w * 8
    num_frames = (frames - 1) * 4 + 1
    model = SteadyDancerModel(dit=_ToyDiT(), vae=_MeanVAE(), text_encoder=_MarkerText("dance"),
                              image_encoder=_ZeroImage(), dtype=torch.float32)
    settings = GenerationSettings(prompt="dance", seed=loop["seed"], steps=loop["steps"], solver=loop["solver"],
                                  shift=loop["shift"], text_cfg=loop["gs"], pose_cfg=loop["cgs"],
                                  pose_cfg_start=loop["st"], pose_cfg_end=loop["end"], max_area=h * w, first_frame="model",
                                  batch_passes=batch, length=0,
                                  segment_frames=max(SAMPLER.default("segment_frames"), num_frames))  # one clip
    photo = torch.full((h, w, 3), 0.5)
    pos, neg = torch.full((num_frames, h, w, 3), 0.25), torch.full((num_frames, h, w, 3), 0.75)
    result = generate(model, photo, pos, neg, settings)
    assert result.latent.shape[1:] == tuple(loop["latent_shape"])
    assert (result.latent[0] - sampler_io["loop.final"]).abs().max() <= 1e-5


def test_guidance_rejects_inf_and_nan():
    from steadydancer_core.sampling.guidance import Guidance

    for bad in (float("inf"), float("-inf"), float("nan")):
        for field in ("text_cfg", "pose_cfg", "pose_cfg_start", "pose_cfg_end"):
            with pytest.raises(ValueError, match="finite number"):
                Guidance(**{**dict(text_cfg=5.0, pose_cfg=1.0, pose_cfg_start=0.1, pose_cfg_end=0.4), field: bad})


def test_denoise_stops_on_a_non_finite_latent():
    from steadydancer_core.sampling.guidance import Guidance, NonFiniteLatentError, denoise
    from steadydancer_core.sampling.schedulers import make_schedule, make_solver

    schedule = make_schedule("euler", 4, 3.0)
    calls = []

    def predict(latent, t, passes, step):
        calls.append(t)
        value = float("nan") if len(calls) == 2 else 0.1
        return {p: torch.full_like(latent, value) for p in passes}

    with pytest.raises(NonFiniteLatentError, match="step 2/4") as info:
        denoise(torch.zeros(16, 1, 2, 2), schedule, make_solver("euler", schedule), predict,
                Guidance(1.0, 0.0, 0.1, 0.4))
    assert "LoRA" in str(info.value) and len(calls) == 2
