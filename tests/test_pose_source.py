"""Pose frame sources: generate() reads the pose frames one segment at a time, with the same numbers as tensors."""
import numpy as np
import pytest
import torch

from steadydancer_core import TensorPoseFrames, as_pose_frames, generate
from steadydancer_core.sampling import conditioning as cond
from steadydancer_core.sampling.pose_source import read_pose_video
from helpers import clip_features, pose_latent
from helpers import build_tiny_model as _build_tiny_model, inputs as _inputs, settings as _settings


class RecordingSource:
    """A lazy source over a tensor that records the ranges read (uint8 = the tensor's 8-bit levels)."""

    def __init__(self, images, as_uint8=False):
        self.images, self.as_uint8, self.reads = images, as_uint8, []

    def __len__(self):
        return self.images.shape[0]

    def frames(self, start, stop):
        self.reads.append((start, stop))
        chunk = self.images[start:stop]
        return chunk.mul(255).round().to(torch.uint8).numpy() if self.as_uint8 else chunk.clone()


@pytest.fixture(scope="module")
def tiny_model():
    return _build_tiny_model()


def test_lazy_source_gives_the_same_latents_one_segment_at_a_time(tiny_model):
    photo, pos, neg = _inputs(17)
    settings = _settings(segment_frames=9, segment_overlap=5, first_frame="exact")
    reference = generate(tiny_model, photo, pos, neg, settings)
    lazy_pos, lazy_neg = RecordingSource(pos), RecordingSource(neg)
    lazy = generate(tiny_model, photo, lazy_pos, lazy_neg, settings)
    assert len(lazy.segments) == len(reference.segments) == 3
    for a, b in zip(lazy.segments, reference.segments):
        assert torch.equal(a.latent, b.latent)
    segments = [(i, i + 1) for start in (0, 4, 8) for i in range(start, start + 9)]  # one frame at a time
    assert lazy_pos.reads == [(0, 1)] + segments                         # first pose for CLIP / ref_c
    assert lazy_neg.reads == segments


def test_uint8_source_matches_the_float_frames(tiny_model):
    photo, pos, neg = _inputs(5)
    pos8, neg8 = (x.mul(255).round().div(255) for x in (pos, neg))
    reference = generate(tiny_model, photo, pos8, neg8, _settings())
    lazy = generate(tiny_model, photo, RecordingSource(pos, True), RecordingSource(neg, True), _settings())
    assert torch.equal(lazy.latent, reference.latent)


def test_read_pose_video_equals_resizing_the_whole_range():
    images = torch.rand(11, 20, 14, 3)
    src = as_pose_frames(images)
    for pil_hw, size in (((10, 8), (10, 8)), ((30, 22), (12, 8)), ((20, 14), (20, 14))):
        got = read_pose_video(src, 2, 11, pil_hw, size)
        assert got.shape == (3, 9, *size) and torch.equal(got, cond.pose_video(images[2:], pil_hw, size))
    same = read_pose_video(src, 0, 3, (20, 14), (20, 14))             # nothing to resize: the frames as they are
    assert torch.equal(same, cond.to_model_video(images[:3]))


def test_source_checks():
    images = torch.rand(3, 4, 4, 3)
    src = as_pose_frames(images)
    assert isinstance(src, TensorPoseFrames) and len(src) == 3 and torch.equal(src.frames(1, 3), images[1:])
    lazy = as_pose_frames(RecordingSource(images, True))
    assert lazy.frames(0, 2).dtype == torch.float32 and lazy.frames(0, 5).shape[0] == 3
    with pytest.raises(TypeError, match="pose frame source"):
        as_pose_frames(np.zeros((3, 4, 4, 3), np.uint8))
    bad = RecordingSource(images)
    bad.frames = lambda start, stop: images[start:stop] * 255
    with pytest.raises(ValueError, match="divide"):
        as_pose_frames(bad, "positive_pose").frames(0, 2)


def _dit_inputs(model, photo, pos, neg, settings):
    """condition, ref_c and clip_fea_c the DiT is given on the first step (forward pre-hook)."""
    seen = {}

    def hook(_module, args):
        if not seen:
            seen.update(condition=args[4][0].clone(), ref_c=args[6][0].clone(), clip_fea_c=args[8][:1].clone())

    handle = model.dit.register_forward_pre_hook(hook)
    try:
        generate(model, photo, pos, neg, settings)
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("mode", ["direct", "official"])
def test_pose_resize_modes(tiny_model, monkeypatch, mode):
    """direct: every pose frame is PIL-resized once, straight to the output size (never to the photo's); official:
    PIL to the photo's size, then torch bicubic to the output size. condition, ref_c and clip_fea_c follow the same
    rule, and equal the whole range resized at once."""
    g = torch.Generator().manual_seed(3)
    photo = torch.rand(96, 64, 3, generator=g)                        # larger than the output (48 x 32)
    pos, neg = torch.rand(5, 80, 40, 3, generator=g), torch.rand(5, 80, 40, 3, generator=g)
    settings = _settings(max_area=48 * 32, pose_resize=mode)
    size = cond.target_size(96, 64, settings.max_area)
    assert size == (48, 32)
    pil_hw = size if mode == "direct" else (96, 64)
    sizes = []
    real = cond.resize_like_pil
    monkeypatch.setattr(cond, "resize_like_pil", lambda frames, hw: sizes.append((frames.shape[0], tuple(hw)))
                        or real(frames, hw))
    seen = _dit_inputs(tiny_model, photo, pos, neg, settings)
    assert sizes and all(hw == pil_hw and n == 1 for n, hw in sizes)  # one frame at a time, to the mode's size
    monkeypatch.setattr(cond, "resize_like_pil", real)
    vae, clip = tiny_model.vae, tiny_model.image_encoder
    want_condition = pose_latent(vae, pos, (96, 64), size, "cpu", tiling="off", pose_resize=mode)
    first = real(pos[:1], pil_hw)
    want_ref_c = cond.build_reference(vae, cond.resize_bicubic(cond.to_model_video(first), size), 0.0, False)
    want_clip_c = clip_features(clip, first[0])
    assert torch.allclose(seen["condition"], want_condition, atol=1e-6, rtol=0)
    assert torch.allclose(seen["ref_c"], want_ref_c, atol=1e-6, rtol=0)
    assert torch.allclose(seen["clip_fea_c"], want_clip_c, atol=1e-6, rtol=0)
    other = pose_latent(vae, pos, (96, 64), size, "cpu", tiling="off",
                             pose_resize="official" if mode == "direct" else "direct")
    assert (seen["condition"] - other).abs().max() > 1e-3             # the two modes are different numbers


def test_pose_resize_is_validated():
    from steadydancer_core import SAMPLER, GenerationSettings

    assert SAMPLER.default("pose_resize") == GenerationSettings().pose_resize == "direct"
    assert GenerationSettings(pose_resize="official").pose_resize == "official"
    with pytest.raises(ValueError, match="pose_resize must be one of"):
        GenerationSettings(pose_resize="pil")
    with pytest.raises(ValueError, match="pose_resize must be one of"):
        cond.pose_pil_size((8, 8), (4, 4), "twice")
