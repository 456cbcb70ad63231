"""Native interop: the LATENT's ``samples`` follow ComfyUI's Wan 2.1 convention (raw latent of the whole video), a
plain VAE Decode of one segment gives DecodeVideo's frames, DecodeVideo decodes with a ComfyUI VAE, the frame rate
travels in the latent, and POSE_KEYPOINT (OpenPose JSON) drives AlignPose and the sampler.

The node tests run under the stand-in host (tests/comfy_standin.py: its VAE, VAE Decode and Wan21 latent format
behave as ComfyUI 0.8's) with the tiny kit; the sampler runs 2 steps at 48x64.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import sys

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402
import steadydancer_core as sd  # noqa: E402
from steadydancer_core.models.vae import WanVAE  # noqa: E402
from steadydancer_core.models.vae_config import VAEConfig  # noqa: E402
from steadydancer_core.sampling.segments import assemble_latent, latent_owners, plan_segments  # noqa: E402

FAST = {"steps": 2, "max_area": 48 * 64}
VAE_FILE = "wan_2.1_vae.safetensors"


# ------------------------------------------------------------------------------------------ the latent convention
def test_raw_latent_is_comfyuis_wan21_format():
    torch.manual_seed(0)
    normalised = torch.randn(1, 16, 3, 4, 6)
    host_format = comfy_standin.Wan21()
    raw = sd.to_raw_latent(normalised)
    torch.testing.assert_close(raw, host_format.process_out(normalised), rtol=0, atol=1e-6)
    torch.testing.assert_close(sd.from_raw_latent(raw), host_format.process_in(raw), rtol=0, atol=1e-6)
    torch.testing.assert_close(sd.from_raw_latent(raw), normalised, rtol=0, atol=1e-5)
    assert sd.to_raw_latent(normalised[0]).shape == (16, 3, 4, 6)     # [16, F, h, w] too
    with pytest.raises(ValueError, match=r"Wan 2.1 latent \[16, F, h, w\]"):
        sd.to_raw_latent(torch.zeros(1, 48, 3, 4, 6))


@pytest.mark.parametrize("frames, segment, overlap", [(161, 81, 9), (233, 81, 9), (41, 17, 1), (45, 21, 13)])
def test_every_latent_frame_has_one_owner(frames, segment, overlap):
    plan = plan_segments(frames, segment, overlap)
    owners = latent_owners(plan)
    assert owners[0][1] == 0 and owners[-1][2] == 1 + (frames - 1) // 4
    assert all(a[2] == b[1] and a[1] < a[2] for a, b in zip(owners, owners[1:]))
    for s, lo, hi in owners:
        start, n, known = plan[s]
        assert lo * 4 - 3 >= start or s == 0                 # a segment's own latent frame 0 is never used
        assert (hi - 1) * 4 <= start + n - 1                 # within the segment
        if s > 0:                                            # the overlap's first half belongs to the earlier one
            assert (lo * 4 - 1.5) > start + (known - 1) / 2 >= ((lo - 1) * 4 - 1.5)


def test_segments_are_assembled_by_owner():
    plan = plan_segments(153, 81, 9)
    assert plan == [(0, 81, 1), (72, 81, 9)] and latent_owners(plan) == [(0, 0, 20), (1, 20, 39)]
    segs = []
    for s, (start, n, known) in enumerate(plan):
        f = 1 + (n - 1) // 4
        latent = torch.stack([torch.full((16, 2, 2), 100.0 * s + i) for i in range(f)], dim=1)
        segs.append(sd.SegmentLatent(start=start, num_frames=n, known_frames=known, latent=latent))
    whole = assemble_latent(segs)
    assert whole.shape == (16, 39, 2, 2)
    labels = whole[0, :, 0, 0].tolist()
    assert labels == [float(i) for i in range(20)] + [100.0 + i for i in range(2, 21)]


def test_native_decode_of_a_long_latent_is_causal():
    """Decoding the assembled latent in one go gives, before the first seam, exactly the first segment's frames
    (the Wan VAE decodes causally); after it, the decoder carries the earlier segment's context across the seam."""
    torch.manual_seed(0)
    vae = WanVAE(VAEConfig.tiny()).eval()
    plan = plan_segments(17, 9, 5)
    segs = [sd.SegmentLatent(start=s, num_frames=n, known_frames=k, latent=torch.randn(16, 1 + (n - 1) // 4, 2, 2))
            for s, n, k in plan]
    whole = vae.decode(assemble_latent(segs)[None], tile="off")[0]
    first = vae.decode(segs[0].latent[None], tile="off")[0]
    assert len(plan) == 3 and whole.shape[1] == 17
    cut = plan[1][0]
    torch.testing.assert_close(whole[:, :cut], first[:, :cut], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- nodes, stand-in
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with comfy_standin.host_with_kit(tmp_path_factory.mktemp("comfy")) as (host, nodes, _):
        prompt = json.loads((REPO_ROOT / "workflows" / "api" / "steadydancer_basic_dance.json").read_text())
        ids = {v["class_type"]: k for k, v in prompt.items()}
        for key in FAST:
            prompt[ids["SteadyDancerSampler"]]["inputs"][key] = FAST[key]
        run = comfy_standin.run_prompt(prompt, nodes, {})
        yield host, nodes, prompt, ids, run["outputs"]


def _widgets(prompt, node_id, **changes):
    values = {k: v for k, v in prompt[node_id]["inputs"].items() if not isinstance(v, list)}
    values.update(changes)
    return values


def _sample(env, widgets=None, **inputs):
    host, nodes, prompt, ids, out = env
    args = dict(model=out[ids["LoadSteadyDancerModel"]][0], photo=out[ids["LoadImage"]][0], **inputs)
    return nodes["SteadyDancerSampler"]().sample(**args, **_widgets(prompt, ids["SteadyDancerSampler"],
                                                                    **(widgets or {})))


def test_native_vae_decode_of_samples_gives_decode_videos_frames(env):
    host, nodes, prompt, ids, out = env
    latent = out[ids["SteadyDancerSampler"]][0]
    result = latent["steadydancer_result"]
    assert len(result.segments) == 1
    raw = latent["samples"]
    assert raw.shape == (1, 16, 1 + (result.num_frames - 1) // 4, result.height // 8, result.width // 8)
    torch.testing.assert_close(comfy_standin.Wan21().process_in(raw), result.latent, rtol=0, atol=1e-5)
    vae = nodes["VAELoader"]().load_vae(VAE_FILE)[0]
    (native,) = nodes["VAEDecode"]().decode(vae, latent)
    pack, _ = nodes["DecodeVideo"]().decode(out[ids["LoadSteadyDancerModel"]][0], latent, "off", 256, 0.0)
    assert native.shape == pack.shape == (result.num_frames, result.height, result.width, 3)
    exact = result.first_frame == "exact"                   # DecodeVideo's frame 0 is then the photo itself
    if exact:
        assert torch.equal(pack[0], result.photo)
    torch.testing.assert_close(pack[exact:], native[exact:], rtol=0, atol=1e-5)
    with_vae, _ = nodes["DecodeVideo"]().decode(None, latent, "off", 256, 0.0, vae=vae)
    torch.testing.assert_close(with_vae[exact:], native[exact:], rtol=0, atol=1e-6)
    tiled, _ = nodes["DecodeVideo"]().decode(None, latent, "on", 64, 0.0, vae=vae)
    assert vae.calls[-1][0] == "decode_tiled" and vae.calls[-1][2:] == (8, 8, 2)
    assert tiled.shape == native.shape


def test_long_video_samples_cover_the_whole_length(env):
    host, nodes, prompt, ids, out = env
    pose_out = nodes["AlignPose"]().align(out[ids["LoadImage"]][0], out[ids["ExtractPose"]][0],
                                          **_widgets(prompt, ids["AlignPose"], image_outputs="all_frames",
                                                     canvas="1x"))
    positive, negative = (torch.cat([t, t.flip(0), t]) for t in pose_out["result"][:2])
    latent = _sample(env, positive_pose=positive, negative_pose=negative,
                     widgets=dict(length=13, segment_frames=9, segment_overlap=5))["result"][0]
    result = latent["steadydancer_result"]
    assert len(result.segments) == 2 and result.num_frames == 13
    assert latent["samples"].shape[2] == 1 + (13 - 1) // 4
    vae = nodes["VAELoader"]().load_vae(VAE_FILE)[0]
    (native,) = nodes["VAEDecode"]().decode(vae, latent)
    pack, _ = nodes["DecodeVideo"]().decode(None, latent, "off", 256, 0.0, vae=vae)
    assert native.shape == pack.shape == (13, result.height, result.width, 3)
    cut = result.segments[1].start                    # before the seam: the first segment's frames, unchanged
    exact = result.first_frame == "exact"             # (frame 0 is then the photo itself in DecodeVideo)
    torch.testing.assert_close(native[exact:cut], pack[exact:cut], rtol=0, atol=1e-6)


def test_fps_travels_in_the_latent(env):
    host, nodes, prompt, ids, out = env
    model = out[ids["LoadSteadyDancerModel"]][0]
    latent = out[ids["SteadyDancerSampler"]][0]
    extract_fps = out[ids["ExtractPose"]][2]
    assert latent["steadydancer_fps"] == pytest.approx(extract_fps)
    aligned = dataclasses.replace(out[ids["AlignPose"]][2], fps=12.5)
    latent = _sample(env, aligned_pose=aligned)["result"][0]
    assert latent["steadydancer_fps"] == 12.5
    _, video = nodes["DecodeVideo"]().decode(model, latent, "off", 256, 0.0)
    assert float(video.get_components().frame_rate) == 12.5
    _, video = nodes["DecodeVideo"]().decode(model, latent, "off", 256, 24.0)       # set: it wins
    assert float(video.get_components().frame_rate) == 24.0
    images = nodes["AlignPose"]().align(out[ids["LoadImage"]][0], out[ids["ExtractPose"]][0],
                                        **_widgets(prompt, ids["AlignPose"], image_outputs="all_frames",
                                                   canvas="1x"))["result"]
    latent = _sample(env, positive_pose=images[0], negative_pose=images[1])["result"][0]
    assert latent["steadydancer_fps"] == sd.WAN_FPS                 # IMAGE pose frames carry no rate: Wan's 16
    assert nodes["DecodeVideo"].INPUT_TYPES()["required"]["fps"][1]["default"] == 0.0


def test_pose_keypoint_from_extract_pose_drives_align_pose_and_the_sampler(env):
    host, nodes, prompt, ids, out = env
    photo = out[ids["LoadImage"]][0]
    driving, keypoints = out[ids["ExtractPose"]][0], out[ids["ExtractPose"]][3]
    assert len(keypoints) == len(driving.sequence) and json.loads(json.dumps(keypoints)) == keypoints
    align = nodes["AlignPose"]()
    settings = _widgets(prompt, ids["AlignPose"])
    via_pose = align.align(photo, driving, **settings)["result"][2]
    via_json = align.align(photo, pose_keypoint=keypoints, **settings)
    compact = via_json["result"][2]
    assert "POSE_KEYPOINT" in via_json["ui"]["text"][0] and compact.fps == sd.WAN_FPS
    assert len(compact) == len(via_pose)
    for a, b in zip(compact.aligned.frames, via_pose.aligned.frames):
        assert a.bodies.tobytes() == b.bodies.tobytes() and a.hands.tobytes() == b.hands.tobytes()
    reference = _sample(env, aligned_pose=via_pose)["result"][0]
    direct = _sample(env, pose_keypoint=keypoints)["result"][0]
    assert torch.equal(direct["samples"], reference["samples"])
    assert direct["steadydancer_fps"] == sd.WAN_FPS and "POSE_KEYPOINT" in direct["steadydancer_report"]
    with pytest.raises(ValueError, match="not both"):
        align.align(photo, driving, pose_keypoint=keypoints, **settings)
    with pytest.raises(ValueError, match="connect either 'pose'"):
        align.align(photo, **settings)
    with pytest.raises(ValueError, match="connect only one"):
        _sample(env, pose_keypoint=keypoints, aligned_pose=via_pose)


def test_decode_video_with_a_vae_decodes_other_wan_latents(env):
    host, nodes, prompt, ids, out = env
    vae = nodes["VAELoader"]().load_vae(VAE_FILE)[0]
    samples = copy.deepcopy(out[ids["SteadyDancerSampler"]][0]["samples"])
    frames, video = nodes["DecodeVideo"]().decode(None, {"samples": samples}, "off", 256, 0.0, vae=vae)
    (native,) = nodes["VAEDecode"]().decode(vae, {"samples": samples})
    torch.testing.assert_close(frames, native, rtol=0, atol=0)
    assert float(video.get_components().frame_rate) == sd.WAN_FPS
    wan22 = type("Wan22VAE", (), {"latent_channels": 48, "latent_dim": 3, "decode": lambda self, s: s})()
    with pytest.raises(ValueError, match="not a Wan 2.1 VAE .*48"):
        nodes["DecodeVideo"]().decode(None, {"samples": samples}, "off", 256, 0.0, vae=wan22)


def test_align_pose_says_when_keypoints_lack_body_points(env):
    host, nodes, prompt, ids, out = env
    keypoints = copy.deepcopy(out[ids["ExtractPose"]][3])
    first = next(f for f in keypoints if f["people"])
    first["people"][0]["pose_keypoints_2d"][10 * 3:11 * 3] = [0.0, 0.0, 0.0]   # R-ankle: not detected, no coordinates
    settings = _widgets(prompt, ids["AlignPose"])
    official = nodes["AlignPose"]().align(out[ids["LoadImage"]][0], pose_keypoint=keypoints, **settings)
    assert "set scale_fallback to 'visible'" in official["ui"]["text"][0]
    visible = nodes["AlignPose"]().align(out[ids["LoadImage"]][0], pose_keypoint=keypoints,
                                         **{**settings, "scale_fallback": "visible"})
    assert "scale_fallback" not in visible["ui"]["text"][0]


def test_decode_video_file_mode_with_a_vae(env):
    host, nodes, prompt, ids, out = env
    from steadydancer_core.video_io import probe_video

    latent = out[ids["SteadyDancerSampler"]][0]
    vae = nodes["VAELoader"]().load_vae(VAE_FILE)[0]
    run = nodes["DecodeVideo"]().decode(None, latent, "off", 256, 0.0, output="file", filename_prefix="interop/vae",
                                        vae=vae)
    entry = run["ui"]["images"][0]
    info = probe_video(host.output_dir / entry["subfolder"] / entry["filename"])
    assert info.frames == latent["steadydancer_result"].num_frames
    assert info.fps == pytest.approx(latent["steadydancer_fps"])
    assert vae.calls and vae.calls[-1][0] == "decode"


def test_pose_keypoint_on_the_sampler_aligns_to_the_photo_at_its_own_size(env):
    """A 400x640 photo resizes to 592x960, and 592x960 would resize again to 592x976: the sampler must align the
    poses to the photo before resizing it, as AlignPose does, or they land on the wrong canvas."""
    host, nodes, prompt, ids, out = env
    photo = torch.nn.functional.interpolate(out[ids["LoadImage"]][0].movedim(-1, 1), size=(400, 640),
                                            mode="bilinear").movedim(1, -1).clamp(0, 1)
    driving, keypoints = out[ids["ExtractPose"]][0], out[ids["ExtractPose"]][3]
    via_align = nodes["AlignPose"]().align(photo, pose_keypoint=keypoints, **_widgets(prompt, ids["AlignPose"]))
    args = dict(model=out[ids["LoadSteadyDancerModel"]][0], photo=photo,
                **_widgets(prompt, ids["SteadyDancerSampler"]))
    reference = nodes["SteadyDancerSampler"]().sample(aligned_pose=via_align["result"][2], **args)["result"][0]
    direct = nodes["SteadyDancerSampler"]().sample(pose_keypoint=keypoints, **args)["result"][0]
    assert torch.equal(direct["samples"], reference["samples"])
