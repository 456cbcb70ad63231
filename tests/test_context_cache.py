"""The DiT's context cache: bit-exact reuse of the embedded context and the cross-attention K/V, keyed by value."""
import pytest
import torch
from helpers import tiny_dit as tiny_model, tiny_dit_inputs as tiny_inputs

from steadydancer_core.models.context_cache import CONTEXT_CACHE_ENTRIES, ContextCache
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.runtime.memory_plan import JobShape, ModelSizes, OffloadRequest, plan_memory
from steadydancer_core.runtime.offload import Offloader
from steadydancer_core.runtime.options import LoaderSettings
from steadydancer_core.runtime.sizes import context_cache_bytes

GIB = 1 << 30


def _cast(inputs, dtype):
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_forwards_are_bit_exact(dtype):
    """Repeated steps (other latents and timesteps, same contexts) equal the uncached forward bit for bit, in both
    padding paths (fp32: log-multiplicity bias; bf16: repeated padding row) and for two batch layouts."""
    model = tiny_model(dtype=dtype)
    cfg = model.config
    layouts = [_cast(tiny_inputs(cfg, batch=2, text_lens=[5, 9], seed=1), dtype),
               _cast(tiny_inputs(cfg, batch=1, text_lens=[5], seed=1), dtype)]
    steps = []
    for s in range(3):                          # per step: new latent and timestep, same context and CLIP features
        for layout in layouts:
            x = torch.randn(layout["x"].shape, generator=torch.Generator().manual_seed(10 + s)).to(dtype)
            steps.append(dict(layout, x=x, t=torch.tensor([100 + 300 * s])))
    with torch.inference_mode():
        expected = [model(**inputs) for inputs in steps]
        with model.caching_context() as cache:
            got = [model(**inputs) for inputs in steps]
            assert (cache.misses, cache.hits) == (2, 4)
            assert all(len(slot) == 1 for e in cache.entries for slot in e.kv)   # every block's K/V is stored
        assert model.context_cache is None                                       # dropped on exit
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_list_contexts_and_views_hit_and_new_values_miss():
    """The key is the value: a freshly padded list context and a new expanded view of the same CLIP features hit;
    a context changed in place misses and gives the uncached result for its new values."""
    model = tiny_model()
    cfg = model.config
    inputs = tiny_inputs(cfg, batch=1, text_lens=[6])
    text = inputs["context"][0, :6].clone()
    clip = inputs["clip_fea_x"].clone()
    with torch.inference_mode(), model.caching_context() as cache:
        a = model(**dict(inputs, context=[text], clip_fea_x=clip.expand(1, -1, -1)))
        b = model(**dict(inputs, context=[text.clone()], clip_fea_x=clip.expand(1, -1, -1)))
        assert torch.equal(a, b) and cache.hits == 1
        text.mul_(2)                                                   # in place: the cache holds its own copy
        c = model(**dict(inputs, context=[text], clip_fea_x=clip))
        assert cache.misses == 2
    with torch.inference_mode():
        assert torch.equal(c, model(**dict(inputs, context=[text], clip_fea_x=clip)))
        assert not torch.equal(a, c)


def test_cache_is_bounded_and_cleared_when_weights_change():
    model = tiny_model()
    cfg = model.config
    contexts = [tiny_inputs(cfg, text_lens=[4], seed=s) for s in range(CONTEXT_CACHE_ENTRIES + 1)]
    with torch.inference_mode(), model.caching_context() as cache:
        for inputs in contexts:
            model(**inputs)
        assert len(cache.entries) == CONTEXT_CACHE_ENTRIES                  # least recently used dropped
        model(**contexts[0])                                                 # the dropped one: computed again
        assert cache.misses == CONTEXT_CACHE_ENTRIES + 2
        expected_bytes = sum(e.nbytes() for e in cache.entries)
        assert cache.nbytes() == expected_bytes > 0
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["blocks.0.cross_attn.k.weight"].mul_(0.5)
        model.load_state_dict(state)
        assert cache.entries == []                                           # new weights: nothing stale kept
        after = model(**contexts[0])
    with torch.inference_mode():
        assert torch.equal(after, model(**contexts[0]))
    with pytest.raises(ValueError, match="max_entries"):
        ContextCache(0)


def test_nested_scopes_share_one_cache():
    model = tiny_model()
    with model.caching_context() as outer, model.caching_context() as inner:
        assert outer is inner
        assert model.context_cache is outer
    assert model.context_cache is None


def test_cache_with_block_swap_matches_and_leaves_a_clean_ledger():
    """Cached K/V live on the execution device, outside the swapped blocks: streaming the block weights (and the
    embeddings, which a cache hit does not call) still gives the uncached result."""
    model = tiny_model(num_layers=3)
    inputs = tiny_inputs(model.config, batch=2, text_lens=[5, 7])
    with torch.inference_mode():
        expected = model(**inputs)
        off = Offloader.simulated()
        off.place(model, "dit", blocks_to_swap=2, prefetch=1, offload_embeddings=True)
        with model.caching_context() as cache:
            outs = [model(**inputs) for _ in range(3)]
            assert cache.hits == 2
        assert off.ledger.is_clean()
    for out in outs:          # CPU GEMMs may round differently for weights at another address (see test_offload)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    off.unplace(model)


def test_model_use_dit_scopes_the_cache():
    from steadydancer_core.runtime.bundle import SteadyDancerModel

    dit = tiny_model()
    model = SteadyDancerModel(dit=dit, vae=None, text_encoder=None, image_encoder=None, dtype=torch.float32)
    with model.use("dit"):
        assert isinstance(dit.context_cache, ContextCache)
    assert dit.context_cache is None
    model.settings = LoaderSettings(context_cache=False)
    with model.use("dit"):
        assert dit.context_cache is None
    model.settings = LoaderSettings(context_cache=True)
    sizes = ModelSizes(1 << 20, len(dit.blocks), 1 << 20, dit_config=dit.config, dtype=torch.float32)
    for room, expected in ((False, False), (True, True)):
        plan = plan_memory(64 * GIB, sizes, JobShape(64, 64, 5, 1), OffloadRequest(context_cache=room), device="cpu")
        with model.use("dit", plan):
            assert (dit.context_cache is not None) == expected
        assert dit.context_cache is None


def test_size_bound_covers_the_live_cache():
    model = tiny_model()
    cfg = model.config
    inputs = tiny_inputs(cfg, batch=2, text_lens=[cfg.text_len - 3, 2])        # near the longest prompt
    with torch.inference_mode(), model.caching_context() as cache:
        model(**inputs)
        live = cache.nbytes()
    bound = context_cache_bytes(cfg, torch.float32, rows=2)
    assert live <= bound < 1.3 * live
    big = DiTConfig()                       # 14B: about 0.64 GB per bf16 row at the 512-token maximum
    assert 0.6e9 < context_cache_bytes(big, torch.bfloat16, rows=1) < 0.7e9


def test_planner_keeps_the_cache_only_in_memory_left_over():
    sizes = ModelSizes(404 << 20, 40, 250 << 20, embedding_bytes=50 << 20)     # 14B fp8
    job = JobShape(832, 480, 81, 2)
    big = plan_memory(80 * GIB, sizes, job, OffloadRequest(context_cache=True))
    plain = plan_memory(80 * GIB, sizes, job, OffloadRequest())
    assert big.context_cache and not plain.context_cache and "context cache on" in big.explanation
    assert big.context_cache_bytes == context_cache_bytes(DiTConfig(), torch.bfloat16,
                                                          CONTEXT_CACHE_ENTRIES * (2 if big.batch_passes else 1))
    assert big.activation_bytes == plain.activation_bytes + big.context_cache_bytes
    assert big.blocks_to_swap == plain.blocks_to_swap == 0
    tight = plan_memory(int(23.4 * GIB), sizes, job, OffloadRequest(context_cache=True))
    tight_plain = plan_memory(int(23.4 * GIB), sizes, job, OffloadRequest())
    # a 24 GB card: the cache would cost swapped blocks or batching, so it is off and the plan is unchanged
    assert not tight.context_cache and "context cache off" in tight.explanation
    assert (tight.blocks_to_swap, tight.batch_passes, tight.estimated_peak_bytes) == (
        tight_plain.blocks_to_swap, tight_plain.batch_passes, tight_plain.estimated_peak_bytes)


@pytest.mark.gpu
def test_cached_forwards_are_bit_exact_on_cuda():
    model = tiny_model(dtype=torch.bfloat16).to("cuda")
    inputs = {k: v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda")
              for k, v in tiny_inputs(model.config, batch=2, text_lens=[5, 9]).items()}
    with torch.inference_mode():
        expected = model(**inputs)
        with model.caching_context() as cache:
            first, second = model(**inputs), model(**inputs)
            assert cache.hits == 1 and cache.entries[0].context.is_cuda
    assert torch.equal(first, expected) and torch.equal(second, expected)
