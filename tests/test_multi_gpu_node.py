"""The multi-GPU loader node under the stand-in ComfyUI host: 2 CPU workers (gloo) give the sampler node the
latent of the single-GPU loader (with its passes unbatched, as each guidance group runs them), ComfyUI's progress
bar moves, an Interrupt stops the job and keeps the workers, and /free (ComfyUI unloading its models) leaves no
worker process."""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
import sys

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402
from test_workers import alive, wait_gone  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the workers need POSIX descriptor passing")
WORKFLOW = REPO_ROOT / "workflows" / "api" / "steadydancer_24gb_fp8_distill.json"
FAST = {"steps": 4, "max_area": 48 * 64, "length": 5}     # step 2 of 4 runs the pose-unconditional pass too


@pytest.fixture
def env(tmp_path):
    with comfy_standin.host_with_kit(tmp_path) as (host, nodes, pack):
        yield host, nodes, pack.steadydancer_core


def _prompt(multi: bool) -> tuple[dict, str, str]:
    prompt = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    loader = next(k for k, v in prompt.items() if v["class_type"] == "LoadSteadyDancerModel")
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "SteadyDancerSampler")
    prompt[sampler]["inputs"].update(FAST)
    if multi:
        prompt[loader]["class_type"] = "LoadSteadyDancerModelMultiGPU"
        prompt[loader]["inputs"].update(sequence_parallel=1, guidance_parallel=2, shard_blocks=False)
    return prompt, loader, sampler


def test_workers_give_the_single_gpu_latent_and_free_stops_them(env, monkeypatch):
    host, nodes, core = env
    plan = core.runtime.bundle.SteadyDancerModel.plan_job
    monkeypatch.setattr(core.runtime.bundle.SteadyDancerModel, "plan_job", lambda self, *a, **k: dataclasses.replace(
        plan(self, *a, **k), batch_passes=False))                     # one pass per forward, as on the workers
    prompt, loader, sampler = _prompt(multi=False)
    want = comfy_standin.run_prompt(prompt, nodes)["outputs"][sampler][0]["samples"]
    host.mm.unload_all_models()
    host.progress.clear()

    prompt, loader, sampler = _prompt(multi=True)
    run = comfy_standin.run_prompt(prompt, nodes)
    model = run["outputs"][loader][0]
    pids = model.pids
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert torch.equal(run["outputs"][sampler][0]["samples"], want)
    ours = [m.model for m in host.mm.current_loaded_models if hasattr(m.model, "owner")]
    assert len(ours) == 1 and ours[0].owner() is model and ours[0].loaded_size() > 0
    bar = [p for p in host.progress if p[0] == sampler]
    assert bar and bar[-1][1] == bar[-1][2], "the sampler's progress bar reached its end"
    assert "2 workers (2 guidance groups x 1 sequence rank)" in run["ui"][loader]["text"][0]

    host.mm.unload_all_models()                                       # POST /free {"unload_models": true}
    assert not model.running and wait_gone(pids)
    assert host.mm.current_loaded_models == []

    del run, model, ours
    gc.collect()


def test_interrupt_keeps_the_workers_and_the_next_prompt_reuses_them(env):
    host, nodes, core = env
    prompt, loader, sampler = _prompt(multi=True)
    model = nodes[prompt[loader]["class_type"]]().load(**prompt[loader]["inputs"])["result"][0]
    pids = model.pids
    try:
        photo, _ = nodes["LoadImage"]().load_image(prompt["1"]["inputs"]["image"])
        g = torch.Generator().manual_seed(1)
        poses = dict(positive_pose=torch.rand(5, 64, 48, 3, generator=g),
                     negative_pose=torch.rand(5, 64, 48, 3, generator=g))
        inputs = {k: v for k, v in prompt[sampler]["inputs"].items() if not isinstance(v, list)}
        bar = sys.modules["comfy.utils"].ProgressBar
        update = bar.update_absolute

        def interrupt_while_sampling(self, value, total=None, preview=None):
            if value >= 500:                       # half the job's weighted work: sampling has begun
                host.interrupt = True
            return update(self, value, total, preview)

        bar.update_absolute = interrupt_while_sampling
        try:
            with pytest.raises(host.mm.InterruptProcessingException):
                nodes["SteadyDancerSampler"]().sample(model, photo, unique_id="s", **poses, **inputs)
        finally:
            bar.update_absolute = update
        host.interrupt = False
        assert model.running and model.pids == pids, "an interrupt keeps the workers"
        out = nodes["SteadyDancerSampler"]().sample(model, photo, unique_id="s", **poses, **inputs)
        assert out["result"][0]["samples"].shape[1] == 16 and model.pids == pids
    finally:
        model.stop()
    assert wait_gone(pids)


def test_too_few_gpus_or_cpu_mode_is_refused_before_any_worker_starts(env, monkeypatch):
    host, nodes, core = env
    prompt, loader, _ = _prompt(multi=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match="needs 2 GPUs but 1 are visible"):
        core.WorkerModel(core.ModelFiles("d", "v", "t", "c"), parallel=core.parallel_config(guidance_parallel=2))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="CPU mode"):               # the stand-in host's device is the CPU
        nodes[prompt[loader]["class_type"]]().load(**prompt[loader]["inputs"])


def test_an_unknown_option_is_refused(env):
    host, nodes, core = env
    prompt, loader, _ = _prompt(multi=True)
    with pytest.raises(TypeError, match="has no option tile_size; known: precision"):
        nodes[prompt[loader]["class_type"]]().load(**prompt[loader]["inputs"], tile_size=4)
