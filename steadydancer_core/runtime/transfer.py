"""Host <-> device copies and their ledger: the primitives every placement and block swap is built from.

``Transfer`` (plain CPU: nothing moves), ``SimulatedTransfer`` (distinct host copies, meta placeholders: a CPU
stand-in for an accelerator in tests) and ``CudaTransfer`` (pinned host copies, a side stream for prefetch);
``DeviceLedger`` counts what is placed, transient, pinned and in flight; ``Slot`` / ``tensor_slots`` address a
module's tensors through ``nn.Module``'s attribute interface; ``Residency`` undoes one upload.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import nn


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


class Transfer:
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


class SimulatedTransfer(Transfer):
    """CPU stand-in for an accelerator: every upload is a distinct copy, so moves and releases are observable."""

    simulated = True

    def __init__(self):
        super().__init__(torch.device("cpu"))

    def is_on_device(self, t: torch.Tensor) -> bool:
        return False

    def upload(self, hosts: list, asynchronous: bool):
        return [h.clone() for h in hosts], None


class CudaTransfer(Transfer):
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


def make_transfer(device: torch.device) -> Transfer:
    if device.type == "cuda":
        return CudaTransfer(device)
    return Transfer(device)


@dataclass
class Slot:
    """One parameter or buffer of a module, read and replaced through the module's public attribute interface."""

    owner: nn.Module
    name: str
    is_param: bool

    def get(self) -> torch.Tensor:
        return getattr(self.owner, self.name)

    def set(self, t: torch.Tensor) -> None:
        if self.is_param:
            grad = bool(getattr(self.owner, self.name).requires_grad) and t.is_floating_point()
            setattr(self.owner, self.name, nn.Parameter(t, requires_grad=grad))
        else:
            setattr(self.owner, self.name, t)      # an existing buffer name: nn.Module keeps it a buffer


def tensor_slots(module: nn.Module, skip: Iterable[nn.Module] = ()) -> list:
    """Every parameter and (non-None) buffer under ``module``, excluding the subtrees in ``skip``."""
    skipped = {id(m) for s in skip for m in s.modules()}
    found = []
    for sub in module.modules():
        if id(sub) in skipped:
            continue
        found += [Slot(sub, n, True) for n, _ in sub.named_parameters(recurse=False)]
        found += [Slot(sub, n, False) for n, _ in sub.named_buffers(recurse=False)]
    return found


def placeholder(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


class Residency:
    """Device copies of a module's tensors, undone by ``release`` (host tensors restored, device copies dropped)."""

    def __init__(self, name: str, slots: list, hosts: list, table: dict, ledger: DeviceLedger, nbytes: int):
        self.name, self.slots, self.hosts, self.nbytes = name, slots, hosts, nbytes
        self.table, self.ledger = table, ledger

    def release(self) -> None:
        for slot, host in zip(self.slots, self.hosts):
            slot.set(host)
        self.slots, self.hosts = [], []
        self.ledger.remove(self.table, self.name)
