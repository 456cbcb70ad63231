"""Step caching (TeaCache / MagCache style): the policy on its own, the DiT's block-stack hook, and generation with
the cache on the tiny networks (threshold 0 is exact, skips rise with the threshold, block swap, batched passes,
long videos, 4-step distill runs)."""
import pytest
import torch

from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.sampling.guidance import COND, UNCOND_CONDITION, UNCOND_TEXT
from steadydancer_core.sampling.pipeline import GenerationSettings, generate
from steadydancer_core.sampling.step_cache import (
    MAGCACHE_STEPS,
    MAGCACHE_WAN21_I2V,
    TEACACHE_WAN21_I2V_E0,
    StepCache,
    calibration_for,
    magcache_ratios,
    make_step_cache,
    resample_nearest,
)
from steadydancer_core.runtime.options import LoaderSettings
from helpers import SIZE, build_tiny_model as _build_tiny_model, inputs as _inputs, settings as _settings


# --- the policy ---------------------------------------------------------------------------------------------------

def _smooth(t):
    """A stand-in timestep modulation that changes by about 1e-3 (relative L1) per step, like a trained one."""
    return torch.linspace(1.0, 2.0, 8) * (1.0 + t / 20000.0)


def _run_policy(cache: StepCache, passes_at=lambda step: (COND, UNCOND_TEXT), timesteps=None):
    """Drive ``cache`` like the predictor does: decide, and store a residual after every computed pass."""
    timesteps = timesteps or [1000 - 20 * i for i in range(cache.steps)]
    skipped = []
    for step in range(cache.steps):
        for p in passes_at(step):
            if cache.decide(step, timesteps[step], p):
                skipped.append((step, p))
                assert cache.residual(p) is not None
            else:
                cache.store(p, torch.full((4, 2), float(step)))
    return skipped


def _policy(mode, threshold, steps=40, keep_first=5, keep_last=1, max_skip=2, area=832 * 480):
    return make_step_cache(mode, threshold, keep_first, keep_last, max_skip, steps, area,
                           indicator=_smooth if mode == "teacache" else None)


def test_published_calibrations_are_complete():
    assert set(TEACACHE_WAN21_I2V_E0) == set(MAGCACHE_WAN21_I2V) == {"480p", "720p"}
    assert all(len(c) == 5 for c in TEACACHE_WAN21_I2V_E0.values())
    assert all(len(r) == 2 * MAGCACHE_STEPS and r[:2] == (1.0, 1.0) for r in MAGCACHE_WAN21_I2V.values())
    assert calibration_for(832 * 480) == calibration_for(1024 * 576) == "480p"
    assert calibration_for(1280 * 720) == "720p"
    assert resample_nearest(tuple(range(40)), 4) == (0, 13, 26, 39)      # MagCache's nearest resampling
    assert resample_nearest((1, 2, 3), 1) == (3,)
    cond, uncond = magcache_ratios("480p", 40)
    assert cond[1] == 0.98783 and uncond[1] == 0.98993 and len(magcache_ratios("720p", 7)[0]) == 7


@pytest.mark.parametrize("mode", ["teacache", "magcache"])
def test_skips_rise_with_the_threshold_and_respect_the_guards(mode):
    assert _policy(mode, 0.0) is None and make_step_cache("off", 0.5, 5, 1, 2, 40, 1) is None
    counts = []
    for threshold in (0.05, 0.12, 0.2, 0.4, 10.0):
        cache = _policy(mode, threshold)
        skipped = _run_policy(cache)
        counts.append(len(skipped))
        assert cache.skipped == len(skipped) and cache.computed + cache.skipped == 80
        steps = {s for s, _ in skipped}
        assert not steps & set(range(5)) and 39 not in steps                 # keep_first 5, keep_last 1
        for p in (COND, UNCOND_TEXT):                                         # at most max_skip in a row
            run = 0
            for step in range(40):
                run = run + 1 if (step, p) in skipped else 0
                assert run <= 2
    assert counts == sorted(counts) and counts[0] < counts[-1] and counts[-1] > 0
    assert counts[-1] == 2 * 23                       # 34 free steps: 2 skipped in every 3 (max_skip 2), both passes


@pytest.mark.parametrize("mode", ["teacache", "magcache"])
def test_defaults_skip_nothing_at_four_steps_and_a_late_pass_starts_computed(mode):
    # the distill LoRA's 4 steps: keep_first 5 protects every step
    assert _run_policy(_policy(mode, 10.0, steps=4)) == []
    # the negative-pose pass joins at step 10 and leaves at step 20: its first step is computed, and it is never
    # skipped on a step after one it missed
    passes = lambda step: (COND, UNCOND_CONDITION) if 10 <= step < 20 else (COND,)  # noqa: E731
    skipped = _run_policy(_policy(mode, 10.0, keep_first=0, keep_last=0), passes)
    assert (10, UNCOND_CONDITION) not in skipped and any(p == UNCOND_CONDITION for _, p in skipped)


def test_teacache_accumulates_the_rescaled_distance():
    cache = _policy("teacache", 0.3, steps=10, keep_first=1, keep_last=0, max_skip=100)
    skipped = _run_policy(cache, passes_at=lambda step: (COND,))
    # about 0.13 per step (the 480p polynomial near 0): skip while the sum is < 0.3, i.e. 2 skips then a compute
    assert [s for s, _ in skipped] == [1, 2, 4, 5, 7, 8]
    with pytest.raises(ValueError, match="indicator"):
        StepCache("teacache", 0.3, 1, 0, 2, 10)


# --- the DiT hook -------------------------------------------------------------------------------------------------

def test_block_stack_hook_runs_or_replaces_the_blocks():
    torch.manual_seed(0)
    dit = SteadyDancerDiT(DiTConfig.tiny()).eval()
    c = dit.config
    b, f, h, w = 2, 2, 4, 4
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(b, c.out_dim, f, h, w, generator=g), torch.tensor([500]),
            torch.randn(b, 7, c.text_dim, generator=g), torch.randn(b, c.y_channels, f, h, w, generator=g),
            torch.randn(b, c.condition_channels, f, h, w, generator=g), torch.randn(b, c.in_dim, 1, h, w, generator=g),
            torch.randn(b, c.in_dim, 1, h, w, generator=g), torch.randn(b, c.clip_tokens, c.clip_dim, generator=g),
            torch.randn(b, c.clip_tokens, c.clip_dim, generator=g))
    with torch.no_grad():
        plain = dit(*args)
        seen = {}

        def record(run, tokens, keep):
            out = run(tokens)
            seen["residual"] = out - tokens[:, :keep]
            seen["shapes"] = (tuple(tokens.shape), tuple(out.shape), keep)
            return out

        assert torch.equal(dit(*args, block_stack=record), plain)
        (tokens_shape, out_shape, keep) = seen["shapes"]
        assert tokens_shape[1] == keep + 2 * (h // 2) * (w // 2) and out_shape == (b, keep, c.dim)
        reused = dit(*args, block_stack=lambda run, tokens, keep: tokens[:, :keep] + seen["residual"])
        assert torch.allclose(reused, plain, atol=1e-5)
        e, e6 = dit.time_embeddings(torch.tensor([500]))
        assert e.shape == (1, c.dim) and e6.shape == (1, 6, c.dim) and e6.dtype == torch.float32


# --- generation with the cache ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    return _build_tiny_model()


def _cached(**kw):
    base = dict(steps=8, text_cfg=1.0, pose_cfg=0.0, cache_keep_first=1, cache_keep_last=1)
    base.update(kw)
    return _settings(**base)


def test_threshold_zero_is_bit_identical_and_skips_rise_with_the_threshold(tiny_model):
    photo, pos, neg = _inputs(5)
    plain = generate(tiny_model, photo, pos, neg, _cached())
    assert (plain.passes_computed, plain.passes_skipped) == (8, 0)
    for mode in ("teacache", "magcache"):
        zero = generate(tiny_model, photo, pos, neg, _cached(step_cache=mode, cache_threshold=0.0))
        assert torch.equal(zero.latent, plain.latent) and zero.passes_skipped == 0
    skipped, diffs = [], []
    for threshold in (0.01, 0.03, 0.12):
        r = generate(tiny_model, photo, pos, neg, _cached(step_cache="magcache", cache_threshold=threshold))
        skipped.append(r.passes_skipped)
        diffs.append(float((r.latent - plain.latent).norm() / plain.latent.norm()))
        assert r.passes_computed + r.passes_skipped == 8
        assert r.notices[-1] == (f"step cache magcache (threshold {threshold:g}, Wan 2.1 I2V 480p calibration): "
                                 f"{r.passes_skipped} of 8 DiT passes skipped")
    assert skipped == sorted(skipped) and 0 < skipped[-1] and skipped[0] < skipped[-1]
    assert all(0 < d < 0.5 for d in diffs if d)
    # teacache on random weights: their time embedding moves ~40 % a step, far outside the fitted range, so
    # only a huge threshold skips; the hook works the same way
    tea = generate(tiny_model, photo, pos, neg, _cached(step_cache="teacache", cache_threshold=1e6))
    assert tea.passes_skipped > 0 and torch.isfinite(tea.latent).all()


def test_cache_with_batched_passes_block_swap_and_long_videos(tiny_model):
    from steadydancer_core.runtime import offload
    from steadydancer_core.runtime.model_plan import plan_for_model

    photo, pos, neg = _inputs(9)
    settings = dict(steps=6, text_cfg=3.0, pose_cfg=1.5, pose_cfg_start=0.2, pose_cfg_end=0.8, step_cache="magcache",
                    cache_threshold=0.5, cache_keep_first=1, cache_keep_last=1)
    one_by_one = generate(tiny_model, photo, pos, neg, _settings(batch_passes=False, **settings))
    batched = generate(tiny_model, photo, pos, neg, _settings(batch_passes=True, **settings))
    assert one_by_one.passes_skipped == batched.passes_skipped > 0
    assert torch.allclose(one_by_one.latent, batched.latent, atol=1e-4)

    model = _build_tiny_model()
    model.settings = LoaderSettings(offload="block_swap", blocks_to_swap=2)
    model.load_plan = plan_for_model(model, 2, device="cpu")
    offloader = offload.attach_offloader(model, offload.Offloader.simulated())
    try:
        swapped = generate(model, photo, pos, neg, _settings(batch_passes=False, **settings))
    finally:
        offload.release_model(model)
    assert offloader.ledger.uploads > 0 and offloader.ledger.is_clean()
    assert torch.equal(swapped.latent, one_by_one.latent) and swapped.passes_skipped == one_by_one.passes_skipped

    photo, pos, neg = _inputs(13)
    long = generate(tiny_model, photo, pos, neg, _settings(batch_passes=False, segment_frames=5,
                                                             segment_overlap=1, **settings))
    assert len(long.segments) == 3 and all(s.passes_skipped > 0 for s in long.segments)
    assert long.passes_skipped == sum(s.passes_skipped for s in long.segments)
    assert all(torch.isfinite(s.latent).all() for s in long.segments)


def test_four_step_distill_settings_skip_nothing_by_default(tiny_model):
    photo, pos, neg = _inputs(5)
    distill = dict(steps=4, text_cfg=1.0, pose_cfg=1.0, pose_cfg_start=0.0, pose_cfg_end=1.0)
    plain = generate(tiny_model, photo, pos, neg, _settings(**distill))
    for mode in ("teacache", "magcache"):
        cached = generate(tiny_model, photo, pos, neg, _settings(step_cache=mode, cache_threshold=1e6, **distill))
        assert cached.passes_skipped == 0 and torch.equal(cached.latent, plain.latent), mode


def test_cache_settings_are_validated():
    for bad in (dict(step_cache="fast"), dict(cache_threshold=-0.1), dict(cache_threshold=float("nan")),
                dict(cache_keep_first=-1), dict(cache_keep_last=1.5), dict(cache_max_skip=True)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GenerationSettings(max_area=SIZE * SIZE, **bad)
    assert GenerationSettings(cache_threshold=1).cache_threshold == 1.0
