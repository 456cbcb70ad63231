"""End-to-end generation on tiny random networks (real DiT / VAE / umT5 / CLIP classes, tiny configs)."""
import pytest
import torch

from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.models.image_encoder import CLIPVisionTower, ImageEncoder
from steadydancer_core.models.image_encoder_config import CLIPVisionConfig
from steadydancer_core.models.text_encoder import TextEncoder, UMT5Encoder
from steadydancer_core.models.text_encoder_config import T5Config
from steadydancer_core.models.vae import WanVAE
from steadydancer_core.models.vae_config import VAEConfig
from steadydancer_core.runtime.bundle import SteadyDancerModel
from steadydancer_core.runtime.model_plan import plan_for_model
from steadydancer_core.runtime.options import LoaderSettings
from steadydancer_core.sampling import conditioning as cond
from steadydancer_core.sampling.guidance import Cancelled
from steadydancer_core.sampling.pipeline import GenerationSettings, decode, generate
from steadydancer_core.sampling.preview import latent_to_rgb
from steadydancer_core.sampling.defaults import WAN_I2V_NEGATIVE_PROMPT
from steadydancer_core.sampling.segments import (
    COLOR_GAIN_RANGE,
    color_match,
    plan_segments,
    resolve_length,
)

from helpers import SIZE, build_tiny_model as _build_tiny_model, inputs as _inputs, settings as _settings  # noqa: E402

@pytest.fixture(scope="module")
def tiny_model():
    return _build_tiny_model()


def test_pipeline_shapes_and_determinism(tiny_model):
    photo, pos, neg = _inputs(5)
    steps = []
    a = generate(tiny_model, photo, pos, neg, _settings(), callback=lambda s, t, p: steps.append((s, t)))
    b = generate(tiny_model, photo, pos, neg, _settings())
    c = generate(tiny_model, photo, pos, neg, _settings(seed=8))
    assert a.latent.shape == (1, 16, 2, SIZE // 8, SIZE // 8)
    assert (a.num_frames, a.height, a.width, a.notices) == (5, SIZE, SIZE, [])
    assert steps == [(1, 2), (2, 2)]
    assert torch.equal(a.latent, b.latent)
    assert not torch.allclose(a.latent, c.latent)
    video = decode(tiny_model, a)
    assert video.shape == (5, SIZE, SIZE, 3) and 0 <= video.min() and video.max() <= 1


def test_pipeline_batched_passes_match_sequential(tiny_model):
    photo, pos, neg = _inputs(5)
    a = generate(tiny_model, photo, pos, neg, _settings(batch_passes=False))
    b = generate(tiny_model, photo, pos, neg, _settings(batch_passes=True))
    assert torch.allclose(a.latent, b.latent, atol=1e-4)


def test_pipeline_first_frame_modes(tiny_model):
    photo, pos, neg = _inputs(5)
    clean = cond.encode_video(tiny_model.vae, cond.to_model_video(photo[None]), tile="off")[:, :1]
    model_mode = generate(tiny_model, photo, pos, neg, _settings(first_frame="model"))
    latent_mode = generate(tiny_model, photo, pos, neg, _settings(first_frame="latent"))
    exact_mode = generate(tiny_model, photo, pos, neg, _settings(first_frame="exact"))
    assert not torch.allclose(model_mode.latent[0, :, :1], clean, atol=1e-3)
    assert torch.allclose(latent_mode.latent[0, :, :1], clean, atol=1e-6)
    assert torch.allclose(exact_mode.latent[0, :, :1], clean, atol=1e-6)
    frames = decode(tiny_model, exact_mode)
    assert torch.equal(frames[0], photo)
    assert not torch.equal(decode(tiny_model, latent_mode)[0], photo)


def test_pipeline_long_video_in_segments(tiny_model):
    photo, pos, neg = _inputs(17)
    streamed = []
    settings = _settings(segment_frames=9, segment_overlap=5, first_frame="exact")
    result = generate(tiny_model, photo, pos, neg, settings, on_frames=lambda s, f: streamed.append((s, f)))
    assert [(s.start, s.num_frames, s.known_frames) for s in result.segments] == [(0, 9, 1), (4, 9, 5), (8, 9, 5)]
    assert all(s.latent.shape == (16, 3, SIZE // 8, SIZE // 8) for s in result.segments)
    first, *later = result.segments
    assert first.color_gain is None and first.color_offset is None and first.color_drift is None
    for seg in later:                                   # matched to the previous segment: a real correction
        assert seg.color_gain.shape == seg.color_offset.shape == seg.color_drift.shape == (3,)
        assert ((COLOR_GAIN_RANGE[0] <= seg.color_gain) & (seg.color_gain <= COLOR_GAIN_RANGE[1])).all()
        assert not torch.equal(seg.color_gain, torch.ones(3))
    worst = max(float(seg.color_drift.abs().max()) for seg in later)
    assert result.notices == [f"3 segments of up to 9 frames (overlap 5); largest colour drift at a seam "
                              f"{worst:.3f} (corrected)"]
    video = decode(tiny_model, result)
    assert video.shape == (17, SIZE, SIZE, 3)
    assert torch.equal(video[0], photo)
    starts = [s for s, _ in streamed]
    assert starts == [0, 4, 8] and sum(f.shape[0] for _, f in streamed) == 17
    assert torch.equal(torch.cat([f for _, f in streamed]), video)


def test_pipeline_frame_count_not_4n1_is_rounded_with_notice(tiny_model):
    photo, pos, neg = _inputs(7)
    result = generate(tiny_model, photo, pos, neg, _settings(steps=1))
    assert result.num_frames == 5 and result.latent.shape[2] == 2
    assert len(result.notices) == 1 and "7" in result.notices[0] and "5" in result.notices[0]
    assert decode(tiny_model, result).shape[0] == 5


def test_pipeline_cancel_and_preview(tiny_model):
    photo, pos, neg = _inputs(5)
    seen = []
    with pytest.raises(Cancelled):
        generate(tiny_model, photo, pos, neg, _settings(preview=True),
                 callback=lambda s, t, p: seen.append(p), should_cancel=lambda: len(seen) >= 1)
    assert len(seen) == 1 and seen[0].shape == (SIZE // 8, SIZE // 8, 3)


def test_pipeline_settings_validation():
    with pytest.raises(ValueError, match="segment_frames"):
        GenerationSettings(segment_frames=80)
    with pytest.raises(ValueError, match="segment_overlap"):
        GenerationSettings(segment_overlap=81)
    with pytest.raises(ValueError, match="first_frame"):
        GenerationSettings(first_frame="photo")
    with pytest.raises(ValueError, match="solver"):
        GenerationSettings(solver="ddim")
    s = GenerationSettings(sigmas=torch.tensor([1.0, 0.5, 0.0]), color_correction=1)
    assert s.sigmas == (1.0, 0.5, 0.0) and s.color_correction == 1.0
    assert GenerationSettings().effective_negative_prompt == WAN_I2V_NEGATIVE_PROMPT
    assert GenerationSettings(negative_prompt=" ").effective_negative_prompt == WAN_I2V_NEGATIVE_PROMPT
    assert GenerationSettings(negative_prompt="blurry").effective_negative_prompt == "blurry"
    assert GenerationSettings(seed=2 ** 64 - 1).seed == 2 ** 64 - 1
    for seed in (-1, 2 ** 64, 1.5, True):
        with pytest.raises(ValueError, match=r"^seed must be an integer from 0 to 2\*\*64-1, got "):
            GenerationSettings(seed=seed)


def test_pipeline_noise_sources_and_auto_shift(tiny_model):
    from steadydancer_core.sampling.noise import NoiseSource

    photo, pos, neg = _inputs(5)
    cpu = generate(tiny_model, photo, pos, neg, _settings(noise="cpu"))
    official = generate(tiny_model, photo, pos, neg, _settings(noise="official"))
    assert torch.equal(cpu.latent, official.latent)  # on a CPU device the two sources are one generator
    draws = NoiseSource("cpu", 3), NoiseSource("official", 3, "cpu")
    first = [d.draw((2, 3)) for d in draws]
    assert torch.equal(first[0], torch.randn(2, 3, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(first[0], first[1]) and not torch.equal(draws[0].draw((2, 3)), first[0])  # continues
    assert NoiseSource("cpu", 3, "meta").device.type == "cpu"  # cpu stays on the CPU whatever the device
    with pytest.raises(ValueError, match="noise"):
        GenerationSettings(noise="gpu")
    assert GenerationSettings(shift="auto", max_area=832 * 480).shift == 3.0
    assert GenerationSettings(shift="auto", max_area=1024 * 576).shift == 5.0
    assert GenerationSettings(shift="auto").shift == 5.0 and GenerationSettings(shift=4).shift == 4.0
    with pytest.raises(ValueError, match="shift"):
        GenerationSettings(shift="high")


def test_pose_resize_is_pil_bicubic_bit_for_bit():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 37, 23, 3), dtype=np.uint8)
    for size in ((16, 12), (50, 31)):  # shrink (PIL widens its support) and enlarge
        got = cond.resize_like_pil(torch.from_numpy(frames).float() / 255, size)
        want = np.stack([np.asarray(Image.fromarray(f).resize(size[::-1], Image.Resampling.BICUBIC)) for f in frames])
        assert got.shape == (2, *size, 3) and torch.equal(got, torch.from_numpy(want).float() / 255)
    same = torch.rand(1, 8, 8, 3)
    assert cond.resize_like_pil(same, (8, 8)) is same  # PIL returns a copy at the same size


def test_pipeline_pure_helpers():
    assert resolve_length(0, 81) == (81, [])
    assert resolve_length(10, 81)[0] == 9
    frames, notices = resolve_length(100, 80)
    assert frames == 77 and len(notices) == 2 and "80" in notices[0]
    with pytest.raises(ValueError, match="pose frames"):
        resolve_length(0, 0)
    assert plan_segments(81, 81, 9) == [(0, 81, 1)]
    plan = plan_segments(201, 81, 9)
    assert plan == [(0, 81, 1), (72, 81, 9), (144, 57, 9)]
    assert all((n - 1) % 4 == 0 for _, n, _ in plan)
    assert cond.target_size(1024, 576, 1024 * 576) == (1024, 576)
    assert cond.target_size(720, 1280, 480 * 832) == (464, 832)
    mask = cond.frame_mask(9, 5, 2, 2)
    assert mask.shape == (4, 3, 2, 2)
    assert mask[:, :2].eq(1).all() and mask[:, 2].eq(0).all()
    assert cond.frame_mask(81, 1, 1, 1)[:, 0].eq(1).all() and cond.frame_mask(81, 1, 1, 1)[:, 1:].eq(0).all()
    assert latent_to_rgb(torch.zeros(16, 2, 3, 4)).shape == (2, 3, 4, 3)
    frames, ref = torch.rand(3, 4, 4, 3) * 0.5, torch.rand(3, 4, 4, 3) * 0.5 + 0.2
    gain, offset, drift = color_match(frames, ref, 1.0)
    corrected = frames * gain + offset
    assert torch.allclose(corrected.mean((0, 1, 2)), ref.mean((0, 1, 2)), atol=1e-5)
    assert torch.allclose(drift, frames.mean((0, 1, 2)) - ref.mean((0, 1, 2)))


def test_pipeline_with_memory_plan_and_simulated_device(tiny_model):
    """Placement goes through offload.use_component; results equal the unplaced run (copies are exact)."""
    from steadydancer_core.runtime import offload

    photo, pos, neg = _inputs(5)
    reference = generate(tiny_model, photo, pos, neg, _settings(batch_passes=False))
    model = _build_tiny_model()
    model.settings = LoaderSettings(offload="block_swap", blocks_to_swap=2)
    model.load_plan = plan_for_model(model, 2, device="cpu")
    offloader = offload.attach_offloader(model, offload.Offloader.simulated())
    try:
        result = generate(model, photo, pos, neg, _settings(batch_passes=False))
    finally:
        offload.release_model(model)
    assert offloader.ledger.uploads > 0 and offloader.ledger.is_clean()
    assert result.memory_plan.tokens > 0 and result.memory_plan is not model.load_plan   # the job's own plan
    assert torch.equal(result.latent, reference.latent)


def test_images_outside_the_expected_range_are_rejected():
    good = torch.rand(2, 8, 8, 3)
    assert cond.as_frames(good, "photo").shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="got torch.uint8"):
        cond.as_frames((good * 255).to(torch.uint8), "photo")
    with pytest.raises(ValueError, match="divide 0..255 values by 255"):
        cond.as_frames(good * 255, "photo")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        cond.as_frames(torch.full((1, 4, 4, 3), float("nan")), "photo")
