"""The node, the CLI and the Python API make the same video from the same inputs when left on their defaults: their
defaults all come from the option tables. Only the steps and the area are lowered for speed, the same on all three.
"""
from __future__ import annotations

import sys

import cv2
import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

FAST = {"steps": 2, "max_area": 48 * 64}


def _defaults(cls) -> dict:
    """The widget defaults of a node (a combo without a default: its first choice)."""
    out = {}
    for name, entry in cls.INPUT_TYPES()["required"].items():
        kind, options = entry[0], entry[1] if len(entry) > 1 else {}
        if isinstance(kind, list):
            out[name] = options.get("default", kind[0] if kind else None)
        elif kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            out[name] = options["default"]
    return out


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    from steadydancer_core import tiny_kit

    root = tmp_path_factory.mktemp("kit")
    return tiny_kit.write_kit(root / "models", root / "inputs")


def _node_latent(root, kit_names: dict) -> torch.Tensor:
    with comfy_standin.host_with_kit(root) as (host, nodes, _):
        photo, mask = nodes["LoadImage"]().load_image("steadydancer_photo.png")
        video = nodes["LoadVideo"]().load("steadydancer_dance.mp4")[0]
        extract = nodes["ExtractPose"]
        pose = extract().extract(**{**_defaults(extract), "detector": kit_names["detector"],
                                    "pose_model": kit_names["pose_model"]}, video=video)["result"][0]
        align = nodes["AlignPose"]
        aligned = align().align(photo, pose, photo_mask=mask, **_defaults(align))["result"][2]
        loader = nodes["LoadSteadyDancerModel"]
        model = loader().load(**{**_defaults(loader), "dit_name": kit_names["dit"], "vae_name": kit_names["vae"],
                                 "t5_name": kit_names["t5"], "clip_vision_name": kit_names["clip_vision"],
                                 "lora_name": "None"})["result"][0]
        sampler = nodes["SteadyDancerSampler"]
        out = sampler().sample(model, photo, aligned_pose=aligned, photo_mask=mask,
                               **{**_defaults(sampler), **FAST})["result"][0]
        return out["steadydancer_result"].latent


def _cli_latent(kit, tmp_path, monkeypatch) -> torch.Tensor:
    from steadydancer_core import cli

    seen = {}
    real = cli.generate
    monkeypatch.setattr(cli, "generate", lambda *a, **k: seen.setdefault("result", real(*a, **k)))
    code = cli.main(["--photo", str(kit.photo), "--video", str(kit.video), "--models", str(kit.models_dir),
                     "--out", str(tmp_path / "cli.mp4"), "--steps", str(FAST["steps"]),
                     "--max-area", str(FAST["max_area"])])
    assert code == 0
    return seen["result"].latent


def _api_latent(kit, files) -> torch.Tensor:
    """What the Python API's documented example does, on defaults."""
    import pose
    import steadydancer_core as sd

    photo = cv2.cvtColor(cv2.imread(str(kit.photo)), cv2.COLOR_BGR2RGB)
    driving = sd.extract_driving_poses(kit.video, files["detector"], files["pose_model"])
    prepared = pose.prepare(photo, driving.sequence, driving.models)
    positive, negative = prepared.sources()
    model = sd.load_model(sd.ModelFiles(files["dit"], files["vae"], files["t5"], files["clip_vision"]))
    photo_t = torch.from_numpy(prepared.photo).float().div(255)
    return sd.generate(model, photo_t, positive, negative, sd.GenerationSettings(**FAST)).latent


def test_node_cli_and_api_agree_on_defaults(kit, tmp_path, monkeypatch):
    import steadydancer_core as sd
    from steadydancer_core import tiny_kit

    roles = ("dit", "vae", "t5", "clip_vision", "detector", "pose_model")
    names = {role: sd.preferred_file_name(role) for role in roles}
    files = {role: kit.models_dir / tiny_kit.kit_path(role if role not in ("dit", "t5") else f"{role}_fp8")
             for role in roles}
    assert all(files[role].name == names[role] for role in roles)     # the files --models picks
    api = _api_latent(kit, files)
    cli = _cli_latent(kit, tmp_path, monkeypatch)
    node = _node_latent(tmp_path / "comfy", names)
    assert api.shape == cli.shape == node.shape
    assert torch.equal(api, cli) and torch.equal(api, node)
