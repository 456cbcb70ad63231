"""offload: block swap with prefetch on a simulated device, scoped residency, leak-free errors, the planner."""
import types
import weakref

import pytest
import torch
from torch import nn

from steadydancer_core.loading.quant_ops import PackedLinear
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.runtime import offload
from steadydancer_core.runtime.memory_plan import (
    JobShape,
    ModelSizes,
    OffloadRequest,
    plan_memory,
)
from steadydancer_core.runtime.bundle import SteadyDancerModel
from steadydancer_core.runtime.options import LoaderSettings
from steadydancer_core.runtime.offload import (
    BlockSwap,
    Offloader,
    SteadyDancerOutOfMemoryError,
)
from steadydancer_core.runtime.sizes import dit_tokens

GIB = 1 << 30


class ToyBlock(nn.Module):
    """A block with a parameter, a buffer and an fp8 packed linear (buffers), like the real ones."""

    def __init__(self, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.norm = nn.LayerNorm(dim)
        self.lin = nn.Linear(dim, dim)
        self.packed = PackedLinear.from_packed((torch.randn(dim, dim, generator=g) * 0.2).to(torch.float8_e4m3fn), torch.zeros(dim))
        self.register_buffer("gain", torch.rand(dim, generator=g) + 0.5)
        self.fail = None

    def forward(self, x):
        if self.fail is not None:
            raise self.fail
        return x + self.packed(torch.tanh(self.lin(self.norm(x)))) * self.gain


class ToyDiT(nn.Module):
    BLOCKS = "blocks"
    SWAPPABLE_EMBEDDINGS = ("text_embedding", "img_emb")

    def __init__(self, dim=16, n=6):
        super().__init__()
        torch.manual_seed(0)
        self.text_embedding = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.img_emb = nn.Linear(dim, dim)
        self.blocks = nn.ModuleList([ToyBlock(dim, i) for i in range(n)])
        self.head = nn.Linear(dim, dim)

    def forward(self, x, ctx):
        x = x + self.text_embedding(ctx) + self.img_emb(ctx) + self.img_emb(ctx * 2)   # img_emb called twice
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 5, 16, generator=g), torch.randn(2, 5, 16, generator=g)


def _is_meta(module):
    return all(t.is_meta for t in list(module.parameters()) + list(module.buffers()))


@pytest.mark.parametrize("swap,prefetch,emb", [(0, 1, True), (3, 0, False), (3, 1, False), (6, 2, True), (6, 9, False)])
def test_block_swap_is_identical_to_all_resident(swap, prefetch, emb):
    model = ToyDiT()
    x, ctx = _inputs()
    with torch.inference_mode():
        expected = model(x, ctx)
    off = Offloader.simulated()
    off.place(model, "dit", blocks_to_swap=swap, prefetch=prefetch, offload_embeddings=emb)
    seen = []

    def check(module, args):            # registered after the swap hooks: runs once the block is installed
        assert not any(t.is_meta for t in module.parameters())
        seen.append((len(off.swap.resident_units()), set(off.ledger.in_flight)))

    handles = [block.register_forward_pre_hook(check) for block in model.blocks]
    with torch.inference_mode():
        for _ in range(2):
            out = model(x, ctx)
            assert torch.equal(out, expected)
            assert off.ledger.is_clean()
    swapped = off.swap.units if off.swap else []
    assert all(_is_meta(u.module) for u in swapped)                  # released between forwards
    assert max(n for n, _ in seen) <= prefetch + 1
    assert off.ledger.pinned_bytes == sum(u.nbytes for u in swapped)
    if swap and prefetch:
        # while block 0 runs, the next `prefetch` swapped blocks are already in flight
        assert seen[0][1] == {f"blocks.{i}" for i in range(1, 1 + min(prefetch, swap - 1))}
    for handle in handles:
        handle.remove()
    off.unplace(model)
    assert off.ledger.device_bytes == 0 and off.ledger.pinned_bytes == 0
    with torch.inference_mode():
        assert torch.equal(model(x, ctx), expected)                   # the model is whole again


def test_real_dit_block_swap_identical():
    from steadydancer_core.models.dit import SteadyDancerDiT

    cfg = DiTConfig.tiny(num_layers=3)
    torch.manual_seed(0)
    model = SteadyDancerDiT(cfg).eval()
    g = torch.Generator().manual_seed(0)
    b, f, h, w = 1, 2, 4, 4
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    args = (r(b, cfg.out_dim, f, h, w), torch.tensor([500.0]), r(b, 5, cfg.text_dim), r(b, cfg.y_channels, f, h, w),
            r(b, cfg.condition_channels, f, h, w), r(b, cfg.in_dim, 1, h, w), r(b, cfg.condition_channels, 1, h, w),
            r(b, cfg.clip_tokens, cfg.clip_dim), r(b, cfg.clip_tokens, cfg.clip_dim))
    with torch.inference_mode():
        expected = model(*args)
        off = Offloader.simulated()
        off.place(model, "dit", blocks_to_swap=2, prefetch=1, offload_embeddings=True)
        out = model(*args)
    # The copies are bit-exact, but on CPU a few GEMMs (FAAU's 1x1 convs on permuted inputs) round differently
    # for weights at another address, even for a plain clone; on CUDA the gpu test below checks bitwise equality.
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert off.ledger.is_clean() and off.ledger.placed["dit"] > 0


def test_error_inside_a_block_leaves_nothing_behind():
    model = ToyDiT()
    off = Offloader.simulated()
    off.place(model, "dit", blocks_to_swap=4, prefetch=2)
    model.blocks[2].fail = ValueError("boom")
    refs = []
    model.blocks[1].register_forward_pre_hook(
        lambda m, a: refs.extend(weakref.ref(t) for t in m.parameters()))
    with pytest.raises(ValueError, match="boom"), torch.inference_mode():
        with off.guard(what="sampling"):
            model(*_inputs())
    assert off.ledger.is_clean() and off.swap.resident_units() == []
    assert all(r() is None for r in refs)                               # device copies really freed


def test_interrupt_between_blocks_releases_prefetched_copies():
    model = ToyDiT()
    off = Offloader.simulated()
    off.place(model, "dit", blocks_to_swap=6, prefetch=2)
    model.blocks[1].fail = KeyboardInterrupt()                          # BaseException: no always_call hooks
    with pytest.raises(KeyboardInterrupt), torch.inference_mode():
        with off.guard():
            model(*_inputs())
    assert off.ledger.is_clean()


def test_out_of_memory_becomes_a_clear_error_with_the_plan():
    model = ToyDiT()
    plan = plan_memory(12 * GIB, ModelSizes(400 << 20, 40, 1 << 30), JobShape(832, 480, 81, 2))
    block_bytes = offload.module_bytes(model.blocks[0])
    resident = offload.module_bytes(model) - 6 * block_bytes
    off = Offloader.simulated(capacity_bytes=resident + 2 * block_bytes)   # room for 2 blocks, prefetch needs 3
    off.place(model, "dit", blocks_to_swap=6, prefetch=2)
    with pytest.raises(SteadyDancerOutOfMemoryError) as info, torch.inference_mode():
        with off.guard(plan, "sampling"):
            model(*_inputs())
    message = str(info.value)
    assert "during sampling" in message and "swap more DiT blocks" in message and "Memory plan" in message
    assert isinstance(info.value, torch.OutOfMemoryError)
    assert off.ledger.is_clean()
    off.unplace(model)
    off = Offloader.simulated(capacity_bytes=resident + 2 * block_bytes)
    off.place(model, "dit", blocks_to_swap=6, prefetch=1)               # fits with prefetch 1
    with torch.inference_mode():
        model(*_inputs())
    assert off.ledger.peak_bytes <= resident + 2 * block_bytes


def test_resident_scope_and_free_memory_hook():
    calls = []
    off = Offloader.simulated()
    off.free_memory_hook = lambda nbytes, device: calls.append(nbytes)
    vae = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ptrs = lambda: [t.data_ptr() for t in list(vae.parameters()) + list(vae.buffers())]  # noqa: E731
    host = ptrs()
    with off.resident(vae, "vae"):
        assert all(a != b for a, b in zip(ptrs(), host))
        assert off.ledger.transient["vae"] == offload.module_bytes(vae)
        with off.resident(vae):                                        # nested: nothing more
            assert off.ledger.uploads == 1
    assert calls == [offload.module_bytes(vae)]
    assert off.ledger.is_clean()
    assert ptrs() == host
    with pytest.raises(RuntimeError, match="decode failed"), off.resident(vae, "vae"):
        raise RuntimeError("decode failed")
    assert off.ledger.is_clean()


def test_place_again_reconfigures_only_when_settings_change():
    model = ToyDiT()
    off = Offloader.simulated()
    off.place(model, "dit", blocks_to_swap=2)
    swap = off.swap
    off.place(model, "dit", blocks_to_swap=2)
    assert off.swap is swap
    off.place(model, "dit", blocks_to_swap=4)
    assert off.swap is not swap and len(off.swap.units) == 4
    off.place(model, "dit", blocks_to_swap=0)
    assert off.swap is None and off.ledger.pinned_bytes == 0
    assert not any(t.is_meta for t in model.parameters())


def test_cpu_device_moves_nothing():
    model = ToyDiT()
    off = Offloader("cpu")
    assert not off.moves
    weights = list(model.parameters())
    with off.resident(model):
        assert all(a is b for a, b in zip(model.parameters(), weights))
    assert off.ledger.uploads == 0


def test_use_component_with_a_model_bundle():
    dit = ToyDiT()
    vae = nn.Linear(3, 3)
    encoder = types.SimpleNamespace(model=nn.Linear(2, 2), tokenizer=None)
    plan = plan_memory(4 * GIB, ModelSizes(400 << 20, 6, 1 << 30), JobShape(64, 64, 5, 1),
                       OffloadRequest(blocks_to_swap=3), device="cpu")
    model = SteadyDancerModel(dit=dit, vae=vae, text_encoder=encoder, image_encoder=encoder, dtype=torch.float32,
                              load_plan=plan)
    off = offload.attach_offloader(model, Offloader.simulated())
    with offload.use_component(model, "text_encoder", plan):
        assert set(off.ledger.transient) == {"text_encoder.0"}
    with offload.use_component(model, "dit", plan), torch.inference_mode():
        dit(*_inputs())
    assert off.is_placed(dit) and len(off.swap.units) == 3
    assert off.ledger.is_clean()
    offload.release_model(model)
    assert off.ledger.device_bytes == 0 and off.ledger.pinned_bytes == 0


def test_block_swap_arguments_are_checked():
    off = Offloader.simulated()
    with pytest.raises(ValueError, match="blocks_to_swap"):
        BlockSwap(off, ToyDiT(n=2), 3)
    with pytest.raises(TypeError, match="ModuleList"):
        BlockSwap(off, nn.Linear(2, 2), 1)


# --- planner ----------------------------------------------------------------------------------------------------

FP8_BLOCK, BF16_BLOCK = 404 << 20, 808 << 20          # one 14B block (dim 5120, ffn 13824)
FP8_OTHER, BF16_OTHER = 250 << 20, 500 << 20
CARD_FREE = {24: 23.4 * GIB, 16: 15.4 * GIB, 12: 11.4 * GIB}   # after the CUDA context


def _plan(card, weights, vae_config=None, **request):
    block, other = (FP8_BLOCK, FP8_OTHER) if weights == "fp8" else (BF16_BLOCK, BF16_OTHER)
    sizes = ModelSizes(block, 40, other, embedding_bytes=other // 5, vae_config=vae_config)
    return plan_memory(int(CARD_FREE[card]), sizes, JobShape(832, 480, 81, 2), OffloadRequest(**request))


def test_planner_tokens_for_832x480x81():
    # 21 video latent frames + ref_x + ref_c, 60x104 latent, 2x2 patches
    assert dit_tokens(DiTConfig(), 832, 480, 81) == 23 * 30 * 52


@pytest.mark.parametrize("card", [24, 16, 12])
@pytest.mark.parametrize("weights", ["fp8", "bf16"])
def test_planner_fits_every_card(card, weights):
    plan = _plan(card, weights)
    assert plan.fits and plan.estimated_peak_bytes <= plan.usable_bytes < plan.budget_bytes
    assert 0 <= plan.blocks_to_swap <= 40 and "\n" not in plan.explanation
    assert f"{plan.blocks_to_swap} of 40 blocks swapped" in plan.explanation
    if card == 24:
        assert plan.estimated_peak_bytes <= 22.5e9          # the target for a 24 GB card
    # one block fewer would not fit (the plan swaps no more than needed)
    if plan.blocks_to_swap:
        tighter = _plan(card, weights, blocks_to_swap=plan.blocks_to_swap - 1, batch_passes=plan.batch_passes)
        assert not tighter.fits


def test_planner_orders_cards_and_precisions():
    # with the passes run the same way, less memory or wider weights never swap fewer blocks
    swaps = {(c, w): _plan(c, w, batch_passes=False).blocks_to_swap for c in (24, 16, 12) for w in ("fp8", "bf16")}
    assert swaps[(24, "fp8")] == 0                       # 14B fp8 is all-resident on a 24 GB card
    assert swaps[(24, "bf16")] > 0
    for w in ("fp8", "bf16"):
        assert swaps[(24, w)] <= swaps[(16, w)] <= swaps[(12, w)]
    for c in (24, 16, 12):
        assert swaps[(c, "fp8")] <= swaps[(c, "bf16")]


def test_planner_batching_rule():
    # fp8 on 24 GB: all resident one pass at a time beats batching (which would need swapping)
    assert not _plan(24, "fp8").batch_passes
    # a large card batches with nothing swapped
    big = plan_memory(78 * GIB, ModelSizes(FP8_BLOCK, 40, FP8_OTHER), JobShape(832, 480, 81, 2))
    assert big.batch_passes and big.blocks_to_swap == 0
    single = _plan(24, "bf16", batch_passes=False)
    assert not single.batch_passes
    one_pass = plan_memory(int(CARD_FREE[24]), ModelSizes(FP8_BLOCK, 40, FP8_OTHER), JobShape(832, 480, 81, 1))
    assert not one_pass.batch_passes and "no guidance passes to batch" in one_pass.explanation


def test_planner_max_vram_and_overrides():
    capped = _plan(24, "fp8", max_vram_gb=12)
    assert capped.budget_bytes == 12 * GIB and capped.blocks_to_swap > _plan(24, "fp8").blocks_to_swap
    over = _plan(12, "fp8", max_vram_gb=40)
    assert "exceeds" in over.explanation and over.budget_bytes == int(CARD_FREE[12])
    forced = _plan(24, "fp8", blocks_to_swap=10)
    assert forced.blocks_to_swap == 10
    with pytest.raises(ValueError, match="blocks_to_swap"):
        _plan(24, "fp8", blocks_to_swap=41)
    with pytest.raises(ValueError, match="compute dtype"):
        ModelSizes(1, 1, 1, dtype=torch.float8_e4m3fn)


def test_planner_reports_what_does_not_fit():
    plan = plan_memory(6 * GIB, ModelSizes(BF16_BLOCK, 40, 2 * GIB, embedding_bytes=200 << 20),
                       JobShape(1280, 720, 81, 2))
    assert not plan.fits and plan.blocks_to_swap == 40 and plan.offload_embeddings
    assert "DOES NOT FIT" in plan.explanation and "lower the resolution" in plan.suggestion


def test_planner_vae_tiling_follows_the_room_left():
    from steadydancer_core.models.vae_config import VAEConfig

    roomy = plan_memory(78 * GIB, ModelSizes(FP8_BLOCK, 40, FP8_OTHER, vae_config=VAEConfig()),
                        JobShape(832, 480, 81, 2))
    tight = _plan(24, "fp8", vae_config=VAEConfig(), max_vram_gb=20)
    assert roomy.vae_tile is None and "VAE untiled" in roomy.explanation
    assert tight.vae_budget_bytes < roomy.vae_budget_bytes
    assert tight.vae_tile is not None and "VAE tiles" in tight.explanation


@pytest.mark.gpu
def test_cuda_block_swap_bitwise_identical_and_clean():
    model = ToyDiT(dim=256, n=8)
    x, ctx = (t.repeat(1, 1, 16) for t in _inputs())
    off = Offloader("cuda")
    off.place(model, "dit")
    with torch.inference_mode():
        expected = model(x.cuda(), ctx.cuda())
    off.unplace(model)
    off.place(model, "dit", blocks_to_swap=6, prefetch=2, offload_embeddings=True)
    with torch.inference_mode():
        out = model(x.cuda(), ctx.cuda())
    torch.cuda.synchronize()
    assert torch.equal(out, expected) and off.ledger.is_clean()
    assert all(t.is_pinned() for u in off.swap.units for t in u.homes)
    off.unplace(model)
    assert off.ledger.device_bytes == 0


def test_encoders_make_room_by_unplacing_the_dit():
    dit = ToyDiT()
    vae = nn.Linear(64, 64)
    dit_bytes, vae_bytes = offload.module_bytes(dit), offload.module_bytes(vae)
    model = SteadyDancerModel(dit=dit, vae=vae, text_encoder=None, image_encoder=None, dtype=torch.float32)
    hook_calls = []
    off = offload.attach_offloader(model, Offloader.simulated(capacity_bytes=dit_bytes + vae_bytes // 2 + (1 << 30)))
    off.free_memory_hook = lambda nbytes, device: hook_calls.append(nbytes)
    off.ledger.capacity_bytes = dit_bytes + vae_bytes // 2          # the VAE does not fit next to the DiT
    with offload.use_component(model, "dit", None):
        pass
    assert off.is_placed(dit)
    from steadydancer_core.runtime.memory_plan import OFFLOAD_MIN_RESERVE_BYTES
    off.ledger.capacity_bytes = dit_bytes + vae_bytes + OFFLOAD_MIN_RESERVE_BYTES - 1
    with offload.use_component(model, "vae", None):
        assert not off.is_placed(dit) and "vae.0" in off.ledger.transient
    assert hook_calls and off.ledger.device_bytes == 0
    with offload.use_component(model, "dit", None):
        assert off.is_placed(dit)


def test_out_of_memory_while_placing_is_reported_with_the_plan():
    dit = ToyDiT()
    plan = plan_memory(4 * GIB, ModelSizes(400 << 20, 6, 1 << 30), JobShape(64, 64, 5, 1), device="cpu")
    model = SteadyDancerModel(dit=dit, vae=None, text_encoder=None, image_encoder=None, dtype=torch.float32,
                              load_plan=plan)
    off = offload.attach_offloader(model, Offloader.simulated(capacity_bytes=offload.module_bytes(dit) // 2))
    with pytest.raises(SteadyDancerOutOfMemoryError, match="during sampling.*Try: "):
        with offload.use_component(model, "dit", plan):
            pass
    assert not off.is_placed(dit) and off.swap is None and off.ledger.device_bytes == 0
    assert not any(t.is_meta for t in dit.parameters())


def test_plan_for_model_reads_sizes_from_the_modules():
    from steadydancer_core.runtime.model_plan import plan_for_model

    dit = ToyDiT()
    dit.config = DiTConfig.tiny()
    model = SteadyDancerModel(dit=dit, vae=nn.Linear(2, 2), text_encoder=None, image_encoder=None,
                              dtype=torch.float32)
    plan = plan_for_model(model, 3, width=64, height=64, frames=5, device="cpu")
    assert plan.blocks_to_swap == 0 and "block_swap with 3 blocks swaps nothing" in plan.explanation
    plan = plan_for_model(model, 3, width=64, height=64, frames=5, device="cuda", free_vram_bytes=4 * GIB)
    assert plan.blocks_to_swap == 3 and plan.fits
    model.settings = LoaderSettings(max_vram_gb=2)
    plan = plan_for_model(model, width=64, height=64, frames=5, device="cuda", free_vram_bytes=4 * GIB)
    assert plan.budget_bytes == 2 * GIB


class RecordingTransfer(offload.SimulatedTransfer):
    """Simulated device that records the copy protocol the CUDA path relies on (events, waits, adoption)."""

    def __init__(self):
        super().__init__()
        self.log = []

    def upload(self, hosts, asynchronous):
        tensors, _ = super().upload(hosts, asynchronous)
        event = object() if asynchronous else None
        self.log.append(("upload", asynchronous, event))
        return tensors, event

    def wait(self, event):
        self.log.append(("wait", event))

    def adopt(self, tensors):
        self.log.append(("adopt", len(tensors)))


def test_prefetched_copies_are_waited_for_and_adopted_before_use():
    model = ToyDiT()
    transfer = RecordingTransfer()
    off = Offloader("cpu", transfer=transfer)
    off.place(model, "dit", blocks_to_swap=6, prefetch=1)
    transfer.log.clear()
    with torch.inference_mode():
        model(*_inputs())
    uploads = [e for e in transfer.log if e[0] == "upload"]
    assert len(uploads) == 6 and all(asynchronous for _, asynchronous, _ in uploads)   # all prefetched
    waits = [e[1] for e in transfer.log if e[0] == "wait"]
    assert waits == [event for _, _, event in uploads]          # each block waits for its own copy, in order
    for i, entry in enumerate(transfer.log):
        if entry[0] == "wait":
            assert transfer.log[i + 1][0] == "adopt"              # adopted by the compute stream right after
    assert off.ledger.is_clean()


class _LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Peak bytes of the tensors created by the ops run under it (CPU stand-in for max_memory_allocated)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self.storages = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()                 # views share it: counted once, freed once
            if id(storage) in self.storages:
                continue
            self.storages.add(id(storage))
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, id(storage), storage.nbytes())
        return out

    def _free(self, key, nbytes):
        self.storages.discard(key)
        self.live -= nbytes


def test_planner_activation_estimate_matches_the_dit_on_cpu():
    """The per-token model of memory_plan against the real DiT's live tensors (bf16, tokens >> context)."""
    import torch.utils._python_dispatch  # noqa: F401

    from steadydancer_core.models.dit import SteadyDancerDiT
    from steadydancer_core.runtime.sizes import dit_activation_bytes

    cfg = DiTConfig.tiny(dim=256, ffn_dim=704, num_heads=2, num_layers=2, text_len=512, text_dim=32, clip_dim=32)
    torch.manual_seed(0)
    model = SteadyDancerDiT(cfg).to(torch.bfloat16).eval()
    width, height, frames = 384, 256, 17
    f, h, w = 1 + (frames - 1) // 4, height // 8, width // 8
    r = lambda *s: torch.randn(*s)  # noqa: E731
    args = (r(1, cfg.out_dim, f, h, w), torch.tensor([500.0]), r(1, 20, cfg.text_dim), r(1, cfg.y_channels, f, h, w),
            r(1, cfg.condition_channels, f, h, w), r(1, cfg.in_dim, 1, h, w), r(1, cfg.condition_channels, 1, h, w),
            r(1, cfg.clip_tokens, cfg.clip_dim), r(1, cfg.clip_tokens, cfg.clip_dim))
    tracker = _LiveBytes()
    with torch.inference_mode(), tracker:
        model(*args)
    estimate = dit_activation_bytes(cfg, width, height, frames, torch.bfloat16)
    assert tracker.peak <= estimate * 1.05 and estimate <= 1.5 * tracker.peak, (tracker.peak, estimate)


def test_host_memory_is_memavailable_not_memfree(tmp_path):
    from steadydancer_core.runtime.model_plan import host_available_bytes

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemFree:          500000 kB\nMemAvailable:   20000000 kB\n")
    assert host_available_bytes(str(meminfo)) == 20000000 * 1024
    assert host_available_bytes(str(tmp_path / "missing")) > 0
