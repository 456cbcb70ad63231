"""DevicePolicy without a host: validation, the defaults, reserve and vram modes in the plan, the free-memory hook,
host-managed loading (components stay loaded until unloaded), sizes a host books, and no references left behind."""
import dataclasses
import weakref

import pytest
import torch

from steadydancer_core.runtime import offload
from steadydancer_core.runtime.model_plan import plan_for_model
from steadydancer_core.runtime.offload import Offloader
from steadydancer_core.runtime.options import LoaderSettings
from steadydancer_core.runtime.placement import DevicePolicy
from steadydancer_core.runtime.sizes import module_bytes
from helpers import build_tiny_model as _build_tiny_model, inputs as _inputs, settings as _settings

GIB = 1 << 30


def _model(policy=None, capacity=None):
    model = _build_tiny_model()
    if policy is not None:
        model.policy = policy
    offload.attach_offloader(model, Offloader.simulated(capacity_bytes=capacity))
    return model


def test_policy_is_validated_and_defaults_to_the_core_choice():
    policy = DevicePolicy()
    assert policy.execution_device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert policy.offload_device == torch.device("cpu") and policy.encoder_offload_device == torch.device("cpu")
    assert not policy.host_managed and not policy.keeps_on_device("dit")
    assert DevicePolicy(execution_device="cuda:0", offload_device="cuda").keeps_on_device("dit")
    assert not DevicePolicy(execution_device="cuda:0").keeps_on_device("vae")
    assert not DevicePolicy(execution_device="cpu").keeps_on_device("dit")      # nothing moves on the CPU
    for bad, match in ((dict(vram="tiny"), "vram must be one of"), (dict(reserve_bytes=-1), "reserve_bytes"),
                       (dict(reserve_bytes=1.5), "reserve_bytes"), (dict(load_hook=3), "load_hook must be callable"),
                       (dict(execution_device="gpu0"), "execution_device must be a torch device")):
        with pytest.raises(ValueError, match=match):
            DevicePolicy(**bad)
    with pytest.raises(ValueError, match="policy must be a DevicePolicy"):
        dataclasses.replace(_build_tiny_model(), policy="cuda")


def test_reserve_and_free_memory_come_from_the_policy():
    asked = []
    policy = DevicePolicy(execution_device="cpu", reserve_bytes=2 * GIB, free_memory=lambda device: 8 * GIB,
                          free_memory_hook=lambda nbytes, device: asked.append(nbytes))
    model = _model(policy)
    plan = plan_for_model(model, "auto", width=32, height=32, frames=5, make_room=False)
    assert plan.budget_bytes == 6 * GIB and asked == []           # no eviction for the provisional plan
    plan_for_model(model, "auto", width=32, height=32, frames=5)
    assert len(asked) == 1 and asked[0] > module_bytes(model.dit) + 2 * GIB - 1   # DiT + activations + reserve
    offload.load_component(model, "dit")                          # its own placement counts as free
    placed = model.offloader.ledger.placed["dit"]
    assert plan_for_model(model, "auto", width=32, height=32, frames=5).budget_bytes == 6 * GIB + placed


@pytest.mark.parametrize("vram", ["low", "none"])
def test_low_vram_modes_swap_every_block_unless_offload_is_chosen(vram):
    model = _model(DevicePolicy(execution_device="cpu", vram=vram, free_memory=lambda device: 64 * GIB))
    n = len(model.dit.blocks)
    plan = plan_for_model(model, "auto", width=32, height=32, frames=5)
    assert plan.blocks_to_swap == n and f"vram={vram}: every block swapped" in plan.explanation
    assert plan.offload_embeddings == (vram == "none") and plan.prefetch == (0 if vram == "none" else 1)
    kept = plan_for_model(model, 1, width=32, height=32, frames=5)
    assert kept.blocks_to_swap == 1 and "block_swap with 1 block kept as chosen" in kept.explanation
    normal = dataclasses.replace(model.policy, vram="normal")
    model.policy = normal
    assert plan_for_model(model, "auto", width=32, height=32, frames=5).blocks_to_swap == 0
    assert plan_for_model(model, 9, width=32, height=32, frames=5).blocks_to_swap == n   # more than the DiT has


def test_cpu_computes_in_place_and_reads_the_host_free_memory():
    model = _build_tiny_model()
    model.policy = DevicePolicy(execution_device="cpu", vram="none", free_memory=lambda device: 3 * GIB)
    plan = plan_for_model(model, "auto", width=32, height=32, frames=5)
    # the DiT already sits in host memory: its bytes count as free for its own plan
    assert plan.blocks_to_swap == 0 and plan.budget_bytes == 3 * GIB + module_bytes(model.dit)
    assert not model.offloader.moves


def test_host_managed_components_stay_loaded_until_the_host_unloads_them():
    calls = []

    def load_hook(model, name, working):
        calls.append((name, working))
        offload.load_component(model, name)

    model = _model(DevicePolicy(execution_device="cpu", load_hook=load_hook, free_memory=lambda device: 64 * GIB))
    model.settings = LoaderSettings(offload="block_swap", blocks_to_swap=1)
    photo, pos, neg = _inputs(5)
    from steadydancer_core.sampling.pipeline import generate

    model.load_plan = plan_for_model(model, 1, width=32, height=32, frames=5)
    result = generate(model, photo, pos, neg, _settings(batch_passes=False))
    ledger = model.offloader.ledger
    assert {name for name, _ in calls} == {"dit", "vae", "text_encoder", "image_encoder"}
    assert dict(calls)["dit"] == result.memory_plan.activation_bytes > 0 and dict(calls)["vae"] == 0
    assert set(ledger.placed) == {"dit", "vae.0", "text_encoder.0", "image_encoder.0"} and ledger.is_clean()
    for name in ("vae", "text_encoder", "image_encoder"):
        size = offload.component_footprint(model, name)
        assert offload.component_device_bytes(model, name) == size == ledger.placed[f"{name}.0"]
    block = module_bytes(model.dit.blocks[0])
    assert offload.component_footprint(model, "dit") == module_bytes(model.dit)      # 1 swapped, 1 in flight
    assert offload.component_device_bytes(model, "dit") == module_bytes(model.dit) - block
    vae_bytes = ledger.placed["vae.0"]
    assert offload.unload_component(model, "vae") == vae_bytes and "vae.0" not in ledger.placed
    assert offload.unload_component(model, "dit") == module_bytes(model.dit) - block
    assert offload.component_device_bytes(model, "dit") == 0 and offload.unload_component(model, "dit") == 0
    offload.release_model(model)
    assert ledger.device_bytes == 0 and ledger.pinned_bytes == 0


def test_an_offload_device_equal_to_the_accelerator_keeps_the_weights():
    model = _model(DevicePolicy(execution_device="cuda:0", offload_device="cuda:0", encoder_offload_device="cpu"))
    offload.load_component(model, "dit")
    offload.load_component(model, "vae")
    assert offload.unload_component(model, "dit") == 0 and model.offloader.is_placed(model.dit)
    assert offload.unload_component(model, "vae") > 0 and not model.offloader.is_placed(model.vae)


def test_a_dropped_model_is_freed_at_once_even_with_block_swap():
    model = _model(DevicePolicy(execution_device="cpu", free_memory=lambda device: 64 * GIB))
    model.load_plan = plan_for_model(model, 2, width=32, height=32, frames=5)
    with model.use("dit"):
        pass
    assert model.offloader.swap is not None and len(model.offloader.swap.units) == 2
    refs = [weakref.ref(x) for x in (model, model.dit, model.offloader, model.offloader.swap)]
    import gc

    gc.disable()
    try:
        del model
        assert [r() for r in refs] == [None] * len(refs), "a reference cycle or a module-level cache keeps it"
    finally:
        gc.enable()


def test_precision_auto_is_the_policy_choice_and_explicit_precision_is_kept():
    assert DevicePolicy(execution_device="cpu").compute_dtype() == torch.float32
    assert DevicePolicy(execution_device="cpu", auto_dtype=lambda d: torch.float16).compute_dtype() == torch.float16
    with pytest.raises(ValueError, match="auto_dtype must give one of"):
        DevicePolicy(execution_device="cpu", auto_dtype=lambda d: torch.float64).compute_dtype()
