"""Every device movement of the core: placement, block swap with prefetch, scoped residency.

Models never move themselves; this module (with ``transfer.py``, the copies and their ledger, and ``block_swap.py``)
moves their parameters and buffers.

* ``Offloader(device)`` owns the moves for one compute device and a ``DeviceLedger`` (what is on the device,
  what is pinned, what is in flight), so tests and error paths can check that nothing is left behind.
* ``BlockSwap``: the weights of ``n`` transformer blocks live in (pinned) host memory; a forward pre-hook on
  ``model.blocks[i]`` makes block ``i`` resident and starts copying the next ``prefetch`` swapped blocks on a side
  CUDA stream; a forward post-hook releases block ``i``. The DiT code does not know. The copies are bit-exact, so
  results equal the all-resident model's.
* ``Offloader.resident(module)``: encoders / VAE are on the device only inside the ``with`` block.
* ``memory_plan.plan_memory`` chooses blocks to swap, VAE tiling and whether guidance passes are batched.
* ``Offloader.guard(plan)``: out-of-memory becomes ``SteadyDancerOutOfMemoryError`` carrying the plan's
  suggestion; after any error or interrupt the transient device copies are released.

On CPU the same code runs with ``Offloader.simulated()``: the "device" is host memory with distinct copies,
placeholders are meta tensors and an optional capacity raises ``torch.OutOfMemoryError`` like a real card.

With a ``SteadyDancerModel`` (its ``policy`` is a ``placement.DevicePolicy``): ``use_component(model, name, plan)``
(what ``model.use(name, plan)`` calls) makes component ``name`` usable on the execution device for a ``with``
block, the DiT placed per ``plan``. The offloader remembers that plan (``dit_plan``): it is where the DiT's tensors
are, which the host's load and its booking (``load_component``, ``component_footprint``) follow.

* Without a host (the defaults): the DiT is placed per the job's plan and stays placed (``release_model``
  frees it); the VAE and the encoders are resident only inside the block, and when the device lacks room for them
  the DiT goes back to host memory first. ``policy.free_memory_hook`` is asked before every upload.
* With a host that manages the models (``policy.load_hook``): the host is asked to load the component, which it
  does by calling ``load_component(model, name)``; the component then stays loaded until the host calls
  ``unload_component(model, name)``. ``component_footprint`` / ``component_device_bytes`` are the sizes the host
  books (what the component takes on the device when loaded / what it holds there now).

The offloader is kept on the model (``model.offloader``), so nothing outside the model refers to its networks.
"""
from __future__ import annotations

import contextlib
import traceback
from typing import Iterator

import torch
from torch import nn

from .block_swap import BlockSwap
from .memory_plan import OFFLOAD_DEFAULT_PREFETCH, OFFLOAD_MIN_RESERVE_BYTES, MemoryPlan
from .placement import COMPONENTS, FreeMemoryHook
from .sizes import module_bytes, tensor_bytes
from .transfer import (
    DeviceLedger,
    Residency,
    SimulatedTransfer,
    Transfer,
    make_transfer,
    tensor_slots,
)


class SteadyDancerOutOfMemoryError(torch.OutOfMemoryError):
    """Out of device memory; the message says where and what to change (from the memory plan)."""


# --- the offloader ----------------------------------------------------------------------------------------------


class Offloader:
    """All moves between host memory and one compute ``device``, with their ledger.

    ``free_memory_hook(bytes, device)`` is called before placing anything, so a host application can evict its own
    models first (a host that loads the components itself, like ComfyUI, uses ``DevicePolicy.load_hook`` instead;
    this module never calls the host otherwise).
    """

    def __init__(self, device: torch.device | str = "cpu", free_memory_hook: FreeMemoryHook | None = None,
                 transfer: Transfer | None = None, ledger: DeviceLedger | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.transfer = transfer if transfer is not None else make_transfer(self.device)
        self.ledger = ledger if ledger is not None else DeviceLedger()
        self.free_memory_hook = free_memory_hook
        self.swap: BlockSwap | None = None
        self.dit_plan: MemoryPlan | None = None   # the plan the DiT is placed (or about to be placed) with
        self._placed: dict = {}      # id(module) -> (module, Residency)
        self._scoped: dict = {}      # id(module) -> Residency

    @classmethod
    def simulated(cls, capacity_bytes: int | None = None) -> "Offloader":
        """A CPU stand-in for an accelerator (tests): distinct device copies, optional out-of-memory capacity."""
        return cls("cpu", transfer=SimulatedTransfer(), ledger=DeviceLedger(capacity_bytes=capacity_bytes))

    @property
    def moves(self) -> bool:
        """Whether this offloader actually moves tensors (False for a plain CPU device)."""
        return type(self.transfer) is not Transfer

    def free_bytes(self) -> int | None:
        """Device memory this offloader could use now: free memory plus what its own placements hold."""
        free = self.transfer.free_bytes()
        if free is None and self.ledger.capacity_bytes is not None:
            free = self.ledger.capacity_bytes - self.ledger.device_bytes
        return None if free is None else free + sum(self.ledger.placed.values())

    def ask_host_to_free(self, nbytes: int) -> None:
        """Call the free-memory hook (if any) for ``nbytes``."""
        if self.free_memory_hook is not None and nbytes > 0:
            self.free_memory_hook(int(nbytes), self.device)

    def make_room(self, nbytes: int) -> bool:
        """Ask the host to free ``nbytes``; if the device still lacks them, move this offloader's own placements
        (the DiT) back to host memory (they are placed again on next use). Returns whether anything was unplaced."""
        self.ask_host_to_free(nbytes)
        free = self.transfer.free_bytes()
        if free is None and self.ledger.capacity_bytes is not None:
            free = self.ledger.capacity_bytes - self.ledger.device_bytes
        if free is None or free >= nbytes or not self._placed:
            return False
        self.unplace_all()
        return True

    def _upload_module(self, module: nn.Module, name: str, table: dict, skip=()) -> Residency:
        """Upload ``module``'s tensors (but ``skip``'s) that are not on the device yet, keeping their host homes.
        Tensors already there (a module loaded straight to its device) are booked with the rest but have no host
        home: none is made, and releasing the residency leaves them where they are."""
        slots, there = [], 0
        for slot in tensor_slots(module, skip):
            if self.transfer.is_on_device(slot.get()):
                there += tensor_bytes(slot.get())
            else:
                slots.append(slot)
        hosts = [s.get() for s in slots]
        nbytes = sum(tensor_bytes(h) for h in hosts)
        self.ask_host_to_free(nbytes)
        self.ledger.check(name, nbytes)
        devs, _ = self.transfer.upload(hosts, asynchronous=False)
        for slot, t in zip(slots, devs):
            slot.set(t)
        if slots or (there and self.moves):
            self.ledger.add(table, name, nbytes + there)
        return Residency(name, slots, hosts, table, self.ledger, nbytes + there)

    # persistent placement ------------------------------------------------------------------------------------------
    def place(self, module: nn.Module, name: str, blocks_to_swap: int = 0, prefetch: int = OFFLOAD_DEFAULT_PREFETCH,
              offload_embeddings: bool = False) -> None:
        """Put ``module`` on the device until ``unplace``; with ``blocks_to_swap`` > 0 its first blocks stream
        through instead (see ``BlockSwap``). Placing again with the same settings does nothing."""
        key = id(module)
        settings = (blocks_to_swap, prefetch if blocks_to_swap else 0, offload_embeddings)
        if key in self._placed:
            if self._placed[key][2] == settings:
                return
            self.unplace(module)
        swap = None
        if blocks_to_swap or offload_embeddings:
            if self.swap is not None:
                raise RuntimeError("only one model can use block swap per device; unplace the other model first")
            swap = BlockSwap(self, module, blocks_to_swap, prefetch, offload_embeddings)
        try:
            residency = self._upload_module(module, name, self.ledger.placed, skip=swap.modules if swap else ())
        except BaseException:
            if swap is not None:
                swap.detach()
            raise
        if swap is not None:
            self.swap = swap
        self._placed[key] = (module, residency, settings)

    def unplace(self, module: nn.Module) -> None:
        """Undo ``place``: host tensors back in the module, device copies dropped, hooks removed."""
        entry = self._placed.pop(id(module), None)
        if self.swap is not None and self.swap.model is module:
            self.swap.detach()
            self.swap = None
        if entry is not None:
            entry[1].release()
        self.transfer.empty_cache()

    def unplace_all(self) -> None:
        for module, _, _ in list(self._placed.values()):
            self.unplace(module)

    def is_placed(self, module: nn.Module) -> bool:
        return id(module) in self._placed

    def placed_bytes(self, module: nn.Module) -> int:
        """Device bytes of ``module``'s placement (its resident part when blocks are swapped; 0 if not placed)."""
        entry = self._placed.get(id(module))
        return entry[1].nbytes if entry is not None else 0

    # scoped residency -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def resident(self, module: nn.Module, name: str | None = None) -> Iterator[nn.Module]:
        """``with offloader.resident(vae): ...``: ``module`` is on the device inside, back on the host after.

        Nested or already-placed modules are left as they are.
        """
        key = id(module)
        if key in self._scoped or key in self._placed or not self.moves:
            yield module
            return
        residency = self._upload_module(module, name or type(module).__name__, self.ledger.transient)
        self._scoped[key] = residency
        try:
            yield module
        finally:
            self._scoped.pop(key, None)
            residency.release()
            self.transfer.empty_cache()

    # errors ----------------------------------------------------------------------------------------------------
    def release_transient(self) -> None:
        """Drop every swapped-in block and in-flight copy (scoped residencies end with their ``with`` block)."""
        if self.swap is not None:
            self.swap.release_all()
        self.transfer.synchronize()

    @contextlib.contextmanager
    def guard(self, plan: MemoryPlan | None = None, what: str = "generation") -> Iterator[None]:
        """Release transient device copies after any error or interrupt; turn out-of-memory into a clear error."""
        try:
            yield
        except torch.OutOfMemoryError as err:
            self.release_transient()
            traceback.clear_frames(err.__traceback__)     # activations referenced by the failed frames
            self.transfer.empty_cache()
            if isinstance(err, SteadyDancerOutOfMemoryError):
                raise
            raise SteadyDancerOutOfMemoryError(oom_message(plan, what, err)) from err
        except BaseException:
            self.release_transient()
            raise


def oom_message(plan: MemoryPlan | None, what: str, err: BaseException) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = f"out of device memory during {what} ({first[:200]})."
    if plan is not None:
        text += f" Memory plan: {plan.explanation}. Try: {plan.suggestion}"
    else:
        text += " Try: swap more DiT blocks, lower the resolution or frames per segment, or use fp8 weights."
    return text


# --- integration with SteadyDancerModel -----------------------------------------------------------------------------

def offloader_for(model, device: torch.device | str | None = None,
                  free_memory_hook: FreeMemoryHook | None = None) -> Offloader:
    """The ``Offloader`` of a ``SteadyDancerModel`` (created on first use for its policy's execution device and
    kept on the model as ``model.offloader``)."""
    offloader = model.offloader
    if offloader is None:
        policy = model.policy
        hook = free_memory_hook
        if hook is None and not policy.host_managed:
            hook = policy.free_memory_hook
        offloader = Offloader(device if device is not None else policy.execution_device, free_memory_hook=hook)
        model.offloader = offloader
    elif free_memory_hook is not None:
        offloader.free_memory_hook = free_memory_hook
    return offloader


def attach_offloader(model, offloader: Offloader) -> Offloader:
    """Use ``offloader`` for a ``SteadyDancerModel`` (e.g. a simulated one in tests)."""
    model.offloader = offloader
    return offloader


def torch_modules(component) -> list:
    """The nn.Modules that hold a component's weights (the component itself, or a wrapper's module attributes)."""
    if component is None:
        return []
    if isinstance(component, nn.Module):
        return [component]
    return [v for v in vars(component).values() if isinstance(v, nn.Module)]


def _check_name(name: str) -> None:
    if name not in COMPONENTS:
        raise ValueError(f"unknown component {name!r}; one of {COMPONENTS}")


def _dit_settings(model) -> tuple[int, int, bool]:
    """(blocks to swap, prefetch, stream the embeddings) of the plan the DiT is placed with (the job's, else the
    load-time plan); all resident without one."""
    plan = model.offloader.dit_plan if model.offloader is not None and model.offloader.dit_plan is not None \
        else model.load_plan
    if plan is None:
        return 0, OFFLOAD_DEFAULT_PREFETCH, False
    return plan.blocks_to_swap, plan.prefetch, plan.offload_embeddings


def component_footprint(model, name: str) -> int:
    """Bytes component ``name`` takes on the execution device while loaded: its weights, or for the DiT with a plan
    that swaps blocks the resident part plus the swapped blocks in flight (``prefetch`` + 1 of them)."""
    _check_name(name)
    modules = torch_modules(getattr(model, name))
    total = sum(module_bytes(m) for m in modules)
    if name != "dit" or not modules:
        return total
    from .block_swap import declared_layout

    swap, prefetch, emb_off = _dit_settings(model)
    if not swap and not emb_off:
        return total
    block_attr, embeddings = declared_layout(model.dit)
    blocks = list(getattr(model.dit, block_attr))[:swap]
    swapped = [module_bytes(b) for b in blocks]
    if emb_off:
        swapped += [module_bytes(getattr(model.dit, n)) for n in embeddings
                    if isinstance(getattr(model.dit, n, None), nn.Module)]
    window = sum(sorted(swapped, reverse=True)[:min(len(swapped), prefetch + 1)])
    return total - sum(swapped) + window


def component_device_bytes(model, name: str) -> int:
    """Bytes component ``name`` holds on the execution device now (0 when it is not loaded). On a device nothing
    moves to (the CPU), a loaded component counts with its footprint, as a host books it."""
    _check_name(name)
    offloader = model.offloader
    modules = torch_modules(getattr(model, name))
    if offloader is None or not modules or not all(offloader.is_placed(m) for m in modules):
        return 0
    if not offloader.moves:
        return component_footprint(model, name)
    return sum(offloader.placed_bytes(m) for m in modules)


def load_component(model, name: str) -> int:
    """Put component ``name`` on the execution device (the DiT per the plan it is placed with) until
    ``unload_component``; returns the bytes it holds there. Loading a loaded component again does nothing (the DiT
    is placed again only when its plan changed)."""
    _check_name(name)
    offloader = offloader_for(model)
    component = getattr(model, name)
    if name == "dit":
        swap, prefetch, emb_off = _dit_settings(model)
        offloader.place(component, "dit", swap, prefetch, emb_off)
    else:
        for i, module in enumerate(torch_modules(component)):
            offloader.place(module, f"{name}.{i}")
    return component_device_bytes(model, name)


def unload_component(model, name: str) -> int:
    """Move component ``name`` back to its offload device; returns the device bytes freed. A component whose
    offload device is the execution device (``policy.keeps_on_device``) stays where it is (0 freed)."""
    _check_name(name)
    offloader = model.offloader
    if offloader is None or model.policy.keeps_on_device(name):
        return 0
    held = component_device_bytes(model, name) if offloader.moves else 0
    for module in torch_modules(getattr(model, name)):
        if offloader.is_placed(module):
            offloader.unplace(module)
    return held


def working_bytes(plan: MemoryPlan | None, name: str) -> int:
    """Working memory component ``name`` needs next to its weights (the DiT's planned activations; 0 = let the host
    use its own minimum for the encoders and the VAE, whose tiling adapts to the free memory)."""
    return int(plan.activation_bytes) if name == "dit" and plan is not None else 0


@contextlib.contextmanager
def use_component(model, name: str, plan: MemoryPlan | None) -> Iterator[None]:
    """Component ``name`` of a ``SteadyDancerModel`` is usable on the device inside the ``with`` block, the DiT
    placed per ``plan`` (see the module docstring for who places it and for how long)."""
    _check_name(name)
    offloader = offloader_for(model)
    policy = model.policy
    component = getattr(model, name)
    what = "sampling" if name == "dit" else f"the {name.replace('_', ' ')}"
    if name == "dit":
        offloader.dit_plan = plan
    with offloader.guard(plan, what), contextlib.ExitStack() as stack:
        if policy.host_managed:
            policy.load_hook(model, name, working_bytes(plan, name))
            load_component(model, name)          # nothing to do when the host loaded it
        elif name == "dit" and offloader.moves:
            swap, prefetch, emb_off = _dit_settings(model)
            offloader.place(component, "dit", swap, prefetch, emb_off)
        elif name != "dit":
            modules = torch_modules(component)
            if offloader.moves:
                offloader.make_room(sum(module_bytes(m) for m in modules) + OFFLOAD_MIN_RESERVE_BYTES)
            for i, module in enumerate(modules):
                stack.enter_context(offloader.resident(module, f"{name}.{i}"))
        yield


def book_on_device(model) -> None:
    """Book the DiT of a ``SteadyDancerModel`` that was loaded straight onto the execution device (a rank's
    replica) as placed there, all resident: nothing is copied and no host copy exists or is made, and the memory
    planner counts its bytes as this model's own. A later job plan that swaps blocks copies only the swapped blocks
    to host memory (their homes); the rest stays on the device for the model's lifetime."""
    offloader = offloader_for(model)
    if offloader.moves:
        offloader.place(model.dit, "dit")


def release_model(model) -> None:
    """Move every part of a ``SteadyDancerModel`` back to host memory and free the device cache."""
    offloader = model.offloader
    if offloader is not None:
        offloader.release_transient()
        offloader.unplace_all()
