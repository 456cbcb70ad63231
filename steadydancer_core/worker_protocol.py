"""The messages between a ``WorkerModel`` (the client: e.g. the ComfyUI process) and its worker processes.

A message is a dict ``{"op": name, ...}`` of plain values (None, bool, int, float, str, tuples / lists / dicts of
them, CPU tensors). It travels over a ``multiprocessing`` connection as ``torch.save`` bytes and is read back with
``torch.load(weights_only=True)``: no class of either side is ever unpickled, which matters because the two sides
import this package under different names (inside ComfyUI it is part of the node pack; the workers import it as
``steadydancer_core``). The functions below turn the settings, progress reports, plans and results into such
values and back.

Client -> worker: ``start`` (rank, world, rendezvous, files, loader settings, layout, threads), ``job`` (photo,
pose frame counts, settings, spill folder, which callbacks to report), ``frames`` (the pose frames a ``pose``
request asked for), ``cancel``, ``decode`` (a latent for worker 0's VAE), ``stop``.
Worker -> client: ``ready`` / ``error`` after loading; while a job runs, worker 0 sends ``pose`` (frames
[start, stop) of the positive or negative poses), ``progress``, ``step`` and ``chunk`` (decoded frames for
``on_frames``); a job ends with ``result`` (worker 0), ``done`` (the others), ``cancelled`` or ``error``;
``decoded`` answers ``decode``.
"""
from __future__ import annotations

import io
from dataclasses import fields

import torch

from .runtime.memory_plan import MemoryPlan
from .sampling.decoded_store import DecodedSegments
from .sampling.progress import Progress
from .sampling.results import GenerationResult, SegmentLatent


def send(conn, op: str, **values) -> None:
    """Send message ``op`` with ``values`` (plain values only, see the module docstring)."""
    buffer = io.BytesIO()
    torch.save({"op": op, **values}, buffer)
    conn.send_bytes(buffer.getbuffer())


def receive(conn) -> dict:
    """The next message (``EOFError`` when the other side has gone)."""
    return torch.load(io.BytesIO(conn.recv_bytes()), weights_only=True)


def _plain(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def to_wire(obj) -> dict | None:
    """A dataclass of plain values (``ModelFiles``, ``LoaderSettings``, ``ParallelConfig``, ``GenerationSettings``,
    ``MemoryPlan``) as a dict of its fields; None stays None."""
    return None if obj is None else _plain(obj)


def from_wire(cls, values: dict | None):
    """``to_wire``'s inverse: ``cls(**values)`` (validated on construction); None stays None."""
    return None if values is None else cls(**values)


def progress_to_wire(progress: Progress) -> dict:
    values = _plain(progress)
    values["plan"] = to_wire(progress.plan)
    return values


def progress_from_wire(values: dict) -> Progress:
    return Progress(**{**values, "plan": from_wire(MemoryPlan, values["plan"])})


def result_to_wire(result: GenerationResult) -> dict:
    """The result as plain values; its decoded segments are handed over (the receiver owns their folder)."""
    values = _plain(result)
    values["segments"] = [_plain(seg) for seg in result.segments]
    values["notices"] = [str(n) for n in result.notices]
    values["memory_plan"] = to_wire(result.memory_plan)
    values["decoded"] = None if result.decoded is None else result.decoded.handover()
    return values


def result_from_wire(values: dict) -> GenerationResult:
    decoded = values["decoded"]
    return GenerationResult(**{
        **values,
        "segments": [SegmentLatent(**seg) for seg in values["segments"]],
        "memory_plan": from_wire(MemoryPlan, values["memory_plan"]),
        "decoded": None if decoded is None else DecodedSegments.adopt(*decoded),
    })
