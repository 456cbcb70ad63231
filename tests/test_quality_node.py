"""The SteadyDancer Quality Report node under the stand-in host with the tiny kit: it measures a video written by
DecodeVideo (read from the file) or its frames, writes the report beside a file in the output folder, and says
what is missing."""
from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

FAST = {"steps": 1, "max_area": 48 * 64}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    with comfy_standin.host_with_kit(tmp_path_factory.mktemp("comfy")) as (host, nodes, _):
        prompt = json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text())
        prompt = copy.deepcopy(prompt)
        ids = {v["class_type"]: k for k, v in prompt.items()}
        prompt[ids["SteadyDancerSampler"]]["inputs"].update(FAST)
        prompt[ids["DecodeVideo"]]["inputs"].update(output="file", filename_prefix="SteadyDancer/quality")
        del prompt[ids["SaveVideo"]]                                       # the file is DecodeVideo's own
        out = comfy_standin.run_prompt(prompt, nodes)["outputs"]
        yield host, nodes, ids, out


def test_report_on_the_written_video(run):
    host, nodes, ids, out = run
    latent, (_, video) = out[ids["SteadyDancerSampler"]][0], out[ids["DecodeVideo"]]
    aligned, model = out[ids["AlignPose"]][2], out[ids["LoadSteadyDancerModel"]][0]
    node = nodes["SteadyDancerQualityReport"]()
    done = node.report(identity_every=1, video=video, latent=latent, aligned_pose=aligned, model=model)
    plot, text = done["result"]
    report = json.loads(text)
    result = latent["steadydancer_result"]
    assert report["num_frames"] == result.num_frames and plot.ndim == 4 and plot.shape[-1] == 3
    assert report["summary"]["first_frame_psnr"] > 30                   # the photo, through the mp4 encoder
    assert report["start_gap"] is not None and "identity" in report["verdicts"]
    summary, written = done["ui"]["text"][0].splitlines()
    assert summary.startswith("first frame") and written.startswith("written beside the video: ")
    files = sorted(p.name for p in host.output_dir.rglob("quality_*"))
    assert any(f.endswith(".quality.json") for f in files) and any(f.endswith(".quality.png") for f in files)
    again = node.report(identity_every=1, video=video, latent=latent)      # never over the existing files
    assert "not written" in again["ui"]["text"][0] and "pose following" in " ".join(json.loads(
        again["result"][1])["notes"])


def test_report_on_frames_and_what_is_missing(run):
    host, nodes, ids, out = run
    node = nodes["SteadyDancerQualityReport"]()
    latent, model = out[ids["SteadyDancerSampler"]][0], out[ids["LoadSteadyDancerModel"]][0]
    decoded, _ = nodes["DecodeVideo"]().decode(model, latent, output="frames")
    exact = json.loads(node.report(identity_every=1, frames=decoded, latent=latent)["result"][1])
    assert exact["verdicts"]["first_frame"] == "good"                   # first_frame exact: frame 0 IS the photo
    photo = out[ids["LoadImage"]][0]
    frames = torch.rand(5, 64, 48, 3)
    report = json.loads(node.report(identity_every=1, frames=frames, photo=photo)["result"][1])
    assert report["num_frames"] == 5 and report["verdicts"]["first_frame"] == "bad"   # noise is not the photo
    with pytest.raises(ValueError, match="needs the video"):
        node.report(identity_every=1, photo=photo)
    with pytest.raises(ValueError, match="needs the photo"):
        node.report(identity_every=1, frames=frames)


def test_report_with_the_several_gpu_model_starts_no_worker(run):
    host, nodes, ids, out = run
    from steadydancer_core import ModelFiles, WorkerModel

    model = WorkerModel(ModelFiles("dit.safetensors", "vae.safetensors", "t5.safetensors", "clip.safetensors"))
    photo, frames = out[ids["LoadImage"]][0], torch.rand(3, 64, 48, 3)
    done = nodes["SteadyDancerQualityReport"]().report(identity_every=1, frames=frames, photo=photo, model=model)
    assert not model.running and model.pids == []
    assert "identity not measured" in done["ui"]["text"][0]
