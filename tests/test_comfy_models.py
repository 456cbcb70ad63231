"""ComfyUI's model management of the pack's models, under the stand-in host (``standin_models``): the device and the
settings come from the host; each component is a patcher with its size, loaded right before use and kept; only what
must go is evicted; unloading releases the device copies; dropping the cached model frees it at once."""
from __future__ import annotations

import copy
import gc
import json
import sys
import weakref

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

WORKFLOW = REPO_ROOT / "workflows" / "api" / "steadydancer_24gb_fp8_distill.json"
FAST = {"steps": 1, "max_area": 48 * 64}
MIB = 1 << 20


@pytest.fixture
def env(tmp_path, monkeypatch):
    """(host, node classes, the pack's core package); the core's tensors move with its simulated offloader when the
    host is put in GPU mode (``host.mm.set_gpu_mode``)."""
    with comfy_standin.host_with_kit(tmp_path) as (host, nodes, pack):
        core = pack.steadydancer_core
        real = core.runtime.offload.make_transfer
        monkeypatch.setattr(core.runtime.offload, "make_transfer", lambda device: real(device) if host.cpu_mode
                            else core.runtime.transfer.SimulatedTransfer())
        yield host, nodes, core


def _prompt() -> dict:
    prompt = copy.deepcopy(json.loads(WORKFLOW.read_text()))
    for node in prompt.values():
        if node["class_type"] == "SteadyDancerSampler":
            node["inputs"].update(FAST)
    return prompt


def _loader_id(prompt) -> str:
    return next(k for k, v in prompt.items() if v["class_type"] == "LoadSteadyDancerModel")


def _load(nodes, prompt):
    inputs = dict(prompt[_loader_id(prompt)]["inputs"])
    return nodes["LoadSteadyDancerModel"]().load(**inputs)["result"][0]


def _native(host, nbytes):
    """A model of ComfyUI's own (a checkpoint of another workflow), loaded on the host's device."""
    import comfy.model_patcher

    class Checkpoint:
        pass

    patcher = comfy.model_patcher.ModelPatcher(Checkpoint(), host.device, torch.device("cpu"), size=nbytes)
    host.mm.load_models_gpu([patcher])
    return patcher


def _ours(host):
    return {p.component: p for p in (m.model for m in host.mm.current_loaded_models) if hasattr(p, "component")}


def test_cpu_mode_device_and_patchers_with_their_sizes(env):
    host, nodes, core = env
    prompt = _prompt()
    run = comfy_standin.run_prompt(prompt, nodes)
    model = run["outputs"][_loader_id(prompt)][0]
    assert model.policy.execution_device == host.mm.get_torch_device() == torch.device("cpu")
    assert model.execution_device == torch.device("cpu") and not model.offloader.moves
    ours = _ours(host)
    assert set(ours) == set(core.COMPONENTS)
    for name, patcher in ours.items():
        modules = core.runtime.offload.torch_modules(getattr(model, name))
        assert patcher.model_size() == sum(core.module_bytes(m) for m in modules) == patcher.loaded_size()
        assert patcher.load_device == torch.device("cpu")
    assert host.unload_calls == 0, "no blanket unload of ComfyUI's models"
    host.mm.unload_all_models()
    assert host.mm.current_loaded_models == []


def test_gpu_mode_keeps_other_models_and_unload_releases_the_device_copies(env):
    host, nodes, core = env
    host.mm.set_gpu_mode(capacity=64 * MIB)
    checkpoint = _native(host, 8 * MIB)
    prompt = _prompt()
    run = comfy_standin.run_prompt(prompt, nodes)
    model = run["outputs"][_loader_id(prompt)][0]
    ledger = model.offloader.ledger
    assert model.offloader.moves and ledger.is_clean()
    assert host.mm.current_loaded_models[-1].model is checkpoint, "ComfyUI's own model stays loaded"
    ours = _ours(host)
    assert set(ours) == set(core.COMPONENTS) and ours["dit"].loaded_size() == ledger.placed["dit"] > 0
    assert sum(p.loaded_size() for p in ours.values()) == ledger.device_bytes
    assert host.mm.get_free_memory() == 64 * MIB - 8 * MIB - ledger.device_bytes

    host.mm.unload_all_models()                                    # POST /free {"unload_models": true}
    assert ledger.device_bytes == 0 and ledger.pinned_bytes == 0 and host.mm.current_loaded_models == []
    assert not any(t.is_meta for t in model.dit.parameters())

    extract_id = next(k for k, v in prompt.items() if v["class_type"] == "ExtractPose")
    loaded = run["outputs"][extract_id][0].models.loaded                 # the pose sessions, owned by the output
    sessions = (loaded.detector.session, loaded.estimator.session)
    assert all(s is not None for s in sessions)
    refs = [weakref.ref(x) for x in (model, model.dit, model.vae, model.offloader, *ours.values(), *sessions)]
    gc.disable()                                                   # ... {"free_memory": true}: the cache is dropped
    try:
        del model, run, ours, ledger, loaded, sessions
        assert [r() for r in refs] == [None] * len(refs), "nothing of the pack stays referenced"
    finally:
        gc.enable()


def test_loading_evicts_only_what_must_go(env):
    import dataclasses

    host, nodes, core = env
    prompt = _prompt()
    prompt[_loader_id(prompt)]["inputs"]["offload"] = "all_resident"
    host.mm.set_gpu_mode()
    model = _load(nodes, prompt)
    model.load_plan = dataclasses.replace(model.load_plan, activation_bytes=0)   # weights only, for the sums
    dit, vae, t5 = (core.component_footprint(model, n) for n in ("dit", "vae", "text_encoder"))
    assert t5 < 0.3 * vae < dit                        # the VAE needs room; evicting the umT5 alone is not enough
    host.capacity = 4 * vae + dit + t5 + int(0.8 * vae)
    checkpoint = _native(host, 4 * vae)
    with model.use("text_encoder"):
        pass
    with model.use("dit"):
        pass
    before = [m.model for m in host.mm.current_loaded_models]
    assert checkpoint in before and set(_ours(host)) == {"dit", "text_encoder"}, "everything fits: nothing evicted"
    with model.use("vae"):
        assert model.offloader.is_placed(model.vae)
    after = [m.model for m in host.mm.current_loaded_models]
    kept = [p for p in before if p in after]
    assert 1 <= len(kept) < len(before), f"evicted only what must go, kept {kept}"
    assert host.mm.get_free_memory() >= 0
    assert model.offloader.ledger.device_bytes == sum(p.loaded_size() for p in _ours(host).values())


@pytest.mark.parametrize("state,emb", [("LOW_VRAM", False), ("NO_VRAM", True)])
def test_lowvram_and_novram_swap_every_block(env, state, emb):
    host, nodes, core = env
    host.mm.set_gpu_mode(getattr(host.mm.VRAMState, state), capacity=1 << 40)
    prompt = _prompt()
    prompt[_loader_id(prompt)]["inputs"]["offload"] = "auto"
    model = _load(nodes, prompt)
    assert model.policy.vram == {"LOW_VRAM": "low", "NO_VRAM": "none"}[state]
    plan = model.plan_job(width=64, height=48, frames=5, guidance_passes=2)
    assert plan.blocks_to_swap == len(model.dit.blocks) and plan.offload_embeddings == emb
    with model.use("dit", plan):
        assert len(model.offloader.swap.units) == len(model.dit.blocks) + (2 if emb else 0)


def test_reserve_vram_is_kept_free_when_planning(env):
    host, nodes, core = env
    host.mm.set_gpu_mode(capacity=8 << 30, reserve_bytes=3 << 30)
    checkpoint = _native(host, 1 << 30)                          # noqa: F841 (kept loaded)
    model = _load(nodes, _prompt())
    assert model.policy.reserve_bytes == 3 << 30
    assert model.load_plan.budget_bytes == (8 << 30) - (1 << 30) - (3 << 30)


@pytest.mark.parametrize("gpu,bf16,expected", [(False, True, torch.float32), (True, True, torch.bfloat16),
                                               (True, False, torch.float16)])
def test_precision_auto_asks_comfyui_and_an_explicit_precision_is_kept(env, gpu, bf16, expected):
    host, nodes, core = env
    if gpu:
        host.mm.set_gpu_mode()
    host.bf16 = bf16
    prompt = _prompt()
    inputs = dict(prompt[_loader_id(prompt)]["inputs"], precision="auto")
    out = nodes["LoadSteadyDancerModel"]().load(**inputs)
    assert out["result"][0].dtype == expected
    word = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[expected]
    assert f", computing in {word} (precision auto); a typical job" in out["ui"]["text"][0].splitlines()[0]
    inputs["precision"] = "bf16"
    assert nodes["LoadSteadyDancerModel"]().load(**inputs)["result"][0].dtype == torch.bfloat16


def test_offload_devices_follow_gpu_only_and_highvram(env):
    host, nodes, core = env
    comfy_models = sys.modules[comfy_standin.PACK_NAME + ".nodes.comfy_models"]
    policy = comfy_models.device_policy(comfy_models.PackModels())
    assert policy.execution_device == host.device and policy.vram == "normal" and policy.host_managed
    host.device = torch.device("cuda", 0)                # a descriptor: the policy only records it
    host.mm.set_gpu_mode(host.mm.VRAMState.HIGH_VRAM)
    policy = comfy_models.device_policy(comfy_models.PackModels())
    assert policy.keeps_on_device("dit") and not policy.keeps_on_device("vae")
    host.mm.set_gpu_mode(gpu_only=True)
    policy = comfy_models.device_policy(comfy_models.PackModels())
    assert all(policy.keeps_on_device(name) for name in core.COMPONENTS)


def test_host_memory_is_trimmed_once_the_model_is_dropped(env, monkeypatch):
    import threading

    host, nodes, core = env
    comfy_models = sys.modules[comfy_standin.PACK_NAME + ".nodes.comfy_models"]
    trimmed = threading.Event()
    monkeypatch.setattr(comfy_models, "TRIM_DELAY_S", 0.0)
    monkeypatch.setattr(comfy_models, "trim_host_memory", trimmed.set)
    model = _load(nodes, _prompt())
    assert not trimmed.wait(0.2)
    del model
    assert trimmed.wait(5), "the allocator trim runs after the model is freed"
