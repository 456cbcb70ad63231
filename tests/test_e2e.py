"""End-to-end fidelity: the whole pipeline against the official ``WanI2VDancer.generate()`` (steadydancer_e2e fixtures).

The fixture's ``ckpt/`` folder (official file names and layouts, tiny random weights) is loaded through the project's
normal loaders; the project's ``generate()`` then runs on the fixture's photo and full-size pose frames (read as the
official script reads them: PIL, RGB) with the fixture's frame count, area, prompt, seed and sampler settings, once per
recorded run, with ``pose_resize="official"`` (the pose frames go through the photo's size, as generate_dancer.py
resizes them; the default ``direct`` is not the official computation). What the pipeline hands its DiT is recorded
with forward hooks and compared with what the official code handed its DiT; the final latent and the decoded video
are compared with the official ones. Every number (sizes, frame count, seed, settings, runs) comes from the fixture's
own files, so the test holds on any set with this layout.
"""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from conftest import fixture_file

from helpers import pose_latent
from steadydancer_core.runtime.bundle import load_model
from steadydancer_core.runtime.options import LoaderSettings, ModelFiles
from steadydancer_core.sampling import conditioning as cond
from steadydancer_core.sampling.defaults import WAN_I2V_NEGATIVE_PROMPT
from steadydancer_core.sampling.noise import NoiseSource
from steadydancer_core.sampling.options import SAMPLER
from steadydancer_core.sampling.pipeline import GenerationSettings, decode, generate

pytestmark = pytest.mark.fidelity

SET = "steadydancer_e2e"
# official checkpoint-folder names (wan/configs: WAN_CONFIGS["i2v-14B"]), not numbers of one set
VAE_FILE = "Wan2.1_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"

# bars suggested by the fixture (fp32 on CPU): conditioning max abs, latents / video / predictions relative L2
COND_ATOL = 1e-4
REL_L2 = 1e-4
CONDITIONING = ("noise", "y", "ref_x", "ref_c", "condition", "condition_null", "clip_fea_x", "clip_fea_c",
                "context", "context_null")


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@functools.cache
def _meta() -> dict:
    return json.loads(fixture_file(SET, "e2e_meta.json").read_text())


@functools.cache
def _io() -> dict:
    from safetensors.torch import load_file

    return load_file(str(fixture_file(SET, "e2e_io.safetensors")))


def _read_rgb(path) -> torch.Tensor:
    """[H, W, 3] in [0, 1] as generate_dancer.py reads an image: PIL open, convert("RGB")."""
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).float().div_(255.0)


@functools.cache
def _inputs() -> tuple:
    """photo [H, W, 3], positive / negative pose frames [F, H', W', 3] at their file size (not resized here)."""
    frames = int(_meta()["spec"]["frame_num"])
    inputs = _meta().get("inputs_dir", "inputs")
    photo = _read_rgb(fixture_file(SET, inputs, "ref_image.png"))
    pos = torch.stack([_read_rgb(fixture_file(SET, inputs, "positive", f"{i:04d}.jpg")) for i in range(frames)])
    neg = torch.stack([_read_rgb(fixture_file(SET, inputs, "negative", f"{i:04d}.jpg")) for i in range(frames)])
    return photo, pos, neg


@functools.cache
def _model():
    ckpt = fixture_file(SET, "ckpt")
    for name in (VAE_FILE, T5_FILE, T5_TOKENIZER, CLIP_FILE, "config.json"):
        fixture_file(SET, "ckpt", name)
    return load_model(ModelFiles(ckpt, ckpt / VAE_FILE, ckpt / T5_FILE, ckpt / CLIP_FILE, tokenizer=ckpt / T5_TOKENIZER),
                      LoaderSettings(precision="fp32", offload="all_resident"))


def _settings(run: dict, **kw) -> GenerationSettings:
    spec = _meta()["spec"]
    return GenerationSettings(
        prompt=_meta()["prompt"], negative_prompt="", seed=int(spec["gen_seed"]), steps=int(run["sampling_steps"]),
        solver=run["sample_solver"], shift=float(run["shift"]), text_cfg=float(run["guide_scale"]),
        pose_cfg=float(run["condition_guide_scale"]), pose_cfg_start=run["st_cond_cfg"], pose_cfg_end=run["end_cond_cfg"],
        max_area=int(spec["max_area"]), length=int(spec["frame_num"]), tiling="off", pose_resize="official",
        # the official generate() makes one clip of any length: one segment here too
        **{"first_frame": "model", "segment_frames": _one_segment(int(spec["frame_num"])), **kw})


def _one_segment(frames: int) -> int:
    """segment_frames that keeps ``frames`` (rounded down to 4n+1 as generate does) in one segment."""
    return max(SAMPLER.default("segment_frames"), (max(frames, 1) - 1) // 4 * 4 + 1)


class _DiTRecorder:
    """Records every DiT forward: per batch entry the step, timestep, inputs and output."""

    def __init__(self, dit):
        self.entries: list = []
        self.step = 0
        self._pending = None
        self._handles = [dit.register_forward_pre_hook(self._pre), dit.register_forward_hook(self._post)]

    def _pre(self, _module, args):
        self._pending = args

    def _post(self, _module, _args, out):
        x, t, context, y, condition, ref_x, ref_c, clip_x, clip_c = self._pending
        for i in range(x.shape[0]):
            ctx = context[i]  # a list of [L, dim] tensors or a padded [B, L, dim] batch
            self.entries.append(dict(
                step=self.step, t=int(t.flatten()[0 if t.numel() == 1 else i]), x=x[i].float().cpu(),
                context=ctx.float().cpu(), y=y[i].float().cpu(), condition=condition[i].float().cpu(),
                ref_x=ref_x[i].float().cpu(), ref_c=ref_c[i].float().cpu(), clip_fea_x=clip_x[i:i + 1].float().cpu(),
                clip_fea_c=clip_c[i:i + 1].float().cpu(), out=out[i].float().cpu()))

    def on_step(self, step, _total, _preview):
        self.step = step            # the entries that follow belong to the next step

    def close(self):
        for h in self._handles:
            h.remove()


@functools.cache
def _run(name: str) -> dict:
    """Generate + decode one recorded run; the DiT calls grouped per step and identified by pass."""
    run = next(r for r in _meta()["spec"]["runs"] if r["name"] == name)
    photo, pos, neg = _inputs()
    model = _model()
    rec = _DiTRecorder(model.dit)
    try:
        result = generate(model, photo, pos, neg, _settings(run), callback=rec.on_step)
    finally:
        rec.close()
    video = decode(model, result, tiling="off")
    steps: list = [[] for _ in range(int(run["sampling_steps"]))]
    for e in rec.entries:
        steps[e["step"]].append(e)
    return dict(run=run, result=result, steps=steps, video=cond.to_model_video(video))


def _runs() -> list:
    return [r["name"] for r in _meta()["spec"]["runs"]]


def _distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return _max_abs(a, b) if a.shape == b.shape else float("inf")


def _pass_of(entry: dict, ref: dict) -> str:
    """Which guidance pass a recorded DiT entry was, told by its text context and pose latent."""
    neg_text = _distance(entry["context"], ref["context_null"]) < _distance(entry["context"], ref["context"])
    neg_pose = _distance(entry["condition"], ref["condition_null"]) < _distance(entry["condition"], ref["condition"])
    assert not (neg_text and neg_pose), "a DiT pass with both the negative prompt and the negative pose"
    return "uncond_text" if neg_text else "uncond_condition" if neg_pose else "cond"


def _conditioning_seen(name: str) -> dict:
    """The conditioning tensors the pipeline handed its DiT on step 0 of run ``name`` (each from the pass that
    carries it), plus ``condition_null`` / ``context_null`` from later steps when step 0 had no such pass."""
    io = _io()
    out = _run(name)
    by_pass: dict = {}
    for step in out["steps"]:
        for e in step:
            by_pass.setdefault(_pass_of(e, io), e)
    c = by_pass["cond"]
    first = out["steps"][0][0]
    seen = dict(noise=first["x"], y=c["y"], ref_x=c["ref_x"], ref_c=c["ref_c"], condition=c["condition"],
                clip_fea_x=c["clip_fea_x"], clip_fea_c=c["clip_fea_c"], context=c["context"])
    if "uncond_text" in by_pass:
        seen["context_null"] = by_pass["uncond_text"]["context"]
    if "uncond_condition" in by_pass:
        seen["condition_null"] = by_pass["uncond_condition"]["condition"]
    return seen


def test_e2e_default_negative_prompt_is_the_official_one():
    assert WAN_I2V_NEGATIVE_PROMPT == _meta()["negative_prompt_official"]


def test_e2e_conditioning_matches_official():
    """noise, y, ref_x, ref_c, condition(_null), clip_fea_x/_c, context(_null): fp32 max abs <= 1e-4 (every run)."""
    io = _io()
    failures, seen_any = [], set()
    for name in _runs():
        seen = _conditioning_seen(name)
        for key, value in seen.items():
            seen_any.add(key)
            ref = io[key]
            if tuple(value.shape) != tuple(ref.shape):
                failures.append(f"{name}.{key}: shape {tuple(value.shape)} != official {tuple(ref.shape)}")
                continue
            err = _max_abs(value, ref)
            print(f"e2e {name}.{key}: max abs {err:.2g}")  # shown with pytest -s
            if err > COND_ATOL:
                failures.append(f"{name}.{key}: max abs {err:.3g} > {COND_ATOL}")
    missing = set(CONDITIONING) - seen_any
    if missing:  # a pass the settings never needed: build the tensor with the pipeline's own helpers
        model, (photo, _pos, neg), spec = _model(), _inputs(), _meta()["spec"]
        size = cond.target_size(photo.shape[0], photo.shape[1], int(spec["max_area"]))
        if "condition_null" in missing:
            value = pose_latent(model.vae, neg, tuple(photo.shape[:2]), size, "cpu", tiling="off",
                                     pose_resize="official")
            err = _max_abs(value, io["condition_null"])
            if err > COND_ATOL:
                failures.append(f"condition_null: max abs {err:.3g} > {COND_ATOL}")
        if "context_null" in missing:
            value = model.text_encoder.encode([WAN_I2V_NEGATIVE_PROMPT])[0]
            err = _max_abs(value, io["context_null"]) if value.shape == io["context_null"].shape else float("inf")
            if err > COND_ATOL:
                failures.append(f"context_null: max abs {err:.3g} > {COND_ATOL}")
    assert not failures, "\n".join(failures)


def test_e2e_noise_sources_on_cpu_match_official():
    """On a CPU device both noise sources draw the official noise for the fixture's seed."""
    ref = _io()["noise"]
    seed = int(_meta()["spec"]["gen_seed"])
    for mode in ("cpu", "official"):
        assert torch.equal(NoiseSource(mode, seed, "cpu").draw(tuple(ref.shape)), ref), mode


def test_e2e_steps_match_official():
    """Timesteps equal, the latent entering every step and the step-0 predictions within relative L2 1e-4, and the
    negative-pose pass run exactly on the official window steps (when its scale is not 0)."""
    io = _io()
    failures = []
    for name in _runs():
        out = _run(name)
        run, steps = out["run"], out["steps"]
        prefix = f"run.{name}."
        ref_t = io[prefix + "timesteps"].tolist()
        got_t = [s[0]["t"] if s else None for s in steps]
        if got_t != ref_t:
            failures.append(f"{name}: timesteps {got_t} != official {ref_t}")
        ref_in = io[prefix + "latents_in"]
        for k, s in enumerate(steps):
            err = _rel_l2(s[0]["x"], ref_in[k]) if s else float("inf")
            print(f"e2e {name} latent entering step {k}: relative L2 {err:.2g}")  # pytest -s
            if err > REL_L2:
                failures.append(f"{name}: latent entering step {k}: relative L2 {err:.3g} > {REL_L2}")
        passes0 = {_pass_of(e, io): e for e in steps[0]}
        for pass_name, key in (("cond", "pred_cond_step0"), ("uncond_text", "pred_uncond_context_step0")):
            if pass_name == "uncond_text" and float(run["guide_scale"]) == 1.0:
                continue  # u + 1 * (c - u) == c: the project does not run this pass (intended)
            err = _rel_l2(passes0[pass_name]["out"], io[prefix + key]) if pass_name in passes0 else float("inf")
            print(f"e2e {name} {key}: relative L2 {err:.2g}")  # pytest -s
            if err > REL_L2:
                failures.append(f"{name}: {key}: relative L2 {err:.3g} > {REL_L2}")
        expected = [int(w) and float(run["condition_guide_scale"]) != 0.0 for w in io[prefix + "window"].tolist()]
        got = [any(_pass_of(e, io) == "uncond_condition" for e in s) for s in steps]
        if got != [bool(w) for w in expected]:
            failures.append(f"{name}: negative-pose pass on steps {got}, official window {expected}")
    assert not failures, "\n".join(failures)


def test_e2e_final_latent_and_video_match_official():
    """Final latent and decoded video ([-1, 1], clamped): relative L2 <= 1e-4 for every run."""
    io = _io()
    failures = []
    for name in _runs():
        out = _run(name)
        prefix = f"run.{name}."
        latent = out["result"].segments[0].latent
        ref_latent, ref_video = io[prefix + "final_latent"], io[prefix + "video"]
        if len(out["result"].segments) != 1:
            failures.append(f"{name}: {len(out['result'].segments)} segments, the official run is one clip")
        if tuple(latent.shape) != tuple(ref_latent.shape) or tuple(out["video"].shape) != tuple(ref_video.shape):
            failures.append(f"{name}: latent {tuple(latent.shape)} / video {tuple(out['video'].shape)} != official "
                            f"{tuple(ref_latent.shape)} / {tuple(ref_video.shape)}")
            continue
        for what, got, ref in (("final latent", latent, ref_latent), ("video", out["video"], ref_video)):
            err = _rel_l2(got, ref)
            print(f"e2e {name} {what}: relative L2 {err:.2g}, max abs {_max_abs(got, ref):.2g}")  # pytest -s
            if err > REL_L2:
                failures.append(f"{name}: {what}: relative L2 {err:.3g} > {REL_L2}")
    assert not failures, "\n".join(failures)


@pytest.mark.gpu
def test_e2e_official_noise_on_cuda_is_the_device_generator():
    """noise="official" on CUDA draws what the official code draws there; "cpu" stays the CPU (fixture) noise."""
    ref = _io()["noise"]
    seed = int(_meta()["spec"]["gen_seed"])
    official = NoiseSource("official", seed, "cuda").draw(tuple(ref.shape))
    expected = torch.randn(*ref.shape, dtype=torch.float32, generator=torch.Generator(device="cuda").manual_seed(seed),
                           device="cuda")
    assert official.device.type == "cuda" and torch.equal(official, expected)
    assert torch.equal(NoiseSource("cpu", seed, "cuda").draw(tuple(ref.shape)), ref)
