"""Pose frame sources: generate() reads the pose frames one segment at a time, with the same numbers as tensors."""
import numpy as np
import pytest
import torch

from steadydancer_core import TensorPoseFrames, as_pose_frames, generate, resize_like_pil
from steadydancer_core.sampling.pose_source import read_resized
from test_pipeline import _build_tiny_model, _inputs, _settings


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
    segments = [(0, 8), (8, 9), (4, 12), (12, 13), (8, 16), (16, 17)]    # a segment's frames, 8 at a time
    assert lazy_pos.reads == [(0, 1)] + segments                         # first pose for CLIP / ref_c
    assert lazy_neg.reads == segments


def test_uint8_source_matches_the_float_frames(tiny_model):
    photo, pos, neg = _inputs(5)
    pos8, neg8 = (x.mul(255).round().div(255) for x in (pos, neg))
    reference = generate(tiny_model, photo, pos8, neg8, _settings())
    lazy = generate(tiny_model, photo, RecordingSource(pos, True), RecordingSource(neg, True), _settings())
    assert torch.equal(lazy.latent, reference.latent)


def test_read_resized_equals_resizing_the_whole_range():
    images = torch.rand(11, 20, 14, 3)
    src = as_pose_frames(images)
    assert torch.equal(read_resized(src, 2, 11, (10, 8)), resize_like_pil(images[2:], (10, 8)))
    assert torch.equal(read_resized(src, 0, 3, (20, 14)), images[:3])


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
