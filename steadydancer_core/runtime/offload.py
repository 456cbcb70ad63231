"""Every device movement of the core: placement, block swap with prefetch, scoped residency, the memory planner.

Models never move themselves; this module moves their parameters and buffers.

* ``Offloader(device)`` owns the moves for one compute device and a ``DeviceLedger`` (what is on the device,
  what is pinned, what is in flight), so tests and error paths can check that nothing is left behind.
* ``BlockSwap``: the weights of ``n`` transformer blocks live in (pinned) host memory; a forward pre-hook on
  ``model.blocks[i]`` makes block ``i`` resident and starts copying the next ``prefetch`` swapped blocks on a side
  CUDA stream; a forward post-hook releases block ``i``. The DiT code does not know. The copies are bit-exact, so
  results equal the all-resident model's.
* ``Offloader.resident(module)``: encoders / VAE are on the device only inside the ``with`` block.
* ``plan_memory`` chooses blocks to swap, VAE tiling and whether guidance passes are batched (memory_plan.py).
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
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .memory_plan import OFFLOAD_DEFAULT_PREFETCH, OFFLOAD_MIN_RESERVE_BYTES, MemoryPlan
from .sizes import module_bytes, tensor_bytes

FreeMemoryHook = Callable[[int, torch.device], None]
"""``hook(bytes_needed, device)``: asks a host application (ComfyUI) to free its own models first."""



def declared_layout(model: nn.Module) -> tuple[str, tuple[str, ...]]:
    """(block list attribute, embedding modules that may be swapped like blocks) as the model class declares them
    (``SteadyDancerDiT.BLOCKS`` / ``SWAPPABLE_EMBEDDINGS``); a model without a declaration: ("blocks", ())."""
    return getattr(model, "BLOCKS", "blocks"), tuple(getattr(model, "SWAPPABLE_EMBEDDINGS", ()))


class SteadyDancerOutOfMemoryError(torch.OutOfMemoryError):
    """Out of device memory; the message says where and what to change (from the memory plan)."""


# --- accounting ------------------------------------------------------------------------------------------------


@dataclass
class DeviceLedger:
    """What the offload code holds on the device and in pinned host memory, by name (bytes).

    ``placed``: persistent placements (the DiT's resident part); ``transient``: swapped-in blocks and scoped
    residencies, which must be empty between forwards and after any error; ``in_flight``: copies started but not
    yet used. ``capacity_bytes`` (simulated devices only) makes uploads beyond it raise ``torch.OutOfMemoryError``.
    """

    capacity_bytes: int | None = None
    placed: dict = field(default_factory=dict)
    transient: dict = field(default_factory=dict)
    pinned: dict = field(default_factory=dict)
    in_flight: set = field(default_factory=set)
    peak_bytes: int = 0
    uploads: int = 0

    @property
    def device_bytes(self) -> int:
        return sum(self.placed.values()) + sum(self.transient.values())

    @property
    def pinned_bytes(self) -> int:
        return sum(self.pinned.values())

    def is_clean(self) -> bool:
        """True when nothing transient is on the device or in flight (placements may remain)."""
        return not self.transient and not self.in_flight

    def check(self, name: str, nbytes: int) -> None:
        if self.capacity_bytes is not None and self.device_bytes + nbytes > self.capacity_bytes:
            raise torch.OutOfMemoryError(
                f"simulated device out of memory: {name} needs {nbytes} bytes, {self.device_bytes} of "
                f"{self.capacity_bytes} in use"
            )

    def add(self, table: dict, name: str, nbytes: int) -> None:
        table[name] = table.get(name, 0) + nbytes
        self.uploads += 1
        self.peak_bytes = max(self.peak_bytes, self.device_bytes)

    def remove(self, table: dict, name: str) -> None:
        table.pop(name, None)
        self.in_flight.discard(name)


# --- transfers -------------------------------------------------------------------------------------------------


class _Transfer:
    """Host <-> device copies for one device. The base class is the plain CPU case: nothing moves."""

    simulated = False

    def __init__(self, device: torch.device):
        self.device = device

    def is_on_device(self, t: torch.Tensor) -> bool:
        return t.device == self.device

    def host_home(self, t: torch.Tensor, pin: bool) -> torch.Tensor:
        """The host tensor that stays the source of every later upload."""
        return t.detach().to("cpu")

    def upload(self, hosts: list, asynchronous: bool):
        """-> (device tensors, event or None)."""
        return [h.to(self.device) for h in hosts], None

    def wait(self, event) -> None:
        """Make the compute stream wait for a copy started by ``upload``."""

    def adopt(self, tensors: list) -> None:
        """Mark copies as used by the compute stream (so their memory is reused only after it is done)."""

    def synchronize(self) -> None:
        """Wait for all copies."""

    def empty_cache(self) -> None:
        """Return cached allocator memory to the device."""

    def free_bytes(self) -> int | None:
        return None


class _SimulatedTransfer(_Transfer):
    """CPU stand-in for an accelerator: every upload is a distinct copy, so moves and releases are observable."""

    simulated = True

    def __init__(self):
        super().__init__(torch.device("cpu"))

    def is_on_device(self, t: torch.Tensor) -> bool:
        return False

    def upload(self, hosts: list, asynchronous: bool):
        return [h.clone() for h in hosts], None


class _CudaTransfer(_Transfer):
    """Pinned host homes, copies on a side stream, events to order them before use."""

    def __init__(self, device: torch.device):
        super().__init__(device)
        self.stream = torch.cuda.Stream(device=device)

    def host_home(self, t: torch.Tensor, pin: bool) -> torch.Tensor:
        host = t.detach().to("cpu")
        return host.pin_memory() if pin and not host.is_pinned() else host

    def upload(self, hosts: list, asynchronous: bool):
        if not asynchronous:
            return [h.to(self.device, non_blocking=h.is_pinned()) for h in hosts], None
        with torch.cuda.stream(self.stream):
            tensors = [h.to(self.device, non_blocking=True) for h in hosts]
            event = torch.cuda.Event()
            event.record(self.stream)
        return tensors, event

    def wait(self, event) -> None:
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)

    def adopt(self, tensors: list) -> None:
        stream = torch.cuda.current_stream(self.device)
        for t in tensors:
            t.record_stream(stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def empty_cache(self) -> None:
        torch.cuda.empty_cache()

    def free_bytes(self) -> int | None:
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device))


def _make_transfer(device: torch.device) -> _Transfer:
    if device.type == "cuda":
        return _CudaTransfer(device)
    return _Transfer(device)


# --- tensor slots ------------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One parameter or buffer of a module, addressable for replacement."""

    owner: nn.Module
    name: str
    is_param: bool

    def get(self) -> torch.Tensor:
        return (self.owner._parameters if self.is_param else self.owner._buffers)[self.name]

    def set(self, t: torch.Tensor) -> None:
        if self.is_param:
            grad = bool(self.owner._parameters[self.name].requires_grad) and t.is_floating_point()
            self.owner._parameters[self.name] = nn.Parameter(t, requires_grad=grad)
        else:
            self.owner._buffers[self.name] = t


def _slots(module: nn.Module, skip: Iterable[nn.Module] = ()) -> list:
    """Every parameter and (non-None) buffer under ``module``, excluding the subtrees in ``skip``."""
    skipped = {id(m) for s in skip for m in s.modules()}
    found = []
    for sub in module.modules():
        if id(sub) in skipped:
            continue
        found += [_Slot(sub, n, True) for n, p in sub._parameters.items() if p is not None]
        found += [_Slot(sub, n, False) for n, b in sub._buffers.items() if b is not None]
    return found


def _placeholder(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


# --- scoped and persistent residency ------------------------------------------------------------------------------


class _Residency:
    """Device copies of a module's tensors, undone by ``release`` (host tensors restored, device copies dropped)."""

    def __init__(self, name: str, slots: list, hosts: list, table: dict, ledger: DeviceLedger, nbytes: int):
        self.name, self.slots, self.hosts, self.nbytes = name, slots, hosts, nbytes
        self.table, self.ledger = table, ledger

    def release(self) -> None:
        for slot, host in zip(self.slots, self.hosts):
            slot.set(host)
        self.slots, self.hosts = [], []
        self.ledger.remove(self.table, self.name)


# --- block swap ----------------------------------------------------------------------------------------------------


class _Unit:
    """A swappable module: host homes of its tensors, meta placeholders while away, device copies while used."""

    def __init__(self, name: str, module: nn.Module, transfer: _Transfer, ledger: DeviceLedger):
        self.name, self.module = name, module
        self.slots = _slots(module)
        self.homes = [transfer.host_home(s.get(), pin=True) for s in self.slots]
        self.nbytes = sum(tensor_bytes(h) for h in self.homes)
        self.device_tensors: list | None = None
        self.event = None
        self.installed = False
        for slot, home in zip(self.slots, self.homes):
            slot.set(_placeholder(home))
        ledger.pinned[name] = self.nbytes


class BlockSwap:
    """Streams ``blocks_to_swap`` of ``model.blocks`` (and optionally the embedding layers) through the device.

    Hooks: a pre-hook on the model prefetches the first ``prefetch`` units; a pre-hook on each unit makes it
    resident (waiting for its copy) and prefetches the next ``prefetch`` swapped units; a post-hook releases it.
    A post-hook on the model (``always_call``) releases everything, so nothing stays after a forward or an error.
    The first ``blocks_to_swap`` blocks are swapped; their copies overlap the embeddings and earlier blocks.
    """

    def __init__(self, offloader: "Offloader", model: nn.Module, blocks_to_swap: int,
                 prefetch: int = OFFLOAD_DEFAULT_PREFETCH, offload_embeddings: bool = False,
                 block_attr: str | None = None):
        declared_blocks, embeddings = declared_layout(model)
        block_attr = block_attr or declared_blocks
        blocks = getattr(model, block_attr, None)
        if not isinstance(blocks, nn.ModuleList):
            raise TypeError(f"block swap needs an nn.ModuleList at model.{block_attr}")
        if not 0 <= blocks_to_swap <= len(blocks):
            raise ValueError(f"blocks_to_swap must be in 0..{len(blocks)}, got {blocks_to_swap}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.offloader, self.model = offloader, model
        self.blocks_to_swap, self.prefetch, self.offload_embeddings = blocks_to_swap, prefetch, offload_embeddings
        self._handles: list = []
        modules = []
        if offload_embeddings:
            modules += [(n, getattr(model, n)) for n in embeddings if isinstance(getattr(model, n, None), nn.Module)]
        modules += [(f"{block_attr}.{i}", blocks[i]) for i in range(blocks_to_swap)]
        self.units = []
        try:
            for name, module in modules:
                self.units.append(_Unit(name, module, offloader.transfer, offloader.ledger))
        except BaseException:
            self.detach()
            raise
        self._order = {id(u.module): i for i, u in enumerate(self.units)}
        self._handles += [model.register_forward_pre_hook(self._model_pre),
                         model.register_forward_hook(self._model_post, always_call=True)]
        for unit in self.units:
            self._handles.append(unit.module.register_forward_pre_hook(self._unit_pre))
            self._handles.append(unit.module.register_forward_hook(self._unit_post, always_call=True))

    @property
    def modules(self) -> list:
        return [u.module for u in self.units]

    def resident_units(self) -> list:
        """Names of the units whose device copies exist (in flight or installed)."""
        return [u.name for u in self.units if u.device_tensors is not None]

    # hooks
    def _model_pre(self, module, args):
        self._prefetch_from(0)

    def _model_post(self, module, args, output):
        self.release_all()

    def _unit_pre(self, module, args):
        index = self._order[id(module)]
        self._install(self.units[index])
        self._prefetch_from(index + 1)

    def _unit_post(self, module, args, output):
        self._release(self.units[self._order[id(module)]])

    # moves
    def _start(self, unit: _Unit, asynchronous: bool) -> None:
        if unit.device_tensors is not None:
            return
        ledger = self.offloader.ledger
        ledger.check(unit.name, unit.nbytes)
        unit.device_tensors, unit.event = self.offloader.transfer.upload(unit.homes, asynchronous)
        ledger.add(ledger.transient, unit.name, unit.nbytes)
        ledger.in_flight.add(unit.name)

    def _prefetch_from(self, start: int) -> None:
        for unit in self.units[start:start + self.prefetch]:
            self._start(unit, asynchronous=True)

    def _install(self, unit: _Unit) -> None:
        if unit.installed:
            return
        self._start(unit, asynchronous=False)
        transfer = self.offloader.transfer
        transfer.wait(unit.event)
        transfer.adopt(unit.device_tensors)
        for slot, t in zip(unit.slots, unit.device_tensors):
            slot.set(t)
        unit.installed = True
        self.offloader.ledger.in_flight.discard(unit.name)

    def _release(self, unit: _Unit) -> None:
        if unit.device_tensors is None:
            return
        if not unit.installed and unit.event is not None:
            unit.event.synchronize()
        for slot, home in zip(unit.slots, unit.homes):
            slot.set(_placeholder(home))
        unit.device_tensors, unit.event, unit.installed = None, None, False
        self.offloader.ledger.remove(self.offloader.ledger.transient, unit.name)

    def release_all(self) -> None:
        """Drop every device copy (installed or in flight)."""
        for unit in self.units:
            self._release(unit)

    def detach(self) -> None:
        """Remove the hooks and give every swapped module its host tensors back (the model is whole again)."""
        self.release_all()
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for unit in self.units:
            for slot, home in zip(unit.slots, unit.homes):
                slot.set(home)
            self.offloader.ledger.pinned.pop(unit.name, None)
        self.units = []


# --- the offloader ----------------------------------------------------------------------------------------------


class Offloader:
    """All moves between host memory and one compute ``device``, with their ledger.

    ``free_memory_hook(bytes, device)`` is called before placing anything, so a host application can evict its own
    models first (ComfyUI's model management is called from the nodes, never from here).
    """

    def __init__(self, device: torch.device | str = "cpu", free_memory_hook: FreeMemoryHook | None = None,
                 transfer: _Transfer | None = None, ledger: DeviceLedger | None = None):
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.transfer = transfer if transfer is not None else _make_transfer(self.device)
        self.ledger = ledger if ledger is not None else DeviceLedger()
        self.free_memory_hook = free_memory_hook
        self.swap: BlockSwap | None = None
        self._placed: dict = {}      # id(module) -> (module, _Residency)
        self._scoped: dict = {}      # id(module) -> _Residency

    @classmethod
    def simulated(cls, capacity_bytes: int | None = None) -> "Offloader":
        """A CPU stand-in for an accelerator (tests): distinct device copies, optional out-of-memory capacity."""
        return cls("cpu", transfer=_SimulatedTransfer(), ledger=DeviceLedger(capacity_bytes=capacity_bytes))

    @property
    def moves(self) -> bool:
        """Whether this offloader actually moves tensors (False for a plain CPU device)."""
        return type(self.transfer) is not _Transfer

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

    def _upload_module(self, module: nn.Module, name: str, table: dict, skip=()) -> _Residency:
        slots = [s for s in _slots(module, skip) if not self.transfer.is_on_device(s.get())]
        hosts = [s.get() for s in slots]
        nbytes = sum(tensor_bytes(h) for h in hosts)
        self.ask_host_to_free(nbytes)
        self.ledger.check(name, nbytes)
        devs, _ = self.transfer.upload(hosts, asynchronous=False)
        for slot, t in zip(slots, devs):
            slot.set(t)
        if slots:
            self.ledger.add(table, name, nbytes)
        return _Residency(name, slots, hosts, table, self.ledger, nbytes)

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
