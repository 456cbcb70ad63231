"""LoRA: every key style, merge == on-the-fly == manual W + s * alpha / r * B @ A, reports, load_dit integration."""
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from steadydancer_core.loading.errors import WeightFileError
from steadydancer_core.loading.file_writers import to_fp8
from steadydancer_core.loading.lora import apply_loras
from steadydancer_core.loading.quant_ops import PACKED_OPS, PackedLinear
from steadydancer_core.loading.state_dict import empty_init, load_state_dict_into
from steadydancer_core.models.ops import PLAIN_OPS

D, H = 64, 128


class Block(nn.Module):
    def __init__(self, ops=PLAIN_OPS):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q = ops.Linear(D, D)
        self.cross_attn = nn.Module()
        self.cross_attn.k_img = ops.Linear(D, D)
        self.norm3 = nn.LayerNorm(D)
        self.ffn = nn.Sequential(ops.Linear(D, H), nn.GELU(), ops.Linear(H, D))


class Toy(nn.Module):
    """Module names as in the DiT: blocks.0.self_attn.q, blocks.0.cross_attn.k_img, blocks.0.ffn.0/2, head.head."""

    def __init__(self, ops=PLAIN_OPS):
        super().__init__()
        self.blocks = nn.ModuleList([Block(ops)])
        self.head = nn.Module()
        self.head.head = ops.Linear(D, 32)
        self.head.modulation = nn.Parameter(torch.zeros(1, 2, D))


TARGETS = {"blocks.0.self_attn.q": (D, D), "blocks.0.ffn.0": (H, D), "head.head": (32, D)}
# per style: how each target module is spelled, and the suffixes of (down, up, alpha or None)
STYLES = {
    "lora_AB": (lambda m: "diffusion_model." + m, (".lora_A.weight", ".lora_B.weight", None)),
    "down_up_alpha": (lambda m: "diffusion_model." + m, (".lora_down.weight", ".lora_up.weight", ".alpha")),
    "kohya": (lambda m: "lora_unet_" + m.replace(".", "_"), (".lora_down.weight", ".lora_up.weight", ".alpha")),
    "diffusers": (lambda m: "transformer." + {"blocks.0.self_attn.q": "blocks.0.attn1.to_q",
                                               "blocks.0.ffn.0": "blocks.0.ffn.net.0.proj",
                                               "head.head": "proj_out"}[m],
                  (".lora_A.weight", ".lora_B.weight", None)),
}


def _base_sd(seed=0):
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) * 0.3 for k, v in Toy().state_dict().items()}


def _lora(style, rank=4, alpha=2.0, seed=1):
    """(file dict, {module: (down, up, alpha / rank)})"""
    g = torch.Generator().manual_seed(seed)
    spell, (down_s, up_s, alpha_s) = STYLES[style]
    out, truth = {}, {}
    for module, (o, i) in TARGETS.items():
        down, up = torch.randn(rank, i, generator=g), torch.randn(o, rank, generator=g)
        out[spell(module) + down_s], out[spell(module) + up_s] = down, up
        if alpha_s:
            out[spell(module) + alpha_s] = torch.tensor(alpha)
        truth[module] = (down, up, (alpha if alpha_s else rank) / rank)
    return out, truth


def _plain(sd):
    with empty_init():
        m = Toy()
    return load_state_dict_into(m, {k: v.clone() for k, v in sd.items()}, torch.float32)


def _packed(sd):
    with empty_init():
        m = Toy(PACKED_OPS)
    fp8 = to_fp8({k: v.clone() for k, v in sd.items()}, torch.float8_e4m3fn, scaled=True)
    return load_state_dict_into(m, fp8, torch.float32)


@pytest.mark.parametrize("style", sorted(STYLES))
def test_merge_equals_manual_and_on_the_fly(tmp_path, style):
    sd = _base_sd()
    lora, truth = _lora(style)
    save_file(lora, tmp_path / "l.safetensors")
    strength = 0.7

    merged = _plain(sd)
    report = apply_loras(merged, [(tmp_path / "l.safetensors", strength)])
    assert sorted(report.files[0].matched) == sorted(TARGETS) and not report.unmatched
    for module, (down, up, ratio) in truth.items():
        expected = sd[module + ".weight"] + strength * ratio * up @ down
        torch.testing.assert_close(merged.get_submodule(module).weight, expected, atol=1e-5, rtol=1e-5)

    packed = _packed(sd)
    apply_loras(packed, [(tmp_path / "l.safetensors", strength)])
    reference = _plain({**sd, **{f"{m}.weight": packed.get_submodule(m).dequantized_weight(torch.float32)
                                 for m in TARGETS}})
    apply_loras(reference, [(tmp_path / "l.safetensors", strength)])
    x = torch.randn(3, D)
    for module in TARGETS:
        layer = packed.get_submodule(module)
        assert isinstance(layer, PackedLinear) and layer.weight.dtype == torch.float8_e4m3fn and len(layer.loras) == 1
        torch.testing.assert_close(layer(x), reference.get_submodule(module)(x), atol=1e-4, rtol=1e-4)


def test_several_files_strengths_diff_and_report(tmp_path):
    sd = _base_sd()
    a, truth_a = _lora("lora_AB", seed=1)
    b, truth_b = _lora("kohya", seed=2)
    b["lora_unet_blocks_0_self_attn_nope.lora_down.weight"] = torch.zeros(4, D)
    b["diffusion_model.blocks.0.norm3.diff"] = torch.full((D,), 0.5)
    b["diffusion_model.blocks.0.ffn.2.diff_b"] = torch.full((D,), 0.25)
    b["something_else"] = torch.zeros(1)
    b["diffusion_model.head.diff_m"] = torch.ones(1, 2, D)          # lightx2v spelling of a modulation delta
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    model = _plain(sd)
    report = apply_loras(model, [(tmp_path / "a.safetensors", 1.0), (tmp_path / "b.safetensors", -0.5)])
    w = sd["blocks.0.self_attn.q.weight"].clone()
    for truth, s in ((truth_a, 1.0), (truth_b, -0.5)):
        down, up, ratio = truth["blocks.0.self_attn.q"]
        w += s * ratio * up @ down
    torch.testing.assert_close(model.blocks[0].self_attn.q.weight, w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.blocks[0].norm3.weight, sd["blocks.0.norm3.weight"] - 0.25)
    torch.testing.assert_close(model.blocks[0].ffn[2].bias, sd["blocks.0.ffn.2.bias"] - 0.125)
    torch.testing.assert_close(model.head.modulation, sd["head.modulation"] - 0.5)
    assert len(report.unmatched) == 2
    assert any("nope" in u for u in report.unmatched) and any("something_else" in u for u in report.unmatched)
    assert report.summary().splitlines() == [
        "a.safetensors: 3/3 modules, strength 1.0",
        "b.safetensors: 6/8 modules, strength -0.5; 2 not used, e.g. "
        "lora_unet_blocks_0_self_attn_nope.lora_down.weight (no such layer in the model)",
    ]

    packed = _packed(sd)
    apply_loras(packed, [(tmp_path / "b.safetensors", -0.5)])
    torch.testing.assert_close(packed.blocks[0].ffn[2].bias, sd["blocks.0.ffn.2.bias"] - 0.125)


def test_zero_strength_is_skipped(tmp_path):
    lora, _ = _lora("lora_AB")
    save_file(lora, tmp_path / "l.safetensors")
    sd = _base_sd()
    model = _plain(sd)
    report = apply_loras(model, [(tmp_path / "l.safetensors", 0.0)])
    assert report.files[0].matched == [] and torch.equal(model.blocks[0].self_attn.q.weight,
                                                         sd["blocks.0.self_attn.q.weight"])


def test_lora_for_another_model_is_an_error(tmp_path):
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 8)}, tmp_path / "sdxl.safetensors")
    with pytest.raises(WeightFileError, match="none of its 1 keys"):
        apply_loras(_plain(_base_sd()), [(tmp_path / "sdxl.safetensors", 1.0)])
    bad = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, D + 1),
           "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(D, 4)}
    save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(WeightFileError, match="does not fit"):
        apply_loras(_plain(_base_sd()), [(tmp_path / "bad.safetensors", 1.0)])


def test_load_dit_with_lora_gguf_on_the_fly(tmp_path):
    from steadydancer_core.loading.file_writers import save_gguf
    from steadydancer_core.loading.loaders import load_dit
    from steadydancer_core.models.dit import SteadyDancerDiT
    from steadydancer_core.models.dit_config import DiTConfig

    torch.manual_seed(0)
    config = DiTConfig.tiny(dim=256, num_heads=2, ffn_dim=256, freq_dim=256, text_dim=256, clip_dim=256,
                            num_layers=1, align_hidden=32, text_len=512)
    sd = SteadyDancerDiT(config).state_dict()
    save_gguf(tmp_path / "dit.gguf", sd, "Q8_0")
    g = torch.Generator().manual_seed(3)
    lora = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.randn(2, 256, generator=g),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.randn(256, 2, generator=g),
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(1.0)}
    save_file(lora, tmp_path / "l.safetensors")
    model = load_dit(tmp_path / "dit.gguf", dtype=torch.float32, loras=[(tmp_path / "l.safetensors", 0.5)])
    q = model.blocks[0].self_attn.q
    assert isinstance(q, PackedLinear) and q.qtype == "Q8_0" and len(q.loras) == 1
    assert model.lora_report.files[0].matched == ["blocks.0.self_attn.q"]
    x = torch.randn(2, 256)
    w = q.dequantized_weight(torch.float32) + 0.5 * 0.5 * lora[
        "diffusion_model.blocks.0.self_attn.q.lora_B.weight"] @ lora["diffusion_model.blocks.0.self_attn.q.lora_A.weight"]
    torch.testing.assert_close(q(x), x @ w.T + q.bias, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("strength", [float("inf"), float("-inf"), float("nan")])
def test_lora_strength_must_be_finite(strength, tmp_path):
    from steadydancer_core.loading.lora import apply_loras

    with pytest.raises(ValueError, match="strength must be a finite number"):
        apply_loras(torch.nn.Linear(2, 2), [(tmp_path / "never_read.safetensors", strength)])
