"""``BlockSwap``: the weights of the first ``n`` DiT blocks (and optionally the embeddings the model declares)
live in host memory and stream through the device with forward hooks, ``prefetch`` blocks ahead.
"""
from __future__ import annotations

import weakref

from torch import nn

from .memory_plan import OFFLOAD_DEFAULT_PREFETCH
from .sizes import tensor_bytes
from .transfer import DeviceLedger, Transfer, placeholder, tensor_slots


def declared_layout(model: nn.Module) -> tuple[str, tuple[str, ...]]:
    """(block list attribute, embedding modules that may be swapped like blocks) as the model class declares them
    (``SteadyDancerDiT.BLOCKS`` / ``SWAPPABLE_EMBEDDINGS``); a model without a declaration: ("blocks", ())."""
    return getattr(model, "BLOCKS", "blocks"), tuple(getattr(model, "SWAPPABLE_EMBEDDINGS", ()))


class SwapUnit:
    """A swappable module: host homes of its tensors, meta placeholders while away, device copies while used."""

    def __init__(self, name: str, module: nn.Module, transfer: Transfer, ledger: DeviceLedger):
        self.name, self.module = name, module
        self.slots = tensor_slots(module)
        self.homes = [transfer.host_home(s.get(), pin=True) for s in self.slots]
        self.nbytes = sum(tensor_bytes(h) for h in self.homes)
        self.device_tensors: list | None = None
        self.event = None
        self.installed = False
        for slot, home in zip(self.slots, self.homes):
            slot.set(placeholder(home))
        ledger.pinned[name] = self.nbytes


class BlockSwap:
    """Streams ``blocks_to_swap`` of ``model.blocks`` (and optionally the embedding layers) through the device.

    Hooks: a pre-hook on the model prefetches the first ``prefetch`` units; a pre-hook on each unit makes it
    resident (waiting for its copy) and prefetches the next ``prefetch`` swapped units; a post-hook releases it.
    A post-hook on the model (``always_call``) releases everything, so nothing stays after a forward or an error.
    The first ``blocks_to_swap`` blocks are swapped; their copies overlap the embeddings and earlier blocks.
    ``offloader``: the ``offload.Offloader`` that owns the swap (its ``transfer`` and ``ledger`` are used; no
    reference to it is kept). The hooks hold the swap weakly, so the model, the swap and the offloader form no
    reference cycle: a dropped model frees its tensors at once, without waiting for the garbage collector.
    """

    def __init__(self, offloader, model: nn.Module, blocks_to_swap: int,
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
        self.transfer, self.ledger, self.model = offloader.transfer, offloader.ledger, model
        self.blocks_to_swap, self.prefetch, self.offload_embeddings = blocks_to_swap, prefetch, offload_embeddings
        self._handles: list = []
        modules = []
        if offload_embeddings:
            modules += [(n, getattr(model, n)) for n in embeddings if isinstance(getattr(model, n, None), nn.Module)]
        modules += [(f"{block_attr}.{i}", blocks[i]) for i in range(blocks_to_swap)]
        self.units = []
        try:
            for name, module in modules:
                self.units.append(SwapUnit(name, module, self.transfer, self.ledger))
        except BaseException:
            self.detach()
            raise
        self._order = {id(u.module): i for i, u in enumerate(self.units)}
        self._handles += [model.register_forward_pre_hook(_weak_hook(self, "_model_pre")),
                         model.register_forward_hook(_weak_hook(self, "_model_post"), always_call=True)]
        for unit in self.units:
            self._handles.append(unit.module.register_forward_pre_hook(_weak_hook(self, "_unit_pre")))
            self._handles.append(unit.module.register_forward_hook(_weak_hook(self, "_unit_post"), always_call=True))

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
    def _start(self, unit: SwapUnit, asynchronous: bool) -> None:
        if unit.device_tensors is not None:
            return
        ledger = self.ledger
        ledger.check(unit.name, unit.nbytes)
        unit.device_tensors, unit.event = self.transfer.upload(unit.homes, asynchronous)
        ledger.add(ledger.transient, unit.name, unit.nbytes)
        ledger.in_flight.add(unit.name)

    def _prefetch_from(self, start: int) -> None:
        for unit in self.units[start:start + self.prefetch]:
            self._start(unit, asynchronous=True)

    def _install(self, unit: SwapUnit) -> None:
        if unit.installed:
            return
        self._start(unit, asynchronous=False)
        transfer = self.transfer
        transfer.wait(unit.event)
        transfer.adopt(unit.device_tensors)
        for slot, t in zip(unit.slots, unit.device_tensors):
            slot.set(t)
        unit.installed = True
        self.ledger.in_flight.discard(unit.name)

    def _release(self, unit: SwapUnit) -> None:
        if unit.device_tensors is None:
            return
        if not unit.installed and unit.event is not None:
            unit.event.synchronize()
        for slot, home in zip(unit.slots, unit.homes):
            slot.set(placeholder(home))
        unit.device_tensors, unit.event, unit.installed = None, None, False
        self.ledger.remove(self.ledger.transient, unit.name)

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
            self.ledger.pinned.pop(unit.name, None)
        self.units = []


def _weak_hook(swap: BlockSwap, method: str):
    """A module hook calling ``swap.<method>`` while the swap exists (the module does not keep it alive)."""
    ref = weakref.ref(swap)

    def hook(*args):
        target = ref()
        return None if target is None else getattr(target, method)(*args)

    return hook
