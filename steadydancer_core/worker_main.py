"""One worker process of a ``WorkerModel``: ``python -m steadydancer_core.worker_main FD``, FD being its end of
the connection to the client (inherited; ``workers.py`` starts it).

It reads the ``start`` message, joins the workers' process group (a rendezvous file of the client's; NCCL and GPU
``rank`` on a CUDA machine, gloo on the CPU), loads its share of the model with ``load_model(..., parallel=...)``
(worker 0 also the VAE and the encoders) and answers ``ready``; then it serves jobs until ``stop``, until the
client's connection closes, or until the client process is gone (a watchdog thread checks the parent every
second). A job that fails leaves the process group unusable: the worker reports the error and exits, and the
client starts new workers for the next job. The messages are ``worker_protocol``'s.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from multiprocessing.connection import Connection

import torch

from . import (COMPONENTS, Cancelled, FrameCount, GenerationSettings, LoaderSettings, ModelFiles, ParallelConfig, generate,
               load_model, module_bytes, start_process_group)
from . import worker_protocol as wire
from .runtime.offload import torch_modules

PARENT_CHECK_S = 1.0

log = logging.getLogger("steadydancer.worker")


def _watch_parent(parent: int) -> None:
    """Exit at once when the client process is gone (this process was handed to another parent)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(3)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class Channel:
    """Worker 0's side of a job: pose frames asked of the client, the cancel flag (a ``cancel`` message may arrive
    at any time), and the reports sent back."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.cancelled = False

    def _take(self, wanted: str) -> dict:
        while True:
            msg = wire.receive(self.conn)
            if msg["op"] == "cancel":
                self.cancelled = True
            elif msg["op"] == wanted:
                return msg

    def should_cancel(self) -> bool:
        while not self.cancelled and self.conn.poll():
            self.cancelled = wire.receive(self.conn)["op"] == "cancel"
        return self.cancelled

    def frames(self, which: str, start: int, stop: int) -> torch.Tensor:
        wire.send(self.conn, "pose", which=which, start=int(start), stop=int(stop))
        frames = self._take("frames")["frames"]
        if frames is None:
            raise RuntimeError("the client stopped the job while it was reading the pose frames")
        return frames


class RemotePoseFrames:
    """The client's pose frames, asked for one read at a time (``generate`` reads one frame at a time)."""

    def __init__(self, channel: Channel, which: str, n: int):
        self.channel, self.which, self.n = channel, which, n

    def __len__(self) -> int:
        return self.n

    def frames(self, start: int, stop: int) -> torch.Tensor:
        return self.channel.frames(self.which, start, stop)


def _device_bytes(model) -> int:
    device = model.execution_device
    if device.type == "cuda":
        return int(torch.cuda.memory_reserved(device))
    return sum(module_bytes(m) for name in COMPONENTS for m in torch_modules(getattr(model, name)))


def run_job(conn: Connection, model, rank: int, msg: dict) -> bool:
    """Run one job; returns whether the workers are still usable (False after an error)."""
    settings = wire.from_wire(GenerationSettings, msg["settings"])
    extra = {}
    if rank == 0:
        channel = Channel(conn)
        positive = RemotePoseFrames(channel, "positive", msg["positive_frames"])
        negative = RemotePoseFrames(channel, "negative", msg["negative_frames"])
        extra["should_cancel"] = channel.should_cancel
        extra["spill_dir"] = msg["spill_dir"]
        if msg["progress"]:
            extra["progress"] = lambda p: wire.send(conn, "progress", progress=wire.progress_to_wire(p))
        if msg["callback"]:
            extra["callback"] = lambda step, total, preview: wire.send(conn, "step", step=step, total=total,
                                                                        preview=preview)
        if msg["on_frames"]:
            extra["on_frames"] = lambda start, frames: wire.send(conn, "chunk", start=int(start), frames=frames)
    else:
        positive, negative = FrameCount(msg["positive_frames"]), FrameCount(msg["negative_frames"])
    try:
        result = generate(model, msg["photo"], positive, negative, settings, **extra)
    except Cancelled as err:
        wire.send(conn, "cancelled", message=str(err))
        return True
    except Exception as err:         # reported to the client, which raises it; this group is done
        wire.send(conn, "error", message=f"{type(err).__name__}: {err}")
        return False
    if rank == 0:
        wire.send(conn, "result", result=wire.result_to_wire(result))
    else:
        wire.send(conn, "done")
    return True


def decode(conn: Connection, model, msg: dict) -> None:
    try:
        with model.use("vae"):
            video = model.vae.decode(msg["latent"].to(model.execution_device), tile=msg["tile"])
        wire.send(conn, "decoded", video=video.float().cpu())
    except Exception as err:         # the VAE's error goes to the client; the workers stay usable
        wire.send(conn, "error", message=f"{type(err).__name__}: {err}")


def serve(conn: Connection, model, rank: int) -> None:
    while True:
        try:
            msg = wire.receive(conn)
        except EOFError:             # the client closed its end: it is gone
            return
        if msg["op"] == "stop":
            return
        if msg["op"] == "job":
            if not run_job(conn, model, rank, msg):
                return
        elif msg["op"] == "decode":
            decode(conn, model, msg)


def main(argv) -> int:
    logging.basicConfig(level=logging.WARNING, format="[steadydancer worker] %(message)s")
    conn = Connection(int(argv[0]))
    start = wire.receive(conn)
    rank = start["rank"]
    _watch_parent(start["parent"])
    torch.set_num_threads(start["threads"])
    try:
        start_process_group(init_method=start["init"], rank=rank, world_size=start["world"], local_rank=rank)
        model = load_model(wire.from_wire(ModelFiles, start["files"]), wire.from_wire(LoaderSettings, start["loader"]),
                           parallel=wire.from_wire(ParallelConfig, start["parallel"]))
    except Exception as err:         # e.g. a file that is not the model: the client shows it
        wire.send(conn, "error", message=f"{type(err).__name__}: {err}")
        return 1
    plan = model.load_plan.explanation if model.load_plan is not None else ""
    wire.send(conn, "ready", device=str(model.execution_device), device_bytes=_device_bytes(model), plan=plan,
              pid=os.getpid())
    serve(conn, model, rank)
    if model.parallel.broken is None:     # after a failure the group may be half-way through a collective: exit
        model.parallel.close()
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
