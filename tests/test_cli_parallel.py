"""The CLI under torchrun: 2 CPU ranks (gloo) write the video one process writes (guidance parallel), only rank 0
reads the inputs, prints progress and errors; a layout that does not match the processes is a one-line error."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from steadydancer_core import cli, tiny_kit, video_io

TORCHRUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("kit")
    files = tiny_kit.write_kit(root / "models", root / "inputs")
    args = ["--photo", str(files.photo), "--video", str(files.video), "--models", str(root / "models"),
            "--steps", "2", "--max-area", str(96 * 64), "--pose-cfg", "2.0", "--pose-cfg-start", "0",
            "--pose-cfg-end", "1", "--length", "0", "--target-fps", "0"]
    return root, args


def torchrun(args: list, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "steadydancer_core.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TORCHRUN_TIMEOUT_S, env=env,
                          cwd=REPO_ROOT)


def test_two_ranks_write_the_video_of_one_process(kit):
    root, args = kit
    one, two = root / "one.mp4", root / "two.mp4"
    assert cli.main(args + ["--out", str(one)]) == 0
    done = torchrun(args + ["--guidance-parallel", "2", "--out", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    a, fps_a = video_io.read_video(one)
    b, fps_b = video_io.read_video(two)
    assert torch.equal(a, b) and fps_a == fps_b
    output = done.stdout + done.stderr
    assert output.count("wrote 5 frames") == 1 and output.count("loading models") == 1   # rank 0 alone
    assert "[rank 1]" not in output


def test_an_error_of_rank_0_is_shown_once(kit):
    root, args = kit
    args = [a if a != str(root / "inputs" / tiny_kit.VIDEO_FILE) else str(root / "inputs" / tiny_kit.PHOTO_FILE)
            for a in args]                                          # a still image given as the driving video
    done = torchrun(args + ["--guidance-parallel", "2", "--out", str(root / "bad.mp4")])
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "error: --video" in line]
    assert len(errors) == 1 and "still image" in errors[0], done.stderr[-3000:]
    assert "[rank 1]" not in done.stderr and not (root / "bad.mp4").exists()


def test_a_layout_needs_its_number_of_processes(kit, caplog, capsys, monkeypatch):
    root, args = kit
    assert cli.main(args + ["--guidance-parallel", "2", "--out", str(root / "x.mp4")]) == 2
    assert "needs 2 processes: start it with torchrun --standalone --nproc_per_node 2" in caplog.text
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert cli.main(args + ["--sequence-parallel", "2", "--out", str(root / "x.mp4")]) == 2
    assert ("torchrun started 4 processes but --sequence-parallel 2 x --guidance-parallel 1 = 2; set "
            "--nproc_per_node 2") in caplog.text
    assert cli.main(args + ["--sequence-parallel", "3", "--out", str(root / "x.mp4")]) == 2
    assert "argument --sequence-parallel: sequence_parallel must be 1, 2, 4, 5 or 8" in capsys.readouterr().err
