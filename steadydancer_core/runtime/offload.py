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

With a ``SteadyDancerModel``: ``use_component(model, name)`` (what ``model.use(name)`` calls) places the DiT per
``model.offload_plan`` (it stays placed) or makes an encoder / the VAE resident for the ``with`` block;
``release_model(model)`` moves everything back to host memory. A host application that manages its own models
passes ``offloader_for(model, free_memory_hook=hook)``; ``hook(bytes, device)`` is called before anything is
placed and before planning, so it can evict its models first.
"""
from __future__ import annotations

import contextlib
import traceback
import weakref
from typing import Callable, Iterator

import torch
from torch import nn

from .block_swap import BlockSwap
from .memory_plan import OFFLOAD_DEFAULT_PREFETCH, OFFLOAD_MIN_RESERVE_BYTES, MemoryPlan
from .sizes import module_bytes, tensor_bytes
from .transfer import (
    DeviceLedger,
    Residency,
    SimulatedTransfer,
    Transfer,
    make_transfer,
    tensor_slots,
)

FreeMemoryHook = Callable[[int, torch.device], None]
"""``hook(bytes_needed, device)``: asks a host application (ComfyUI) to free its own models first."""


class SteadyDancerOutOfMemoryError(torch.OutOfMemoryError):
    """Out of device memory; the message says where and what to change (from the memory plan)."""


# --- the offloader ----------------------------------------------------------------------------------------------


class Offloader:
    """All moves between host memory and one compute ``device``, with their ledger.

    ``free_memory_hook(bytes, device)`` is called before placing anything, so a host application can evict its own
    models first (ComfyUI's model management is called from the nodes, never from here).
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
        slots = [s for s in tensor_slots(module, skip) if not self.transfer.is_on_device(s.get())]
        hosts = [s.get() for s in slots]
        nbytes = sum(tensor_bytes(h) for h in hosts)
        self.ask_host_to_free(nbytes)
        self.ledger.check(name, nbytes)
        devs, _ = self.transfer.upload(hosts, asynchronous=False)
        for slot, t in zip(slots, devs):
            slot.set(t)
        if slots:
            self.ledger.add(table, name, nbytes)
        return Residency(name, slots, hosts, table, self.ledger, nbytes)

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

_OFFLOADERS: "weakref.WeakKeyDictionary[nn.Module, Offloader]" = weakref.WeakKeyDictionary()


def offloader_for(model, device: torch.device | str | None = None,
                  free_memory_hook: FreeMemoryHook | None = None) -> Offloader:
    """The ``Offloader`` attached to a ``SteadyDancerModel`` (created on first use, keyed by its DiT)."""
    offloader = _OFFLOADERS.get(model.dit)
    if offloader is None:
        if device is None:
            plan_device = getattr(getattr(model, "offload_plan", None), "device", None)
            device = plan_device or ("cuda" if torch.cuda.is_available() else "cpu")
        offloader = Offloader(device, free_memory_hook=free_memory_hook)
        _OFFLOADERS[model.dit] = offloader
    elif free_memory_hook is not None:
        offloader.free_memory_hook = free_memory_hook
    return offloader


def attach_offloader(model, offloader: Offloader) -> Offloader:
    """Use ``offloader`` for a ``SteadyDancerModel`` (e.g. one built with a free-memory hook, or a simulated one)."""
    _OFFLOADERS[model.dit] = offloader
    return offloader


def _torch_modules(component) -> list:
    """The nn.Modules that hold a component's weights (the component itself, or a wrapper's module attributes)."""
    if isinstance(component, nn.Module):
        return [component]
    return [v for v in vars(component).values() if isinstance(v, nn.Module)]


@contextlib.contextmanager
def use_component(model, name: str) -> Iterator[None]:
    """Component ``name`` of a ``SteadyDancerModel`` is usable on the device inside the ``with`` block.

    "dit" is placed per the model's memory plan and stays placed (use ``release_model`` to free it); the VAE and
    the encoders are resident only inside the block.
    """
    offloader = offloader_for(model)
    plan = getattr(model, "offload_plan", None)
    component = getattr(model, name)
    what = "sampling" if name == "dit" else f"the {name.replace('_', ' ')}"
    with offloader.guard(plan, what), contextlib.ExitStack() as stack:
        if name == "dit" and offloader.moves:
            swap = plan.blocks_to_swap if plan is not None else 0
            prefetch = plan.prefetch if plan is not None else OFFLOAD_DEFAULT_PREFETCH
            emb = plan.offload_embeddings if plan is not None else False
            offloader.place(component, "dit", swap, prefetch, emb)
        elif name != "dit":
            modules = _torch_modules(component)
            if offloader.moves:
                offloader.make_room(sum(module_bytes(m) for m in modules) + OFFLOAD_MIN_RESERVE_BYTES)
            for i, module in enumerate(modules):
                stack.enter_context(offloader.resident(module, f"{name}.{i}"))
        yield


def release_model(model) -> None:
    """Move every part of a ``SteadyDancerModel`` back to host memory and free the device cache."""
    offloader = _OFFLOADERS.get(model.dit)
    if offloader is not None:
        offloader.release_transient()
        offloader.unplace_all()
