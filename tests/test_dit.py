"""SteadyDancer DiT: fidelity against the official forward, config inference, batching, validation."""
import json

import pytest
import torch
from conftest import fixture_file
from helpers import tiny_dit as tiny_model, tiny_dit_inputs as tiny_inputs
from safetensors.torch import load_file

from steadydancer_core.models.dit import SteadyDancerDiT, apply_rope, rope_tables
from steadydancer_core.models.dit_config import DiTConfig

FIXTURE = "steadydancer_dit"
INPUTS = ("x", "t", "context", "y", "condition", "ref_x", "ref_c")


# --- fixture helpers --------------------------------------------------------------------------------------------

def load_fixture_model(dtype=torch.float32) -> SteadyDancerDiT:
    """Official config.json + safetensors -> SteadyDancerDiT (strict load, official names)."""
    state = load_file(fixture_file(FIXTURE, "model", "diffusion_pytorch_model.safetensors"))
    config_json = json.loads(fixture_file(FIXTURE, "model", "config.json").read_text())
    config = DiTConfig.from_shapes({k: v.shape for k, v in state.items()},
                                   **DiTConfig.official_config_overrides(config_json))
    model = SteadyDancerDiT(config)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    return model.to(dtype).eval()


def fixture_cases():
    meta = json.loads(fixture_file(FIXTURE, "dit_meta.json").read_text())
    io = load_file(fixture_file(FIXTURE, "dit_io.safetensors"))
    return [(case["name"], io) for case in meta["cases"]]


def case_inputs(io, name):
    """Unbatched fixture tensors of one case -> batched forward kwargs."""
    kwargs = {k: io[f"{name}.{k}"] for k in INPUTS}
    kwargs = {k: (v if k == "t" else v.float()[None]) for k, v in kwargs.items()}
    kwargs["clip_fea_x"] = io["clip_fea_x"].float()
    kwargs["clip_fea_c"] = io["clip_fea_c"].float()
    return kwargs


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# --- fidelity ---------------------------------------------------------------------------------------------------

@pytest.mark.fidelity
def test_dit_fp32_matches_official():
    model = load_fixture_model(torch.float32)
    for name, io in fixture_cases():
        with torch.no_grad():
            out = model(**case_inputs(io, name))[0]
        for ref_key in ("out_fp32", "out_fp64"):
            ref = io[f"{name}.{ref_key}"]
            assert out.shape == ref.shape
            assert (out.double() - ref.double()).abs().max().item() <= 1e-4, (name, ref_key)
            assert rel_l2(out, ref) <= 1e-5, (name, ref_key)


@pytest.mark.fidelity
def test_dit_bf16_matches_official_fp64():
    model = load_fixture_model(torch.bfloat16)
    for name, io in fixture_cases():
        with torch.no_grad():
            out = model(**case_inputs(io, name))[0]
        assert out.dtype == torch.bfloat16
        ref = io[f"{name}.out_fp64"]
        assert rel_l2(out, ref) <= 3e-2, name
        # worst element, scaled by the output's magnitude (bars of one set's numbers do not carry to another):
        # measured max|diff| / max|ref| 0.6-0.8 %
        assert (out.double() - ref).abs().max().item() <= 0.05 * ref.abs().max().item(), name


@pytest.mark.fidelity
def test_dit_intermediates_match_official():
    """Localises errors: condition path, embeddings, every block (last block: returned frames only), head."""
    model = load_fixture_model(torch.float32)
    seen = {}

    def keep(name):
        return lambda module, args, out: seen.__setitem__(name, out)

    hooks = {"cond_temporal": model.condition_embedding_temporal, "cond_aligned": model.condition_embedding_align,
             "time_embed": model.time_embedding, "head_out": model.head}
    hooks.update({f"block{i}_out": b for i, b in enumerate(model.blocks)})
    for name, module in hooks.items():
        module.register_forward_hook(keep(name))
    for case, io in fixture_cases():
        with torch.no_grad():
            model(**case_inputs(io, case))
        for name in hooks:
            ref, got = io[f"{case}.inter.{name}"], seen[name].float()
            ref = ref[:, :got.shape[1]] if name.startswith(("block", "head")) else ref
            assert got.shape == ref.shape, (case, name)
            assert (got - ref).abs().max().item() <= 1e-4, (case, name)


@pytest.mark.fidelity
def test_dit_config_from_fixture_shapes():
    state_json = json.loads(fixture_file(FIXTURE, "dit_state_dict.json").read_text())
    shapes = {k: tuple(v["shape"]) for k, v in state_json["keys"].items()}
    expected = state_json["config"]
    config = DiTConfig.from_shapes(shapes, num_heads=expected["num_heads"], text_len=expected["text_len"])
    for key in ("in_dim", "out_dim", "dim", "ffn_dim", "num_heads", "num_layers", "text_len", "text_dim",
                "freq_dim"):
        assert getattr(config, key) == expected[key], key
    model = SteadyDancerDiT(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == shapes
    assert sum(v.numel() for v in model.parameters()) == state_json["num_params"]


# --- behaviour (tiny random model) --------------------------------------------------------------------------

def test_dit_batch_equals_single_calls():
    model = tiny_model()
    inputs = tiny_inputs(model.config, batch=3, text_lens=[5, 16, 9])
    with torch.no_grad():
        batched = model(**inputs)
        for i in range(3):
            single = {k: v[i:i + 1] for k, v in inputs.items()}
            single["context"] = single["context"][:, :[5, 16, 9][i]]    # unpadded, as a single call gets it
            torch.testing.assert_close(batched[i:i + 1], model(**single), atol=2e-5, rtol=1e-5)


def test_dit_one_timestep_for_the_batch_equals_one_per_sample():
    """t [1] (the cheaper shared modulation) == the same timestep given per sample."""
    model = tiny_model()
    inputs = tiny_inputs(model.config, batch=2)
    with torch.no_grad():
        shared = model(**dict(inputs, t=torch.tensor([417])))
        per_sample = model(**dict(inputs, t=torch.tensor([417, 417])))
    torch.testing.assert_close(shared, per_sample, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one timestep for the batch or one per sample"):
        model(**dict(inputs, t=torch.tensor([1, 2, 3])))


def test_dit_fused_cpu_linears_match_plain_linears(monkeypatch):
    from steadydancer_core.models import fused_linear
    model = tiny_model()
    inputs = tiny_inputs(model.config, batch=2)
    with torch.no_grad():
        fused = model(**inputs)
        monkeypatch.setattr(fused_linear, "ONEDNN_ENABLED", False)
        plain = model(**inputs)
    torch.testing.assert_close(fused, plain, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dit_text_padding_equals_explicit_zero_rows(dtype):
    """Short context == context zero-padded to text_len (official: padding is embedded and attended)."""
    model = tiny_model(dtype=dtype)
    inputs = tiny_inputs(model.config, text_lens=[4])
    padded = dict(inputs, context=torch.cat([inputs["context"], torch.zeros(1, 12, model.config.text_dim)], 1))
    with torch.no_grad():
        short, full = model(**inputs), model(**padded)
    tol = dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(short.float(), full.float(), **tol)


def test_dit_text_list_context_is_zero_padded():
    model = tiny_model()
    inputs = tiny_inputs(model.config, batch=2, text_lens=[3, 7])
    as_list = dict(inputs, context=[inputs["context"][0, :3], inputs["context"][1, :7]])
    with torch.no_grad():
        torch.testing.assert_close(model(**as_list), model(**inputs))


def test_dit_returns_first_frames_and_reference_frames_matter():
    model = tiny_model()
    inputs = tiny_inputs(model.config, frames=2, h=6, w=4)
    with torch.no_grad():
        out = model(**inputs)
        assert out.shape == (1, model.config.out_dim, 2, 6, 4)
        changed = model(**dict(inputs, ref_x=inputs["ref_x"] + 1.0))
    assert (changed - out).abs().max() > 1e-3


def test_faau_attends_across_frames_per_pixel():
    """Perturbing the latent at one (t, h, w) changes the aligned pose only at that pixel (all frames)."""
    model = tiny_model()
    faau = model.condition_embedding_align
    g = torch.Generator().manual_seed(0)
    pose, latent = torch.randn(1, 16, 3, 4, 5, generator=g), torch.randn(1, 16, 3, 4, 5, generator=g)
    with torch.no_grad():
        base = faau(pose, latent)
        latent[0, :, 1, 2, 3] += 1.0
        diff = (faau(pose, latent) - base).abs().amax(dim=1)[0]        # [F, H, W]
    assert diff[1, 2, 3] > 1e-4
    diff[:, 2, 3] = 0
    assert diff.max() == 0


def test_rope_matches_complex_rotation():
    grid, pairs = (3, 2, 4), (6, 5, 5)
    cos, sin = rope_tables(grid, pairs, torch.device("cpu"))
    x = torch.randn(2, 24, 3, 32, dtype=torch.float64)
    ours = apply_rope(x, cos.double().repeat_interleave(2, dim=-1), sin.double())
    f, h, w = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
    angles = torch.cat([pos.reshape(-1, 1) * 10000.0 ** (-torch.arange(n, dtype=torch.float64) / n)
                        for pos, n in zip((f, h, w), pairs)], dim=1)
    ref = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.polar(
        torch.ones_like(angles), angles)[:, None]).flatten(-2)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-6)


# --- config -----------------------------------------------------------------------------------------------------

def test_dit_from_shapes_roundtrip_and_heads_rule():
    config = DiTConfig.tiny(dim=256, num_heads=2, ffn_dim=96, num_layers=3)
    shapes = {k: tuple(v.shape) for k, v in SteadyDancerDiT(config).state_dict().items()}
    assert DiTConfig.from_shapes(shapes, num_heads=2, text_len=config.text_len) == config
    inferred = DiTConfig.from_shapes(shapes, text_len=config.text_len)
    assert inferred.num_heads == 2 and inferred.num_layers == 3    # dim // 128
    with pytest.raises(ValueError, match="num_heads"):
        DiTConfig.from_shapes({**shapes, "patch_embedding.weight": (96, 36, 1, 2, 2)})
    assert DiTConfig.official_config_overrides({"num_heads": 40, "dim": 5120, "text_len": 512}) == {
        "num_heads": 40, "text_len": 512}


def test_dit_from_shapes_names_what_is_missing():
    shapes = {k: tuple(v.shape) for k, v in SteadyDancerDiT(DiTConfig.tiny(num_layers=3)).state_dict().items()}
    plain_wan = {k: v for k, v in shapes.items()
                 if not k.startswith(("condition_embedding", "patch_embedding_fuse", "patch_embedding_ref_c"))}
    with pytest.raises(ValueError, match="plain Wan 2.1 I2V"):
        DiTConfig.from_shapes(plain_wan, num_heads=2)
    with pytest.raises(ValueError, match="blocks \\[1\\] are missing"):
        DiTConfig.from_shapes({k: v for k, v in shapes.items() if not k.startswith("blocks.1.")}, num_heads=2)
    with pytest.raises(ValueError, match="not a Wan 2.1 DiT"):
        DiTConfig.from_shapes({"encoder.conv1.weight": (8, 3, 3, 3, 3)})


def test_dit_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        DiTConfig.tiny(num_heads=3)
    with pytest.raises(ValueError, match="positive"):
        DiTConfig.tiny(num_layers=0)
    assert DiTConfig().head_dim == 128 and DiTConfig().rope_pairs == (22, 21, 21)


def test_dit_meta_init_and_input_errors():
    with torch.device("meta"):
        meta = SteadyDancerDiT(DiTConfig())
    assert sum(p.numel() for p in meta.parameters()) > 14e9
    model = tiny_model()
    inputs = tiny_inputs(model.config)
    with pytest.raises(ValueError, match="y must have shape"):
        model(**dict(inputs, y=inputs["y"][:, :4]))
    with pytest.raises(ValueError, match="divisible by the patch size"):
        model(**{k: (v[..., :3] if v.dim() == 5 else v) for k, v in inputs.items()})
    with pytest.raises(ValueError, match="more than text_len"):
        model(**dict(inputs, context=torch.zeros(1, 17, model.config.text_dim)))


@pytest.mark.gpu
@pytest.mark.fidelity
def test_dit_cuda_matches_official():
    """On CUDA: bf16 within the bf16 bar; fp32 (TF32 convolutions off) close to the fp64 truth."""
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        for dtype, bar in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
            model = load_fixture_model(dtype).to("cuda")
            for name, io in fixture_cases():
                inputs = {k: v.to("cuda") for k, v in case_inputs(io, name).items()}
                with torch.no_grad():
                    out = model(**inputs)[0].cpu()
                assert rel_l2(out, io[f"{name}.out_fp64"]) <= bar, (name, dtype)
    finally:
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
