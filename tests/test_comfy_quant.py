"""ComfyUI's own quantised formats (``<layer>.comfy_quant`` markers or the ``_quantization_metadata`` header; fp8
e4m3 / e5m2 with ``weight_scale`` / ``input_scale``, nvfp4) for the DiT and umT5: tiny files in each form, loaded by
the pack's loaders, compared with a reference decoded here from the format definition (not with the loader code)."""
import json

import pytest
import torch
from safetensors.torch import save_file

from steadydancer_core.loading.errors import StateDictMismatchError, WeightFileError
from steadydancer_core.loading.file_writers import to_comfy_quant
from steadydancer_core.loading.loaders import load_dit, load_text_encoder
from steadydancer_core.loading.nvfp4_codec import quantize_nvfp4
from steadydancer_core.loading.quant_ops import PackedLinear, packed_linears
from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.models.text_encoder_config import T5Config

FORMS = [("float8_e4m3fn", False), ("float8_e5m2", False), ("nvfp4", False), ("float8_e4m3fn", True),
         ("nvfp4", True)]           # (format, header form)
STORAGE = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2, "nvfp4": torch.uint8}
# relative L2 error of the forward against the unquantised model (fp4 is coarse; the tight check is the decode)
LOOSE = {"float8_e4m3fn": 0.08, "float8_e5m2": 0.15, "nvfp4": 0.4}


# ---------------------------------------------------------------------------------------------------------------
# Reference decoding, from the format definition
# ---------------------------------------------------------------------------------------------------------------
def e2m1(code: int) -> float:
    """fp4 e2m1: bit 3 sign, bits 2-1 exponent (bias 1), bit 0 mantissa; exponent 0 is subnormal (0 or 0.5)."""
    sign = -1.0 if code & 8 else 1.0
    exponent, mantissa = (code >> 1) & 3, code & 1
    return sign * (mantissa * 0.5 if exponent == 0 else 2.0 ** (exponent - 1) * (1 + mantissa * 0.5))


def blocked_offset(row: int, block: int, scale_cols: int) -> int:
    """Byte of scale (row, block) in cuBLAS's blocked layout: 128 x 4 tiles of 512 bytes, row-tile major."""
    tile = (row // 128) * (scale_cols // 4) + block // 4
    return tile * 512 + (row % 32) * 16 + ((row % 128) // 32) * 4 + block % 4


def decode_nvfp4(packed, blocked, global_scale, out_features, in_features) -> torch.Tensor:
    """float64 [out, in]: element (i, j) = e2m1(nibble) * block_scale(i, j // 16) * global; even j = high nibble."""
    values = torch.tensor([e2m1(c) for c in range(16)], dtype=torch.float64)
    codes = torch.empty(packed.shape[0], 2 * packed.shape[1], dtype=torch.long)
    codes[:, 0::2] = (packed >> 4).long()
    codes[:, 1::2] = (packed & 15).long()
    flat = blocked.view(torch.uint8).reshape(-1)
    blocks = -(-in_features // 16)
    rows, cols = torch.meshgrid(torch.arange(out_features), torch.arange(blocks), indexing="ij")
    offsets = blocked_offset(rows, cols, blocked.shape[1])
    scales = flat[offsets].view(torch.float8_e4m3fn).double()
    per_element = scales.repeat_interleave(16, dim=1)[:, :in_features]
    return values[codes[:out_features, :in_features]] * per_element * float(global_scale)


def reference_weights(tensors: dict, header_layers: dict) -> dict:
    """File tensors (ComfyUI layout) -> float32 dense tensors with the quantised layers decoded."""
    layers = {k[: -len(".comfy_quant")]: json.loads(bytes(v.tolist()))["format"]
              for k, v in tensors.items() if k.endswith(".comfy_quant")}
    layers.update({k: v["format"] for k, v in header_layers.items()})
    side = (".comfy_quant", ".weight_scale", ".weight_scale_2", ".input_scale")
    quantised = {layer + ".weight" for layer in layers}
    out = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()
           if not k.endswith(side) and k not in quantised}
    for layer, fmt in layers.items():
        w = tensors[layer + ".weight"]
        if fmt == "nvfp4":
            shape = out_in[layer + ".weight"]
            dense = decode_nvfp4(w, tensors[layer + ".weight_scale"], tensors[layer + ".weight_scale_2"], *shape)
        else:
            dense = w.double() * tensors[layer + ".weight_scale"].double()
        out[layer + ".weight"] = dense.float()
    return out


out_in: dict = {}        # weight name -> true [out, in], filled by the writers below (what nvfp4 decoding needs)


def write(path, sd: dict, fmt: str, header: bool, names, prefix: str = "", input_scales=None) -> dict:
    """Write ``sd`` with ``names`` quantised in ``fmt`` (markers or header); returns the reference dense weights."""
    out_in.update({prefix + n: tuple(sd[n].shape) for n in names})
    tensors, metadata = to_comfy_quant(sd, fmt, names=names, header=header, input_scales=input_scales)
    tensors = {prefix + k: v for k, v in tensors.items()}
    if header:
        meta = json.loads(metadata["_quantization_metadata"])
        meta["layers"] = {prefix + k: v for k, v in meta["layers"].items()}
        metadata = {"_quantization_metadata": json.dumps(meta)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    header_layers = json.loads(metadata["_quantization_metadata"])["layers"] if header else {}
    reference = reference_weights(tensors, header_layers)
    return {k[len(prefix):]: v for k, v in reference.items()}


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ---------------------------------------------------------------------------------------------------------------
# The codec at the layer level
# ---------------------------------------------------------------------------------------------------------------
def test_nvfp4_layer_decodes_padded_shapes_and_the_nibble_order():
    torch.manual_seed(0)
    w = torch.randn(40, 72)                         # neither a multiple of 16 nor of 128: padded storage
    packed, blocked, global_scale = quantize_nvfp4(w)
    assert packed.shape == (48, 40) and packed.dtype == torch.uint8
    assert blocked.shape == (128, 8) and blocked.dtype == torch.float8_e4m3fn and global_scale.numel() == 1
    layer = PackedLinear.from_packed(packed, None, global_scale, qtype="nvfp4", block_scale=blocked, shape=(40, 72))
    reference = decode_nvfp4(packed, blocked, global_scale, 40, 72)
    torch.testing.assert_close(layer.dequantized_weight(torch.float32).double(), reference, atol=0, rtol=2e-7)
    assert _rel(reference, w) < 0.12
    x = torch.randn(3, 72)
    torch.testing.assert_close(layer(x), x @ reference.float().T, atol=1e-5, rtol=1e-5)
    # hand-made bytes: 0x1F = (high: code 1 = +0.5, low: code 15 = -6); all block scales 1, global scale 2
    ones = torch.ones(16, 1).to(torch.float8_e4m3fn)
    from steadydancer_core.loading.nvfp4_codec import swizzle_block_scales

    byte = PackedLinear.from_packed(torch.full((16, 8), 0x1F, dtype=torch.uint8), None, torch.tensor(2.0),
                                    qtype="nvfp4", block_scale=swizzle_block_scales(ones), shape=(16, 16))
    assert byte.dequantized_weight(torch.float32)[0, :4].tolist() == [1.0, -12.0, 1.0, -12.0]


def test_fp8_layer_keeps_the_input_scale_and_the_full_precision_request(tmp_path):
    from steadydancer_core.loading.state_dict import empty_init, load_state_dict_into

    torch.manual_seed(0)
    dense = {"0.weight": torch.randn(32, 16), "0.bias": torch.randn(32)}
    tensors, _ = to_comfy_quant(dense, "float8_e4m3fn", names=["0.weight"], input_scales={"0": 0.25})
    tensors["0.comfy_quant"] = torch.tensor(list(json.dumps({"format": "float8_e4m3fn",
                                                              "full_precision_matrix_mult": True}).encode()),
                                            dtype=torch.uint8)
    with empty_init():
        m = torch.nn.Sequential(PackedLinear(16, 32))
    load_state_dict_into(m, tensors, torch.float32)
    assert m[0].weight.dtype == torch.float8_e4m3fn and m[0].input_scale.item() == 0.25 and m[0].full_precision_mm
    kj = {"0.weight": tensors["0.weight"], "0.bias": dense["0.bias"], "0.scale_weight": tensors["0.weight_scale"],
          "0.scale_input": torch.tensor(1.0)}                 # KJ's placeholder 1.0 means "no input scale"
    with empty_init():
        m = torch.nn.Sequential(PackedLinear(16, 32))
    load_state_dict_into(m, kj, torch.float32)
    assert m[0].input_scale is None and not m[0].full_precision_mm


# ---------------------------------------------------------------------------------------------------------------
# DiT
# ---------------------------------------------------------------------------------------------------------------
TINY = dict(dim=256, num_heads=2, ffn_dim=256, freq_dim=256, text_dim=256, clip_dim=256, num_layers=1,
            align_hidden=32, text_len=512)


@pytest.fixture(scope="module")
def tiny_dit():
    """(fp32 state dict, inputs, fp32 reference output) of a tiny SteadyDancer DiT."""
    torch.manual_seed(0)
    config = DiTConfig.tiny(**TINY)
    model = SteadyDancerDiT(config)
    sd = {k: (v + 0.05 * torch.randn_like(v)).half().float() for k, v in model.state_dict().items()}
    model.load_state_dict(sd)
    b, f, h, w = 1, 2, 4, 4
    g = torch.Generator().manual_seed(1)
    inputs = dict(x=torch.randn(b, 16, f, h, w, generator=g), t=torch.tensor([700]),
                  context=torch.randn(b, 5, config.text_dim, generator=g),
                  y=torch.randn(b, 20, f, h, w, generator=g), condition=torch.randn(b, 16, f, h, w, generator=g),
                  ref_x=torch.randn(b, 36, 1, h, w, generator=g), ref_c=torch.randn(b, 36, 1, h, w, generator=g),
                  clip_fea_x=torch.randn(b, config.clip_tokens, config.clip_dim, generator=g),
                  clip_fea_c=torch.randn(b, config.clip_tokens, config.clip_dim, generator=g))
    with torch.no_grad():
        ref = model.eval()(**inputs)
    return sd, inputs, ref


def block_linears(sd: dict) -> list:
    return [k for k in sd if k.startswith("blocks.") and k.endswith(".weight") and sd[k].dim() == 2]


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


@pytest.mark.parametrize("fmt,header", FORMS)
def test_dit_comfy_quant_forms_stay_packed_and_match_the_decoded_reference(tmp_path, tiny_dit, fmt, header):
    sd, inputs, ref = tiny_dit
    names = block_linears(sd)
    scales = {n[: -len(".weight")]: 0.05 for n in names[:3]} if fmt != "nvfp4" else None
    dense = write(tmp_path / "dit.safetensors", {k: v.half() for k, v in sd.items()}, fmt, header, names,
                  prefix="model.diffusion_model.", input_scales=scales)
    model = load_dit(tmp_path / "dit.safetensors", dtype=torch.float32)
    assert model.config == DiTConfig.tiny(**TINY)
    packed = packed_linears(model)
    assert sorted(n + ".weight" for n in packed) == sorted(names)
    assert all(p.weight.dtype == STORAGE[fmt] and p.qtype == fmt for p in packed.values())
    if scales:
        assert {n for n, p in packed.items() if p.input_scale is not None} == set(scales)
    twin = SteadyDancerDiT(model.config)
    twin.load_state_dict(dense)
    out = _run(model, inputs)
    torch.testing.assert_close(out, _run(twin.eval(), inputs), atol=1e-4, rtol=1e-4)
    assert _rel(out, ref) < LOOSE[fmt]
    if fmt == "nvfp4" and header:
        bf16 = load_dit(tmp_path / "dit.safetensors", dtype=torch.bfloat16)
        assert _rel(_run(bf16, inputs), out) < 0.05


def test_dit_comfy_quant_strict_errors_name_the_keys(tmp_path, tiny_dit):
    sd, _, _ = tiny_dit
    names = block_linears(sd)
    fp8, _ = to_comfy_quant(sd, "float8_e4m3fn", names=names)
    nv, _ = to_comfy_quant(sd, "nvfp4", names=names)
    q = "blocks.0.self_attn.q"

    def load(tensors, name):
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / name))
        return load_dit(tmp_path / name, dtype=torch.float32)

    broken = {k: v for k, v in fp8.items() if k != f"{q}.weight_scale"}
    broken["blocks.0.nothing.weight_scale"] = torch.tensor(1.0)
    broken[f"{q}.weight_scale_2"] = torch.tensor(1.0)                  # an nvfp4 entry on an fp8 layer
    with pytest.raises(StateDictMismatchError) as err:
        load(broken, "broken.safetensors")
    assert err.value.missing == [f"{q}.weight_scale"]
    assert set(err.value.unexpected) == {"blocks.0.nothing.weight_scale", f"{q}.weight_scale_2"}

    with pytest.raises(StateDictMismatchError, match=rf"missing key.*{q}\.weight_scale_2"):
        load({k: v for k, v in nv.items() if k != f"{q}.weight_scale_2"}, "no_global.safetensors")
    short = dict(nv)
    short[f"{q}.weight_scale"] = short[f"{q}.weight_scale"][:64]
    with pytest.raises(StateDictMismatchError, match=rf"{q}\.weight_scale: file \(64, 16\) vs nvfp4 block scales"):
        load(short, "short.safetensors")

    wrong = dict(fp8)
    wrong[f"{q}.comfy_quant"] = torch.tensor(list(b'{"format": "float8_e5m2"}'), dtype=torch.uint8)
    with pytest.raises(WeightFileError, match=rf"{q}\.weight is stored as float8_e4m3fn but marked float8_e5m2"):
        load(wrong, "wrong.safetensors")
    unknown = dict(fp8)
    unknown[f"{q}.comfy_quant"] = torch.tensor(list(b'{"format": "mxfp8"}'), dtype=torch.uint8)
    with pytest.raises(WeightFileError, match=rf"'{q}\.comfy_quant' declares quantisation format 'mxfp8'.*"
                                              r"supported formats: float8_e4m3fn, float8_e5m2, nvfp4"):
        load(unknown, "unknown.safetensors")


def test_header_and_marker_must_agree(tmp_path, tiny_dit):
    sd, _, _ = tiny_dit
    q = "blocks.0.self_attn.q"
    tensors, _ = to_comfy_quant(sd, "float8_e4m3fn", names=[f"{q}.weight"])
    header = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": {q: "float8_e5m2"}})}
    save_file(tensors, str(tmp_path / "disagree.safetensors"), metadata=header)
    with pytest.raises(WeightFileError, match=rf"'{q}\.comfy_quant' says 'float8_e4m3fn' but the "
                                              r"'_quantization_metadata' header says 'float8_e5m2'"):
        load_dit(tmp_path / "disagree.safetensors")
    # the bare format name (QUANTIZATION.md's example) is read like {"format": ...}
    tensors.pop(f"{q}.comfy_quant")
    header = {"_quantization_metadata": json.dumps({"layers": {q: "float8_e4m3fn"}})}
    save_file(tensors, str(tmp_path / "bare.safetensors"), metadata=header)
    assert load_dit(tmp_path / "bare.safetensors").blocks[0].self_attn.q.qtype == "float8_e4m3fn"


# ---------------------------------------------------------------------------------------------------------------
# umT5
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_t5():
    from steadydancer_core.tiny_kit import t5_comfy_state_dict, train_tokenizer

    return t5_comfy_state_dict(T5Config.tiny(vocab_size=128), train_tokenizer(), seed=3)


@pytest.mark.parametrize("fmt,header", FORMS)
def test_umt5_comfy_quant_forms_stay_packed_and_match_the_decoded_reference(tmp_path, tiny_t5, fmt, header):
    names = [k for k in tiny_t5 if k.endswith(".weight") and (".SelfAttention." in k or ".DenseReluDense." in k)
             and "relative_attention_bias" not in k]
    assert len(names) == 14
    scales = {n[: -len(".weight")]: 0.02 for n in names[:2]} if fmt != "nvfp4" else None
    dense = write(tmp_path / "t5.safetensors", tiny_t5, fmt, header, names, input_scales=scales)
    save_file({k: v.contiguous() for k, v in dense.items()}, str(tmp_path / "t5_dense.safetensors"))
    enc = load_text_encoder(tmp_path / "t5.safetensors", dtype=torch.float32)
    packed = packed_linears(enc.model)
    assert len(packed) == 14 and all(p.weight.dtype == STORAGE[fmt] for p in packed.values())
    ref = load_text_encoder(tmp_path / "t5_dense.safetensors", dtype=torch.float32)
    prompts = ["a woman dances gracefully", "the man waves"]
    for got, want in zip(enc.encode(prompts), ref.encode(prompts)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
