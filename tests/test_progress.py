"""Whole-job progress: phases in order, a weighted fraction that only moves forward, and an ETA measured per phase
(the VAE encodes are not timed as sampling steps)."""
import pytest

from steadydancer_core.sampling.pipeline import generate
from steadydancer_core.sampling.progress import JobProgress, Task, format_seconds, plan_tasks
from helpers import build_tiny_model as _build_tiny_model, inputs as _inputs, settings as _settings


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_is_measured_per_phase():
    clock, events = Clock(), []
    tasks = plan_tasks(2, (2.0, 2.0, 1.0), decoded=(0,))
    assert [(t.phase, t.segment, t.units) for t in tasks] == [
        ("references", -1, 1), ("encode", 0, 1), ("sample", 0, 3), ("decode", 0, 1), ("encode", 1, 1),
        ("sample", 1, 3)]
    job = JobProgress(tasks, events.append, clock)
    job.start("references", -1)
    clock.now += 30.0                                     # slow encoders: never counted as sampling time
    job.advance()
    job.start("encode", 0)
    clock.now += 20.0
    job.advance()
    assert events[-1].eta_s is None                       # nothing sampled yet: no honest estimate
    job.start("sample", 0)
    clock.now += 10.0                                     # 5 s per DiT pass (the step ran 2 passes)
    job.advance(preview="p")
    last = events[-1]
    assert (last.phase, last.done, last.units, last.step, last.steps, last.preview) == ("sample", 1, 3, 1, 6, "p")
    # left: sample 0 (2 + 1 passes) at 5 s/pass; decode (prior 2 passes) at the sampling rate; encode 1 at its
    # measured 20 s; sample 1 (5 passes) at 5 s/pass
    assert last.eta_s == pytest.approx(15 + 10 + 20 + 25)
    assert last.label == "segment 1/2: sampling step 1/3" and last.title == "segment 1/2: sampling"
    with pytest.raises(RuntimeError, match="unfinished"):
        job.start("decode", 0)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and 0 < fractions[-1] < 1
    with pytest.raises(RuntimeError, match="not planned"):
        JobProgress(tasks).start("sample", 0)
    with pytest.raises(ValueError, match="phase"):
        Task("pose", 0, (1.0,))
    assert (format_seconds(None), format_seconds(75.4), format_seconds(3725)) == ("?", "1:15", "1:02:05")


def test_generate_reports_every_phase_of_the_job():
    model = _build_tiny_model()
    photo, pos, neg = _inputs(9)
    events, steps = [], []
    settings = _settings(steps=2, text_cfg=1.0, pose_cfg=0.0, segment_frames=5, segment_overlap=1, preview=True)
    result = generate(model, photo, pos, neg, settings, progress=events.append,
                      callback=lambda s, t, p: steps.append((s, t, p is not None)))
    assert len(result.segments) == 2
    assert steps == [(1, 4, True), (2, 4, True), (3, 4, True), (4, 4, True)]    # the step callback is unchanged
    starts = [(e.phase, e.segment) for e in events if e.done == 0]
    assert starts == [("references", -1), ("encode", 0), ("sample", 0), ("decode", 0), ("encode", 1),
                      ("sample", 1)]                      # the last segment is decoded by the caller (DecodeVideo)
    assert [e.fraction for e in events] == sorted(e.fraction for e in events) and events[-1].fraction == 1.0
    assert all(e.preview is not None for e in events if e.phase == "sample" and e.done > 0)
    assert all(e.preview is None for e in events if e.phase != "sample")
    assert events[-1].eta_s == pytest.approx(0.0, abs=1e-6) and events[-1].step == events[-1].steps == 4
