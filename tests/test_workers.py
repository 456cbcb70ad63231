"""``WorkerModel``: worker processes (2 CPU workers, gloo) that keep the model between jobs. The job's latent is
the single-process one (guidance parallel, passes unbatched in both), progress is forwarded, a cancel stops the
job and keeps the workers, decoding uses worker 0's VAE, and no worker outlives its model, its stop, a failed
start or a killed client."""
from __future__ import annotations

import dataclasses
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import steadydancer_core as sd
from conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the workers need POSIX descriptor passing")
GONE_S = 15.0


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from steadydancer_core import tiny_kit

    root = tmp_path_factory.mktemp("kit")
    tiny_kit.write_kit(root / "models")
    m = root / "models"
    return sd.ModelFiles(dit=str(m / "diffusion_models" / tiny_kit.DIT_FP8), vae=str(m / "vae" / tiny_kit.VAE_FILE),
                         t5=str(m / "text_encoders" / tiny_kit.T5_FP16),
                         clip_vision=str(m / "clip_vision" / tiny_kit.CLIP_FILE))


def _inputs():
    g = torch.Generator().manual_seed(0)
    photo = torch.rand(64, 48, 3, generator=g)
    return photo, torch.rand(9, 64, 48, 3, generator=g), torch.rand(9, 64, 48, 3, generator=g)


SETTINGS = sd.GenerationSettings(steps=3, max_area=48 * 64, length=9, pose_cfg=2.0, pose_cfg_start=0.0,
                                 pose_cfg_end=1.0, batch_passes=False)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids, timeout: float = GONE_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.05)
    return False


def children() -> set:
    """PIDs of this process's child processes (Linux; empty elsewhere)."""
    found = set()
    for task in Path("/proc/self/task").glob("*"):
        try:
            found |= {int(p) for p in (task / "children").read_text().split()}
        except OSError:
            pass
    return found


def test_two_workers_give_the_one_process_result_and_keep_it_across_jobs(kit):
    photo, pos, neg = _inputs()
    local = sd.load_model(kit)
    want = sd.generate(local, photo, pos, neg, SETTINGS)
    model = sd.WorkerModel(kit, parallel=sd.parallel_config(guidance_parallel=2))
    try:
        reports = []
        got = sd.generate(model, photo, pos, neg, SETTINGS, progress=reports.append)
        pids = model.pids
        assert len(pids) == 2 and all(alive(p) for p in pids) and model.running
        assert torch.equal(got.latent, want.latent)
        assert [r.fraction for r in reports] == sorted(r.fraction for r in reports) and reports[-1].fraction == 1.0
        assert got.memory_plan.explanation.startswith("2 guidance groups x 1 sequence rank")
        assert torch.equal(sd.decode(model, got), sd.decode(local, want))      # worker 0's VAE

        # asked before the job starts: the cancel reaches worker 0 before its first step, whatever the timing
        with pytest.raises(sd.Cancelled, match="before step 1/3"):
            sd.generate(model, photo, pos, neg, SETTINGS, should_cancel=lambda: True)
        assert model.pids == pids and model.running, "a cancel keeps the workers"

        class Broken:                              # a pose source failing while worker 0 encodes
            def __len__(self):
                return 9

            def frames(self, start, stop):
                if start >= 3:
                    raise ValueError("pose frame 3 is damaged")
                return pos[start:stop]

        with pytest.raises(ValueError, match="pose frame 3 is damaged"):
            sd.generate(model, photo, Broken(), neg, SETTINGS)
        assert not model.running and wait_gone(pids), "a failed job stops the workers"
        again = sd.generate(model, photo, pos, neg, SETTINGS)            # new workers
        assert torch.equal(again.latent, want.latent) and len(model.pids) == 2
    finally:
        pids = model.pids
        del model
        gc.collect()
    assert wait_gone(pids), "dropping the model stops its workers"
    assert not children() & set(pids)


def test_a_worker_that_cannot_load_stops_them_all_with_one_line(kit):
    before = children()
    bad = dataclasses.replace(kit, dit=kit.vae)                  # the VAE given as the DiT
    model = sd.WorkerModel(bad)                                   # one worker: the same start and failure path
    with pytest.raises(sd.WorkerError, match=r"^worker 0 could not load the model: .*VAE") as info:
        model.start()
    assert "\n" not in str(info.value)
    assert not model.running and model.pids == []
    assert wait_gone(children() - before)


def test_workers_exit_when_their_client_is_killed(kit, tmp_path):
    """The client process is SIGKILLed (no clean-up runs): its workers notice and exit by themselves."""
    script = textwrap.dedent(f"""
        import sys, steadydancer_core as sd
        files = sd.ModelFiles(dit={kit.dit!r}, vae={kit.vae!r}, t5={kit.t5!r}, clip_vision={kit.clip_vision!r})
        model = sd.WorkerModel(files)
        model.start()
        print(*model.pids, flush=True)
        sys.stdin.read()
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    client = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                              text=True)
    try:
        line = client.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 1 and all(alive(p) for p in pids), line
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    assert wait_gone(pids)
