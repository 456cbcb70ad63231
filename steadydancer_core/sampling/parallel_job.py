"""What ``generate()`` does differently on the ranks of a parallel job; every hook is a no-op for a model without
``parallel`` (a ``runtime/parallel.ParallelRuntime``, used here only through its methods).

* ``parallel_job``: decorates ``generate``: the job starts in step on every rank; an error raised on one rank is
  posted, so every other rank stops with it (``Cancelled`` and ``NonFiniteLatentError`` happen on every rank at
  the same step and are not posted). A model that runs whole jobs in other processes (``generate_on_workers``, a
  ``workers.WorkerModel``) is handed the call here: the one place where ``generate`` runs elsewhere.
* ``shared(model, fn)``: rank 0 runs ``fn`` (the encoders, the VAE) and broadcasts its tensors; the other ranks
  receive them and never touch the encoders or the VAE (they need not hold them).
* ``agreed_cancel``: the caller's ``should_cancel``, agreed by all ranks before every step.
* ``decodes_here``: only rank 0 decodes frames (the others return the same latents, without frames).
* ``parallel_predictor``: the guidance-parallel predictor when the job has guidance groups.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

from .guidance import Cancelled, NonFiniteLatentError
from .guidance_parallel import GuidanceParallelPredictor, job_passes, pass_owners

AGREED_ERRORS = (Cancelled, NonFiniteLatentError)   # raised by every rank at the same step


def runtime_of(model):
    """The model's parallel runtime (``SamplingModel.parallel``), None for a single process."""
    return model.parallel


def parallel_job(fn):
    """Decorator for ``generate(model, ...)``: see the module docstring."""
    @functools.wraps(fn)
    def run(model, *args, **kwargs):
        elsewhere = getattr(model, "generate_on_workers", None)
        if elsewhere is not None:
            return elsewhere(*args, **kwargs)
        runtime = runtime_of(model)
        if runtime is None:
            return fn(model, *args, **kwargs)
        runtime.begin_job()
        try:
            return fn(model, *args, **kwargs)
        except AGREED_ERRORS:
            raise
        except BaseException as err:
            runtime.fail(err)
            raise
    return run


def shared(model, fn: Callable, kind: type = tuple):
    """``fn()`` (a tuple of tensors, or a dataclass of tensors of type ``kind``) computed on rank 0 and received by
    every rank; simply ``fn()`` without a parallel runtime."""
    runtime = runtime_of(model)
    if runtime is None:
        return fn()
    value = fn() if runtime.is_conditioning_rank else None
    if dataclasses.is_dataclass(kind):
        names = [f.name for f in dataclasses.fields(kind)]
        tensors = runtime.broadcast(None if value is None else [getattr(value, n) for n in names])
        return kind(**dict(zip(names, tensors)))
    return runtime.broadcast(value)


def agreed_cancel(model, should_cancel: Optional[Callable[[], bool]]) -> Optional[Callable[[], bool]]:
    """``should_cancel`` as every rank agrees on it: True on all ranks when it is True on any."""
    runtime = runtime_of(model)
    if runtime is None:
        return should_cancel
    return lambda: runtime.any_rank(should_cancel is not None and bool(should_cancel()))


def decodes_here(model) -> bool:
    runtime = runtime_of(model)
    return runtime is None or runtime.is_conditioning_rank


def parallel_predictor(model, job, predict):
    """``predict`` (a ``pipeline._Predictor``), or the guidance-parallel predictor around it."""
    runtime = runtime_of(model)
    if runtime is None or runtime.config.guidance == 1:
        return predict
    owners = pass_owners(job_passes(job.guidance, job.schedule.steps), runtime.config.guidance)
    return GuidanceParallelPredictor(predict, runtime, owners, model.dit.compute_dtype)
