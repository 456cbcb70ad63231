"""Layer ops injected at construction, the swap declaration offload reads, and one answer to "which file is this?"."""
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from steadydancer_core import tiny_kit
from steadydancer_core.loading.errors import WeightFileError
from steadydancer_core.loading.file_writers import save_gguf, to_fp8
from steadydancer_core.loading.identify import identify_component
from steadydancer_core.loading.loaders import (
    load_dit,
    load_image_encoder,
    load_text_encoder,
    load_vae,
)
from steadydancer_core.loading.quant_ops import PACKED_OPS, PackedLinear, packed_linears
from steadydancer_core.loading.state_dict import empty_init, load_state_dict_into
from steadydancer_core.loading.weight_files import open_state_dict
from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.fused_linear import Linear
from steadydancer_core.models.ops import PLAIN_OPS
from steadydancer_core.models.text_encoder import UMT5Encoder
from steadydancer_core.runtime.block_swap import BlockSwap, declared_layout
from steadydancer_core.runtime.offload import Offloader

DIT_CFG, VAE_CFG, T5_CFG, CLIP_CFG = tiny_kit.tiny_configs()


def _dit_inputs(config, b=1, f=2, h=4, w=4):
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(x=r(b, 16, f, h, w), t=torch.tensor([600]), context=r(b, 5, config.text_dim), y=r(b, 20, f, h, w),
                condition=r(b, 16, f, h, w), ref_x=r(b, 36, 1, h, w), ref_c=r(b, 16, 1, h, w),
                clip_fea_x=r(b, config.clip_tokens, config.clip_dim), clip_fea_c=r(b, config.clip_tokens, config.clip_dim))


def _linear_modules(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)
            and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)}


# --- ops at construction ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [lambda ops: SteadyDancerDiT(DIT_CFG, ops=ops), lambda ops: UMT5Encoder(T5_CFG, ops)])
def test_every_linear_is_built_from_the_ops(build):
    plain, packed = build(PLAIN_OPS), build(PACKED_OPS)
    assert _linear_modules(plain) and all(type(m) is Linear for m in _linear_modules(plain).values())
    assert all(type(m) is PackedLinear for m in _linear_modules(packed).values())
    assert plain.state_dict().keys() == packed.state_dict().keys()
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in packed.state_dict().items()}


def test_packed_linear_with_a_dense_weight_is_the_plain_linear():
    torch.manual_seed(0)
    plain, packed = Linear(24, 8), PackedLinear(24, 8)
    packed.load_state_dict(plain.state_dict())
    x = torch.randn(3, 24)
    assert not packed.is_packed and torch.equal(packed(x), plain(x))
    assert torch.equal(packed.forward_activation(x, "gelu_tanh"), plain.forward_activation(x, "gelu_tanh"))
    with empty_init():
        meta = PackedLinear(24, 8, bias=False)
    assert meta.weight.is_meta and meta.bias is None and list(meta.state_dict()) == ["weight"]


def _packed_file(tmp_path, fmt):
    """The tiny DiT's state dict written fp8 (scaled) or GGUF Q8_0, opened lazily as the loaders open it."""
    sd = tiny_kit.dit_state_dict(DIT_CFG, seed=0)
    if fmt == "fp8":
        path = tmp_path / "dit.safetensors"
        save_file(to_fp8(sd, torch.float8_e4m3fn, scaled=True), path)
    else:
        path = tmp_path / "dit.gguf"
        save_gguf(path, sd, "Q8_0")
    return open_state_dict(path)


@pytest.mark.parametrize("fmt", ["fp8", "gguf"])
def test_packed_dit_equals_the_dequantised_dense_dit(tmp_path, fmt):
    with empty_init():
        packed = SteadyDancerDiT(DIT_CFG, ops=PACKED_OPS)
    load_state_dict_into(packed, _packed_file(tmp_path, fmt), torch.float32)
    layers = packed_linears(packed)
    # fp8: every linear holds its weight packed; GGUF Q8_0: those whose rows fit whole 32-value blocks
    assert len(layers) == len(_linear_modules(packed)) if fmt == "fp8" else layers
    dense_sd = {k: v.float() for k, v in packed.state_dict().items() if not k.endswith(".scale_weight")}
    dense_sd.update({f"{n}.weight": m.dequantized_weight(torch.float32) for n, m in layers.items()})
    dense = SteadyDancerDiT(DIT_CFG)
    dense.load_state_dict(dense_sd)
    inputs = _dit_inputs(DIT_CFG)
    with torch.no_grad():
        torch.testing.assert_close(packed.eval()(**inputs), dense.eval()(**inputs), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["fp8", "gguf"])
def test_loading_a_packed_file_replaces_no_module(tmp_path, fmt):
    with empty_init():
        model = SteadyDancerDiT(DIT_CFG, ops=PACKED_OPS)
    before = {n: id(m) for n, m in model.named_modules()}
    load_state_dict_into(model, _packed_file(tmp_path, fmt), torch.float32)
    assert {n: id(m) for n, m in model.named_modules()} == before
    assert packed_linears(model) and all(type(m) is PackedLinear for m in _linear_modules(model).values())


def test_loaders_choose_the_ops_from_the_file(tmp_path):
    sd = tiny_kit.dit_state_dict(DIT_CFG, seed=0)
    meta = {"steadydancer_config": '{"num_heads": 1}'}
    save_file({k: v.half() for k, v in sd.items()}, tmp_path / "fp16.safetensors", metadata=meta)
    names = [k for k in sd if k.startswith("blocks.") and k.endswith(".weight") and sd[k].dim() == 2]
    save_file(to_fp8(sd, names=names), tmp_path / "fp8.safetensors", metadata=meta)
    plain = load_dit(tmp_path / "fp16.safetensors", dtype=torch.float32)
    assert all(type(m) is Linear for m in _linear_modules(plain).values())
    mixed = load_dit(tmp_path / "fp8.safetensors", dtype=torch.float32)
    assert all(type(m) is PackedLinear for m in _linear_modules(mixed).values())
    assert {n for n in packed_linears(mixed)} == {k[: -len(".weight")] for k in names}
    inputs = _dit_inputs(DIT_CFG)
    with torch.no_grad():   # layers outside the blocks got dense weights: exactly the plain ones
        assert torch.equal(mixed.text_embedding(inputs["context"]), plain.text_embedding(inputs["context"]))


# --- the declaration offload reads -----------------------------------------------------------------------------

def test_offload_reads_the_models_declaration():
    assert declared_layout(SteadyDancerDiT) == ("blocks", ("text_embedding", "img_emb"))
    assert SteadyDancerDiT.HIGH_PRECISION == ("modulation",)

    class Declared(nn.Module):
        BLOCKS = "layers"
        SWAPPABLE_EMBEDDINGS = ("embed",)

        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 4)
            self.other = nn.Linear(4, 4)
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    swap = BlockSwap(Offloader.simulated(), Declared(), 2, prefetch=1, offload_embeddings=True)
    try:
        assert [u.name for u in swap.units] == ["embed", "layers.0", "layers.1"]
    finally:
        swap.detach()
    assert declared_layout(nn.Module()) == ("blocks", ())


# --- which file is this? ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def component_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("components")
    dit = tiny_kit.dit_state_dict(DIT_CFG, seed=0)
    plain = {k: v for k, v in dit.items() if not k.startswith(("patch_embedding_fuse", "patch_embedding_ref_c",
                                                               "condition_embedding"))}
    t5 = tiny_kit.t5_comfy_state_dict(T5_CFG, tiny_kit.train_tokenizer(), seed=3)
    files = {
        "dit": {"model.diffusion_model." + k: v.half() for k, v in dit.items()},
        "wan_i2v_plain": {k: v.half() for k, v in plain.items()},
        "vae": tiny_kit.vae_state_dict(VAE_CFG, seed=2),
        "text_encoder": t5,
        "image_encoder": tiny_kit.clip_hf_state_dict(CLIP_CFG, seed=4),
        None: {"lora_unet_x.lora_down.weight": torch.zeros(2, 2)},
    }
    paths = {}
    for kind, sd in files.items():
        paths[kind] = root / f"{kind}.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, paths[kind])
    return paths


LOADERS = {"dit": load_dit, "vae": load_vae, "text_encoder": load_text_encoder, "image_encoder": load_image_encoder}
FOUND = {"dit": "this is the SteadyDancer diffusion model (DiT); choose it under dit_name",
         "wan_i2v_plain": "this is a plain Wan 2.1 I2V diffusion model",
         "vae": "this is the Wan 2.1 VAE; choose it under vae_name",
         "text_encoder": "this is the umT5 text encoder; choose it under t5_name",
         "image_encoder": "this is the CLIP vision encoder; choose it under clip_vision_name",
         None: "this is not a file SteadyDancer uses"}
EXPECTED = {"dit": "expected the SteadyDancer diffusion model (DiT) here (Wan21_SteadyDancer_fp16.safetensors",
            "vae": "expected the Wan 2.1 VAE here (wan_2.1_vae.safetensors",
            "text_encoder": "expected the umT5 text encoder here (umt5_xxl_fp16.safetensors",
            "image_encoder": "expected the CLIP vision encoder here (clip_vision_h.safetensors"}


def test_identify_component_names_every_tiny_file(component_files):
    for kind, path in component_files.items():
        assert identify_component(path) == kind, path
        assert identify_component(str(path)) == kind


@pytest.mark.parametrize("loader", sorted(LOADERS))
def test_each_file_given_to_each_wrong_loader_says_what_it_is(component_files, loader):
    for kind, path in component_files.items():
        if kind == loader:
            continue
        with pytest.raises(WeightFileError) as err:
            LOADERS[loader](path)
        msg = str(err.value)
        if loader == "dit" and kind == "wan_i2v_plain":
            assert "plain Wan 2.1 checkpoint" in msg and "SteadyDancer checkpoint is needed" in msg
            continue
        assert FOUND[kind] in msg and EXPECTED[loader] in msg, msg
