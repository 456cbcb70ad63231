"""Progress of a whole generation: its phases, how much of the job is done, the time spent and an honest ETA.

``generate`` plans its work as ``Task``s before it starts: the reference encodes (text, CLIP, photo and first-pose
latents), then per segment the VAE encodes of its pose frames and known frames, its sampling steps, and the decode
of the segments it decodes itself. Every finished unit is reported as a ``Progress`` event.

* ``fraction`` weights every unit by a fixed prior cost in DiT passes (``PRIOR_COST``; a step costs as many passes
  as the guidance runs at it), so a bar built on it only moves forward.
* ``eta_s`` is measured: each phase's remaining work is timed at the rate measured for that phase (seconds per
  unit of prior cost); a phase not timed yet borrows the sampling rate scaled by its prior cost. The encodes are
  timed apart from the steps, so the first step's rate is not inflated by the VAE work before it. Before the first
  sampling step there is no rate to go on, and ``eta_s`` is None.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

PHASES = ("references", "encode", "sample", "decode")
PHASE_LABELS = {"references": "encoding the prompt and photo", "encode": "encoding the poses",
                "sample": "sampling", "decode": "decoding"}
# prior cost of one unit, in DiT passes at 81 frames (rough: the encoders run once, a segment's pose and known
# frames are three VAE encodes, a decode is about two passes); only the bar's weights, never the ETA once timed
PRIOR_COST = {"references": 2.0, "encode": 3.0, "decode": 2.0}


@dataclass(frozen=True)
class Task:
    """A stretch of work: ``phase`` of ``segment`` (-1 for the references) with one prior cost per unit."""

    phase: str
    segment: int
    unit_costs: tuple

    def __post_init__(self):
        if self.phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {self.phase!r}")

    @property
    def units(self) -> int:
        return len(self.unit_costs)


@dataclass(frozen=True)
class Progress:
    """One report: the task running (``phase``, ``segment`` of ``segments``, ``done`` of ``units``), the sampling
    steps finished over all segments (``step`` of ``steps``), the job's weighted ``fraction`` done, seconds
    ``elapsed`` and the estimated seconds left (``eta_s``, None until measurable), the step's ``preview``, and the
    job's memory ``plan`` (its ``explanation`` says what is placed where; None when the model places nothing)."""

    phase: str
    segment: int
    segments: int
    done: int
    units: int
    step: int
    steps: int
    fraction: float
    elapsed_s: float
    eta_s: Optional[float]
    preview: object = None
    plan: object = None

    @property
    def title(self) -> str:
        """The task, e.g. "segment 2/3: sampling"."""
        text = PHASE_LABELS[self.phase]
        return f"segment {self.segment + 1}/{self.segments}: {text}" if self.segment >= 0 and self.segments > 1 \
            else text

    @property
    def label(self) -> str:
        """The task and, while sampling, the step: "segment 2/3: sampling step 12/40"."""
        return self.title + (f" step {self.done}/{self.units}" if self.phase == "sample" else "")


def format_seconds(seconds: Optional[float]) -> str:
    """h:mm:ss or m:ss; "?" for None."""
    if seconds is None:
        return "?"
    seconds = max(int(round(seconds)), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class JobProgress:
    """Runs through ``tasks`` in order: ``start(phase, segment)`` begins the next task (it must be the next
    planned one), ``advance(preview=None)`` finishes one unit of it; both emit a ``Progress`` (carrying ``plan``,
    the job's memory plan)."""

    def __init__(self, tasks: list, emit: Optional[Callable[[Progress], None]] = None,
                 clock: Callable[[], float] = time.monotonic, plan=None):
        self.tasks = list(tasks)
        self.plan = plan
        self.emit = emit
        self.clock = clock
        self.total_cost = sum(sum(t.unit_costs) for t in self.tasks) or 1.0
        self.segments = 1 + max((t.segment for t in self.tasks), default=0)
        self.steps = sum(t.units for t in self.tasks if t.phase == "sample")
        self._started = clock()
        self._index = -1
        self._done = 0
        self._cost_done = 0.0
        self._step = 0
        self._unit_started = self._started
        self._timed = {phase: [0.0, 0.0] for phase in PHASES}   # seconds, prior cost, of the finished units

    @property
    def task(self) -> Task:
        return self.tasks[self._index]

    def start(self, phase: str, segment: int) -> None:
        if self._index >= 0 and self._done < self.task.units:
            raise RuntimeError(f"task {self.task.phase} of segment {self.task.segment} left unfinished")
        nxt = self._index + 1
        if nxt >= len(self.tasks) or (self.tasks[nxt].phase, self.tasks[nxt].segment) != (phase, segment):
            raise RuntimeError(f"{phase} of segment {segment} was not planned next")
        self._index, self._done = nxt, 0
        self._unit_started = self.clock()
        self._report(None)

    def advance(self, preview=None) -> None:
        task = self.task
        if self._done >= task.units:
            raise RuntimeError(f"{task.phase} of segment {task.segment} has only {task.units} units")
        now = self.clock()
        cost = task.unit_costs[self._done]
        timed = self._timed[task.phase]
        timed[0] += now - self._unit_started
        timed[1] += cost
        self._unit_started = now
        self._done += 1
        self._cost_done += cost
        if task.phase == "sample":
            self._step += 1
        self._report(preview)

    def eta(self) -> Optional[float]:
        """Seconds left, from the measured rates (None before any sampling step was timed)."""
        sample_s, sample_cost = self._timed["sample"]
        if sample_cost <= 0:
            return None
        fallback = sample_s / sample_cost
        left = 0.0
        for i, task in enumerate(self.tasks[max(self._index, 0):], start=max(self._index, 0)):
            remaining = task.unit_costs[self._done:] if i == self._index else task.unit_costs
            seconds, cost = self._timed[task.phase]
            rate = seconds / cost if cost > 0 else fallback
            left += rate * sum(remaining)
        return left

    def _report(self, preview) -> None:
        if self.emit is None:
            return
        task = self.task
        self.emit(Progress(phase=task.phase, segment=task.segment, segments=self.segments, done=self._done,
                           units=task.units, step=self._step, steps=self.steps,
                           fraction=min(self._cost_done / self.total_cost, 1.0),
                           elapsed_s=self.clock() - self._started, eta_s=self.eta(), preview=preview,
                           plan=self.plan))


def plan_tasks(segments: int, step_costs: tuple, decoded: tuple) -> list:
    """The tasks of a generation: the references, then per segment its encodes, its steps (one prior cost per
    step: the guidance passes it runs), and its decode when segment index is in ``decoded``."""
    tasks = [Task("references", -1, (PRIOR_COST["references"],))]
    for s in range(segments):
        tasks.append(Task("encode", s, (PRIOR_COST["encode"],)))
        tasks.append(Task("sample", s, tuple(float(c) for c in step_costs)))
        if s in decoded:
            tasks.append(Task("decode", s, (PRIOR_COST["decode"],)))
    return tasks
