"""``WorkerModel``: a SteadyDancer model whose networks live in worker processes, one per GPU, that stay alive
between jobs (the weights are loaded once). The process that holds it (ComfyUI, a script) is the client: it is not
a rank; it talks to each worker over a ``multiprocessing`` connection (``worker_protocol``).

* ``generate(model, ...)`` runs the whole job on the workers (``generate_on_workers``: the one place where
  ``generate`` hands a job elsewhere, see ``sampling/parallel_job.py``). Worker 0 asks the client for the pose
  frames as it encodes them (any pose source works, one frame in memory at a time), and streams the progress, the
  step callbacks and the decoded chunks back; ``should_cancel`` is polled here and a cancel is sent to worker 0,
  which all workers agree on at the next step (they stay usable). The result comes back as a ``GenerationResult``
  whose segments decoded while sampling stay in ``spill_dir`` (owned by the client's result).
* ``decode`` / ``iter_decoded(model, result)`` decode with worker 0's VAE (``model.vae``).
* The workers start on first use (or ``start()``) and stop on ``stop()``, when the model is dropped, and when the
  client exits (``weakref.finalize``, which also runs at exit); a worker whose client is gone (killed) exits by
  itself within a second. A job that fails stops the workers (their process group is unusable); the next use
  starts new ones.

Workers are started with ``subprocess`` (``python -m steadydancer_core.worker_main FD``, the package's folder on
``PYTHONPATH``) rather than ``multiprocessing``'s spawn, which would re-run the host's main script (ComfyUI's
``main.py``) in every worker. POSIX only (the connection is an inherited descriptor).
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import shutil
import weakref
from multiprocessing.connection import wait
from pathlib import Path
from typing import Callable, Optional

import torch

from . import worker_protocol as wire
from .runtime.launch import TORCHRUN_VARIABLES, file_bytes, require_gpus
from .runtime.options import LoaderSettings, ModelFiles
from .runtime.parallel import ParallelConfig
from .sampling.guidance import Cancelled
from .sampling.pose_source import as_pose_frames

log = logging.getLogger("steadydancer")

PACKAGE_ROOT = Path(__file__).resolve().parents[1]      # the folder that holds steadydancer_core/ and pose/
POLL_S = 0.05                  # how often the client looks at the cancel flag and the workers' health
START_TIMEOUT_S = 3600.0       # loading 14B weights from a slow disk can take many minutes
STOP_TIMEOUT_S = 10.0          # a worker asked to stop that has not exited by then is killed
ABANDON_TIMEOUT_S = 60.0       # after a client-side error: how long the workers get to stop the job


class WorkerError(RuntimeError):
    """A worker failed (the message is its error); the workers were stopped."""


class WorkerProcesses:
    """The running workers: processes, connections, the rendezvous folder. Holds no reference to the model, so a
    finalizer can stop them."""

    def __init__(self, procs: list, conns: list, folder: str):
        self.procs, self.conns, self.folder = procs, conns, folder
        self.ready: list = []

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """Ask every worker to stop, wait up to ``STOP_TIMEOUT_S``, kill the rest; idempotent."""
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                wire.send(conn, "stop")
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        shutil.rmtree(self.folder, ignore_errors=True)


def _worker_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(PACKAGE_ROOT) + (os.pathsep + path if path else "")
    return env


def start_workers(files: ModelFiles, settings: LoaderSettings, parallel: ParallelConfig,
                  timeout: float = START_TIMEOUT_S) -> WorkerProcesses:
    """Start ``parallel.world_size`` workers and wait until each has loaded its share (``WorkerError`` naming the
    first failure otherwise; nothing is left running then)."""
    world = parallel.world_size
    threads = max(1, (os.cpu_count() or 1) // world)
    folder = tempfile.mkdtemp(prefix="steadydancer-workers-")
    procs, conns = [], []
    group = WorkerProcesses(procs, conns, folder)
    try:
        for rank in range(world):
            ours, theirs = multiprocessing.Pipe()
            procs.append(subprocess.Popen([sys.executable, "-m", "steadydancer_core.worker_main", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), env=_worker_env(), stdin=subprocess.DEVNULL))
            theirs.close()
            conns.append(ours)
            wire.send(ours, "start", rank=rank, world=world, init=f"file://{folder}/rendezvous", parent=os.getpid(),
                      threads=threads, files=wire.to_wire(files), loader=wire.to_wire(settings),
                      parallel=wire.to_wire(parallel))
        ready: dict = {}
        deadline = time.monotonic() + timeout
        while len(ready) < world:
            if time.monotonic() > deadline:
                raise WorkerError(f"the workers did not load the model within {timeout:.0f} s")
            for conn in wait([c for r, c in enumerate(conns) if r not in ready], timeout=POLL_S):
                rank = conns.index(conn)
                msg = _receive(group, rank)
                if msg["op"] == "error":
                    raise WorkerError(f"worker {rank} could not load the model: {msg['message']}")
                ready[rank] = msg
            _check_alive(group, ready)
        group.ready = [ready[r] for r in range(world)]
        return group
    except BaseException:
        group.stop()
        raise


def _receive(group: WorkerProcesses, rank: int) -> dict:
    try:
        return wire.receive(group.conns[rank])
    except (EOFError, OSError):
        code = group.procs[rank].wait()
        raise WorkerError(f"worker {rank} stopped unexpectedly (exit code {code}); see its output above") from None


def _check_alive(group: WorkerProcesses, done=()) -> None:
    for rank, proc in enumerate(group.procs):
        if rank not in done and proc.poll() is not None and not group.conns[rank].poll():
            raise WorkerError(f"worker {rank} stopped unexpectedly (exit code {proc.returncode}); see its output "
                              "above")


class RemoteVAE:
    """Worker 0's VAE, as ``decode`` / ``iter_decoded`` use a model's VAE: ``decode(latent, tile)``."""

    def __init__(self, owner: "WorkerModel"):
        self._owner = weakref.ref(owner)

    def decode(self, latent: torch.Tensor, tile="auto") -> torch.Tensor:
        """Normalised latent [B, 16, t, h, w] -> video [B, 3, T, H, W] in [-1, 1] (on the CPU)."""
        return self._owner().decode_on_worker(latent, tile)


class WorkerModel:
    """See the module docstring. files / settings: what each worker loads (``load_model``); parallel: the layout
    (``parallel.world_size`` workers); before_use(model): called before every job and decode (a host makes room
    on its GPU and books the workers: ``nodes/multi_gpu_nodes.py``); ``working_bytes``: the last job plan's
    activations on worker 0 (what such a host should keep free besides the weights)."""

    dit = text_encoder = image_encoder = None
    parallel = None                    # the client is no rank: generate hands the whole job to the workers

    def __init__(self, files: ModelFiles, settings: Optional[LoaderSettings] = None,
                 parallel: Optional[ParallelConfig] = None,
                 before_use: Optional[Callable[["WorkerModel"], None]] = None):
        if not isinstance(files, ModelFiles):
            raise ValueError(f"files must be a ModelFiles, got {type(files).__name__}")
        self.files = files
        self.settings = settings if settings is not None else LoaderSettings()
        self.config = parallel if parallel is not None else ParallelConfig()
        if not isinstance(self.settings, LoaderSettings) or not isinstance(self.config, ParallelConfig):
            raise ValueError("settings must be a LoaderSettings and parallel a ParallelConfig")
        require_gpus(self.config)                     # before any worker starts
        self.before_use = before_use
        self.vae = RemoteVAE(self)
        self.working_bytes = 0
        self._box: list = [None]              # the running WorkerProcesses (a box the finalizer can read)
        self._finalizer = weakref.finalize(self, _stop_box, self._box)

    # --- what sampling and decoding read of a model ------------------------------------------------------------
    @property
    def execution_device(self) -> torch.device:
        return torch.device("cpu")         # what the client hands over and gets back lives in its memory

    def plan_job(self, width: int, height: int, frames: int, guidance_passes: int):
        return None                        # worker 0 plans each job for its rank

    def use(self, name: str, plan=None):
        self.make_ready()
        return contextlib.nullcontext()

    # --- the workers ---------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        group = self._box[0]
        return group is not None and group.alive

    @property
    def pids(self) -> list:
        group = self._box[0]
        return [p.pid for p in group.procs] if group is not None else []

    @property
    def device_bytes(self) -> int:
        """What worker 0 holds on its device (the model's files' size before the workers started)."""
        group = self._box[0]
        if group is not None and group.ready:
            return int(group.ready[0]["device_bytes"])
        return sum(file_bytes(p) for p in (self.files.dit, self.files.vae, self.files.t5, self.files.clip_vision))

    def describe(self) -> str:
        """One line per worker: its device and load-time memory plan."""
        group = self._box[0]
        if group is None or not group.ready:
            return f"{self.config.world_size} workers ({self.config.describe()}), not running"
        lines = [f"{self.config.world_size} workers ({self.config.describe()})"]
        lines += [f"worker {r} on {m['device']} (pid {m['pid']}): {m['plan']}" for r, m in enumerate(group.ready)]
        return "\n".join(lines)

    def start(self) -> None:
        """Start the workers (each loads its share of the model) unless they are running."""
        if self.running:
            return
        self.stop()
        self._box[0] = start_workers(self.files, self.settings, self.config)

    def stop(self) -> None:
        """Stop the workers (idempotent); the next use starts them again."""
        _stop_box(self._box)

    def make_ready(self) -> None:
        """Before a job or a decode: the host's ``before_use`` (which may start the workers itself), then
        ``start``."""
        if self.before_use is not None:
            self.before_use(self)
        self.start()

    # --- jobs --------------------------------------------------------------------------------------------------
    def generate_on_workers(self, photo, positive_pose, negative_pose, settings, callback=None, should_cancel=None,
                            on_frames=None, progress=None, spill_dir=None):
        """``generate``'s job on the workers (same arguments and result; see ``sampling/pipeline.generate``)."""
        positive = as_pose_frames(positive_pose, "positive_pose")
        negative = as_pose_frames(negative_pose, "negative_pose")
        photo = torch.as_tensor(photo).detach().float().cpu().contiguous()
        self.make_ready()
        group = self._box[0]
        job = dict(photo=photo, positive_frames=len(positive), negative_frames=len(negative),
                   settings=wire.to_wire(settings), spill_dir=None if spill_dir is None else str(spill_dir),
                   progress=progress is not None, callback=callback is not None, on_frames=on_frames is not None)
        for conn in group.conns:
            wire.send(conn, "job", **job)
        job = _Job(group, {"positive": positive, "negative": negative}, callback, on_frames, progress)
        try:
            result = job.run(should_cancel)
        except (Cancelled, WorkerError):
            if not job.usable:
                self.stop()
            raise
        except BaseException:
            if not job.abandon():
                self.stop()
            raise
        if result.memory_plan is not None:
            self.working_bytes = int(result.memory_plan.activation_bytes)
        return result

    def decode_on_worker(self, latent: torch.Tensor, tile) -> torch.Tensor:
        """Worker 0's VAE decode of one latent; reached through ``use("vae")``, which readied the workers."""
        group = self._box[0]
        wire.send(group.conns[0], "decode", latent=latent.detach().float().cpu().contiguous(), tile=tile)
        while True:
            if wait([group.conns[0]], timeout=POLL_S):
                msg = _receive(group, 0)
                if msg["op"] == "decoded":
                    return msg["video"]
                if msg["op"] == "error":
                    raise WorkerError(f"worker 0 could not decode: {msg['message']}")
            else:
                _check_alive(group)


class _Job:
    """The client's side of one job: serves worker 0's pose requests, forwards its reports, watches the cancel flag
    and the workers, collects the result."""

    def __init__(self, group: WorkerProcesses, sources: dict, callback, on_frames, progress):
        self.group, self.sources = group, sources
        self.callback, self.on_frames, self.progress = callback, on_frames, progress
        self.pending = set(range(len(group.procs)))
        self.cancel_sent = False
        self.usable = True
        self.result = self.failure = self.cancelled = None

    def _cancel(self) -> None:
        if not self.cancel_sent:
            wire.send(self.group.conns[0], "cancel")
            self.cancel_sent = True

    def _step(self, serve: bool) -> None:
        conns = self.group.conns
        for conn in wait([conns[r] for r in self.pending], timeout=POLL_S):
            rank = conns.index(conn)
            msg = _receive(self.group, rank)
            self._handle(rank, msg, serve)
        _check_alive(self.group, set(range(len(conns))) - self.pending)

    def _handle(self, rank: int, msg: dict, serve: bool) -> None:
        op = msg["op"]
        if op == "pose":          # served while abandoning too (the job then reaches its next step and stops)
            try:
                frames = self.sources[msg["which"]].frames(msg["start"], msg["stop"]).float().contiguous()
            except Exception:
                wire.send(self.group.conns[0], "frames", frames=None)   # worker 0 fails the job, the workers exit
                if serve:
                    raise
                return
            wire.send(self.group.conns[0], "frames", frames=frames)
        elif op == "progress" and serve:
            self.progress(wire.progress_from_wire(msg["progress"]))
        elif op == "step" and serve:
            self.callback(msg["step"], msg["total"], msg["preview"])
        elif op == "chunk" and serve:
            self.on_frames(msg["start"], msg["frames"])
        elif op in ("result", "done", "cancelled", "error"):
            self.pending.discard(rank)
            if op == "result":
                self.result = wire.result_from_wire(msg["result"])
            elif op == "cancelled":
                self.cancelled = msg["message"]
            elif op == "error":
                self.usable = False
                self.failure = self.failure or f"worker {rank}: {msg['message']}"

    def run(self, should_cancel) -> object:
        try:
            while self.pending:
                if should_cancel is not None and not self.cancel_sent and should_cancel():
                    self._cancel()
                self._step(serve=True)
        except WorkerError:
            self.usable = False
            raise
        if self.failure is not None:
            raise WorkerError(self.failure)
        if self.cancelled is not None:
            if self.result is not None and self.result.decoded is not None:
                self.result.decoded.close()
            raise Cancelled(self.cancelled)
        return self.result

    def abandon(self) -> bool:
        """After an error on the client's side (e.g. ComfyUI's progress hook raising on Interrupt): cancel the job
        and wait for the workers to stop it at their next step, still answering pose requests but forwarding no
        reports. Returns whether the workers are still usable."""
        try:
            self._cancel()
            deadline = time.monotonic() + ABANDON_TIMEOUT_S
            while self.pending and time.monotonic() < deadline:
                self._step(serve=False)
        except (WorkerError, OSError, EOFError):
            return False
        if self.result is not None and self.result.decoded is not None:
            self.result.decoded.close()
        return not self.pending and self.usable


def _stop_box(box: list) -> None:
    group, box[0] = box[0], None
    if group is not None:
        group.stop()
