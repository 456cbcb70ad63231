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


API_SCRIPT = """
import sys
import torch
import steadydancer_core as sd
from steadydancer_core import tiny_kit as kit

models, out = sys.argv[1], sys.argv[2]
files = sd.ModelFiles(dit=f"{models}/diffusion_models/{kit.DIT_FP8}", vae=f"{models}/vae/{kit.VAE_FILE}",
                      t5=f"{models}/text_encoders/{kit.T5_FP16}", clip_vision=f"{models}/clip_vision/{kit.CLIP_FILE}")
model = sd.load_model(files, parallel=sd.parallel_config(guidance_parallel=2))   # every rank; starts the group
g = torch.Generator().manual_seed(0)
photo, positive, negative = (torch.rand(*shape, generator=g) for shape in ((64, 48, 3), (9, 64, 48, 3), (9, 64, 48, 3)))
if not model.parallel.is_conditioning_rank:      # the other ranks need only the number of pose frames
    positive, negative = sd.FrameCount(len(positive)), sd.FrameCount(len(negative))
settings = sd.GenerationSettings(steps=3, max_area=48 * 64, length=9, pose_cfg=2.0, pose_cfg_start=0.0,
                                 pose_cfg_end=1.0, batch_passes=False)
result = sd.generate(model, photo, positive, negative, settings)
torch.save(result.latent, f"{out}.rank{model.parallel.rank}.pt")
"""


def test_the_python_api_under_torchrun(kit, tmp_path):
    """``load_model(files, parallel=...)`` on every rank (the group started from torchrun's environment), the other
    ranks pass ``FrameCount``; every rank gets the one-process latent."""
    import steadydancer_core as sd

    root, _ = kit
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(root / "models"), str(tmp_path / "latent")], capture_output=True,
                          text=True, timeout=TORCHRUN_TIMEOUT_S, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    m = root / "models"
    files = sd.ModelFiles(dit=str(m / "diffusion_models" / tiny_kit.DIT_FP8), vae=str(m / "vae" / tiny_kit.VAE_FILE),
                          t5=str(m / "text_encoders" / tiny_kit.T5_FP16),
                          clip_vision=str(m / "clip_vision" / tiny_kit.CLIP_FILE))
    g = torch.Generator().manual_seed(0)
    inputs = [torch.rand(*shape, generator=g) for shape in ((64, 48, 3), (9, 64, 48, 3), (9, 64, 48, 3))]
    settings = sd.GenerationSettings(steps=3, max_area=48 * 64, length=9, pose_cfg=2.0, pose_cfg_start=0.0,
                                     pose_cfg_end=1.0, batch_passes=False)
    want = sd.generate(sd.load_model(files), *inputs, settings).latent
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f"latent.rank{rank}.pt", weights_only=True), want)


def test_the_docs_list_every_parallel_option_with_its_flag_and_default():
    from steadydancer_core import PARALLEL

    text = (REPO_ROOT / "docs" / "multi_gpu.md").read_text(encoding="utf-8")
    for row in PARALLEL:
        shown = "off" if row.default is False else str(row.default)
        assert f"| `{row.name}` | `{row.flag}` |" in text and f"| {shown} |" in text, row.name
