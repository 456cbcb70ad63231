"""A rank's DiT replica loaded straight onto its device: every tensor goes there as it is read (host memory holds
one tensor, never the model), and the placement code books a DiT already on the device as placed without making
a host copy; a later plan that swaps blocks copies only the swapped blocks to host memory.

On a CPU machine the CPU is the device, so the device here is a stand-in that tells "on the device" by the
tensors' storage (``DeviceSet``); the same code paths run with CUDA on a GPU machine."""
from __future__ import annotations

import pytest
import torch

from steadydancer_core import LoaderSettings, SteadyDancerModel, load_dit, module_bytes, tiny_kit
from steadydancer_core.loading import state_dict as state_dict_module
from steadydancer_core.runtime import model_plan, offload
from steadydancer_core.runtime.placement import DevicePolicy
from steadydancer_core.runtime.transfer import Transfer


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit") / "models"
    tiny_kit.write_kit(root)
    return root / "diffusion_models" / tiny_kit.DIT_FP8, root / "loras" / tiny_kit.DISTILL_LORA


class DeviceSet(Transfer):
    """A device on the CPU: the storages it holds are the ones it made (uploads) or was given (``adopt_all``);
    host homes are distinct copies."""

    def __init__(self):
        super().__init__(torch.device("cpu"))
        self.held: set = set()
        self.homes = 0

    def adopt_all(self, module) -> None:
        self.held |= {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}

    def is_on_device(self, t) -> bool:
        return not t.is_meta and t.untyped_storage().data_ptr() in self.held

    def host_home(self, t, pin):
        self.homes += 1
        return t.detach().clone()

    def upload(self, hosts, asynchronous):
        out = [h.clone() for h in hosts]
        self.held |= {t.untyped_storage().data_ptr() for t in out}
        return out, None


def test_loading_onto_a_device_gives_the_same_weights(kit):
    dit_file, lora = kit
    plain = load_dit(dit_file, dtype=torch.float32, loras=[(str(lora), 0.7)])
    placed = load_dit(dit_file, dtype=torch.float32, loras=[(str(lora), 0.7)], device="cpu")
    want, got = plain.state_dict(), placed.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def test_each_tensor_goes_to_the_device_before_the_next_is_read(kit, monkeypatch):
    """The loader reads a layer's tensors, then puts that layer's tensors on the device, before reading on: the
    host never holds more than one layer's freshly read tensors."""
    from steadydancer_core.loading.weight_files import LazyStateDict

    events = []
    real_create, getitem = state_dict_module._create_on, LazyStateDict.__getitem__
    monkeypatch.setattr(LazyStateDict, "__getitem__", lambda self, k: events.append(("read", k)) or getitem(self, k))
    monkeypatch.setattr(state_dict_module, "_create_on", lambda module, device, recurse: events.append(
        ("create", recurse)) or real_create(module, device, recurse))
    load_dit(kit[0], dtype=torch.float32, device="cpu")
    reads = [i for i, e in enumerate(events) if e[0] == "read" and not e[1].endswith(("scale_weight", "scaled_fp8"))]
    creates = [i for i, e in enumerate(events) if e == ("create", False)]
    assert len(creates) >= len({events[i][1].rpartition(".")[0] for i in reads}) > 10
    for a, b in zip(reads, reads[1:]):       # between two reads of different layers the first layer was created
        if events[a][1].rpartition(".")[0] != events[b][1].rpartition(".")[0]:
            assert any(a < c < b for c in creates), (events[a], events[b])
    assert events[-1] == ("create", True)    # buffers computed at construction, last


def _booked(kit):
    dit = load_dit(kit[0], dtype=torch.float32, device="cpu")
    transfer = DeviceSet()
    transfer.adopt_all(dit)                              # "loaded straight onto the device"
    model = SteadyDancerModel(dit=dit, vae=None, text_encoder=None, image_encoder=None, dtype=torch.float32,
                              settings=LoaderSettings(), policy=DevicePolicy(execution_device="cpu",
                                                                             free_memory=lambda device: 1 << 20))
    offloader = offload.attach_offloader(model, offload.Offloader("cpu", transfer=transfer))
    offload.book_on_device(model)
    return model, offloader, transfer


def test_a_dit_on_its_device_is_booked_as_placed_without_a_host_copy(kit):
    model, offloader, transfer = _booked(kit)
    total = module_bytes(model.dit)
    assert offloader.is_placed(model.dit) and offloader.ledger.placed == {"dit": total}
    residency = offloader._placed[id(model.dit)][1]
    assert residency.hosts == [] and transfer.homes == 0 and offloader.ledger.pinned_bytes == 0
    # the planner counts the booked DiT as this model's own memory (free for its plan)
    assert model_plan._device_free_bytes(model, offloader, torch.device("cpu"), 0) == (1 << 20) + total


def test_a_plan_that_swaps_blocks_copies_only_those_to_host_memory(kit):
    model, offloader, transfer = _booked(kit)
    total, block = module_bytes(model.dit), module_bytes(model.dit.blocks[0])
    offloader.place(model.dit, "dit", blocks_to_swap=1)
    assert offloader.ledger.pinned == {"blocks.0": block}            # the swapped block's host home, nothing more
    assert offloader.ledger.placed == {"dit": total - block} and transfer.homes == len(
        list(model.dit.blocks[0].parameters()) + list(model.dit.blocks[0].buffers()))


def test_a_dit_goes_straight_to_the_device_only_when_it_fits_and_is_not_swapped(kit):
    from steadydancer_core.runtime.launch import fits_straight_onto
    from steadydancer_core.runtime.memory_plan import OFFLOAD_MIN_RESERVE_BYTES

    need = kit[0].stat().st_size + OFFLOAD_MIN_RESERVE_BYTES

    def gpu(free, reserve=0):
        return DevicePolicy(execution_device="cuda", free_memory=lambda device: free, reserve_bytes=reserve)

    assert fits_straight_onto(kit[0], "auto", gpu(need)) and fits_straight_onto(kit[0], 0, gpu(need))
    assert not fits_straight_onto(kit[0], "auto", gpu(need - 1))            # read into host memory, swapped there
    assert not fits_straight_onto(kit[0], "auto", gpu(need, reserve=1))
    assert not fits_straight_onto(kit[0], 20, gpu(10 * need))               # an explicit block swap: host homes
    assert not fits_straight_onto(kit[0], "auto", DevicePolicy(execution_device="cpu"))
