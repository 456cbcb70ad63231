"""Weight readers, clear file errors, key-name converters and DiT loading in every format."""
import json

import pytest
import torch
from safetensors.torch import save_file

from steadydancer_core.loading.errors import WeightFileError
from steadydancer_core.loading.gguf_codecs import GGUFTensor
from steadydancer_core.loading.identify import identify_component
from steadydancer_core.loading.key_names import (
    clip_to_official,
    dit_to_official,
    strip_prefixes,
    t5_to_official,
)
from steadydancer_core.loading.quant_ops import PACKED_OPS, PackedLinear
from steadydancer_core.loading.state_dict import empty_init, load_state_dict_into
from steadydancer_core.loading.weight_files import (
    LazyStateDict,
    open_state_dict,
    read_state_dict,
)


def _tensors():
    torch.manual_seed(0)
    return {"a.weight": torch.randn(4, 3), "b.bias": torch.randn(5).half(), "c": torch.arange(3)}


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_read_safetensors_pth_and_sharded_dir(tmp_path):
    sd = _tensors()
    save_file(sd, tmp_path / "one.safetensors")
    _assert_same(read_state_dict(tmp_path / "one.safetensors"), sd)
    torch.save(sd, tmp_path / "one.pth")
    _assert_same(read_state_dict(tmp_path / "one.pth"), sd)
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pt")
    _assert_same(read_state_dict(tmp_path / "wrapped.pt"), sd)

    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    save_file({"a.weight": sd["a.weight"]}, d / "diffusion_pytorch_model-00001-of-00002.safetensors")
    save_file({"b.bias": sd["b.bias"], "c": sd["c"]}, d / "diffusion_pytorch_model-00002-of-00002.safetensors")
    _assert_same(read_state_dict(d), sd)   # no index: all shards
    index = {"weight_map": {"a.weight": "diffusion_pytorch_model-00001-of-00002.safetensors",
                            "b.bias": "diffusion_pytorch_model-00002-of-00002.safetensors",
                            "c": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (d / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    lazy = open_state_dict(d)
    assert lazy.shape_of("a.weight") == (4, 3) and lazy.dtype_of("b.bias") == "float16"
    _assert_same(dict(lazy.items()), sd)


def test_clear_errors_for_bad_files(tmp_path):
    with pytest.raises(WeightFileError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")
    save_file(_tensors(), tmp_path / "ok.safetensors")
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-10])
    with pytest.raises(WeightFileError, match="truncated"):
        read_state_dict(tmp_path / "cut.safetensors")
    (tmp_path / "head.safetensors").write_bytes(data[:20])
    with pytest.raises(WeightFileError, match="truncated"):
        read_state_dict(tmp_path / "head.safetensors")
    (tmp_path / "text.safetensors").write_bytes(b"hello world, this is not a weight file at all")
    with pytest.raises(WeightFileError, match="safetensors"):
        read_state_dict(tmp_path / "text.safetensors")
    torch.save(_tensors(), tmp_path / "really_a_pth.safetensors")
    with pytest.raises(WeightFileError, match="PyTorch"):
        read_state_dict(tmp_path / "really_a_pth.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightFileError, match="unsupported file type"):
        read_state_dict(tmp_path / "w.onnx")
    (tmp_path / "bad.pth").write_bytes(b"garbage" * 10)
    with pytest.raises(WeightFileError, match="PyTorch weight file"):
        read_state_dict(tmp_path / "bad.pth")
    torch.save({"a": torch.zeros(1), "b": WeightFileError("not a tensor")}, tmp_path / "objects.pth")
    with pytest.raises(WeightFileError, match="Python objects besides tensors"):
        read_state_dict(tmp_path / "objects.pth")
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(WeightFileError, match="GGUF"):
        read_state_dict(tmp_path / "bad.gguf")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(WeightFileError, match="diffusion_pytorch_model"):
        read_state_dict(empty)


def test_strip_prefixes_and_lazy_passthrough():
    sd = {"model.diffusion_model.blocks.0.x": torch.zeros(1), "model.head.y": torch.zeros(2),
          "diffusion_model.z": torch.zeros(3), "scaled_fp8": torch.zeros(0)}
    out = strip_prefixes(sd)
    assert sorted(out) == ["blocks.0.x", "head.y", "scaled_fp8", "z"]
    lazy = dit_to_official(LazyStateDict.from_tensors(sd))
    assert isinstance(lazy, LazyStateDict) and lazy.shape_of("z") == (3,)
    assert identify_component(["model.diffusion_model.blocks.0.self_attn.q.weight"]) == "wan_i2v_plain"


def test_t5_converter_synthetic_keeps_side_entries_and_official_passthrough():
    sd = {"shared.weight": torch.zeros(8, 4), "encoder.embed_tokens.weight": torch.zeros(8, 4),
          "encoder.block.3.layer.1.DenseReluDense.wi_0.weight": torch.zeros(2, 4),
          "encoder.block.3.layer.1.DenseReluDense.wi_0.scale_weight": torch.tensor(1.0),
          "encoder.block.0.layer.0.SelfAttention.o.weight": torch.zeros(4, 4),
          "spiece_model": torch.zeros(3, dtype=torch.uint8)}
    out = t5_to_official(sd)
    assert sorted(out) == ["blocks.0.attn.o.weight", "blocks.3.ffn.gate.0.scale_weight", "blocks.3.ffn.gate.0.weight",
                           "spiece_model", "token_embedding.weight"]
    assert sorted(t5_to_official(out)) == sorted(out)
    gguf_names = {"token_embd.weight": 0, "enc.blk.1.attn_q.weight": 0, "enc.blk.1.attn_norm.weight": 0,
                  "enc.blk.1.attn_rel_b.weight": 0, "enc.blk.1.ffn_gate.weight": 0, "enc.blk.1.ffn_up.weight": 0,
                  "enc.blk.1.ffn_down.weight": 0, "enc.blk.1.ffn_norm.weight": 0, "enc.output_norm.weight": 0}
    assert sorted(t5_to_official({k: torch.zeros(1) for k in gguf_names})) == [
        "blocks.1.attn.q.weight", "blocks.1.ffn.fc1.weight", "blocks.1.ffn.fc2.weight", "blocks.1.ffn.gate.0.weight",
        "blocks.1.norm1.weight", "blocks.1.norm2.weight", "blocks.1.pos_embedding.embedding.weight", "norm.weight",
        "token_embedding.weight"]


def test_clip_converter_synthetic_qkv_fp8_scaled():
    d = 4
    q, k, v = (torch.randn(d, d) for _ in range(3))
    sd = {"vision_model.encoder.layers.0.self_attn.q_proj.weight": q.to(torch.float8_e4m3fn),
          "vision_model.encoder.layers.0.self_attn.q_proj.scale_weight": torch.tensor(2.0),
          "vision_model.encoder.layers.0.self_attn.k_proj.weight": k,
          "vision_model.encoder.layers.0.self_attn.v_proj.weight": v,
          "vision_model.embeddings.class_embedding": torch.randn(d)}
    out = clip_to_official(sd)
    assert sorted(out) == ["visual.cls_embedding", "visual.transformer.0.attn.to_qkv.weight"]
    qkv = out["visual.transformer.0.attn.to_qkv.weight"]
    torch.testing.assert_close(qkv[:d], q.to(torch.float8_e4m3fn).float() * 2)
    torch.testing.assert_close(qkv[d:], torch.cat([k, v]))
    assert out["visual.cls_embedding"].shape == (1, 1, d)


def test_clip_converter_dequantises_gguf_qkv():
    from steadydancer_core.loading.gguf_codecs import dequantize_gguf, quantize_gguf

    d = 32
    q, k, v = (torch.randn(d, d) for _ in range(3))
    packed = GGUFTensor(torch.from_numpy(quantize_gguf(q, "Q8_0")), "Q8_0", q.shape)
    sd = {"vision_model.encoder.layers.0.self_attn.q_proj.weight": packed,
          "vision_model.encoder.layers.0.self_attn.k_proj.weight": k,
          "vision_model.encoder.layers.0.self_attn.v_proj.weight": v}
    qkv = clip_to_official(sd)["visual.transformer.0.attn.to_qkv.weight"]
    assert qkv.shape == (3 * d, d)
    torch.testing.assert_close(qkv[:d], dequantize_gguf(packed, "Q8_0", q.shape, torch.float32))
    torch.testing.assert_close(qkv[d:], torch.cat([k, v]))


@pytest.mark.fidelity
def test_t5_converter_matches_official_names_and_values():
    from conftest import fixture_file

    official = read_state_dict(fixture_file("umt5_tiny", "umt5_tiny_official.pth"))
    comfy = t5_to_official(read_state_dict(fixture_file("umt5_tiny", "umt5_tiny_fp16.safetensors")))
    assert set(comfy) - set(official) == {"spiece_model"}
    for key, value in official.items():
        assert torch.equal(comfy[key].float(), value.float()), key
    fp8 = t5_to_official(open_state_dict(fixture_file("umt5_tiny", "umt5_tiny_fp8_scaled.safetensors")))
    assert fp8.dtype_of("blocks.0.attn.q.weight") == "float8_e4m3fn" and "blocks.0.attn.q.scale_weight" in fp8


@pytest.mark.fidelity
def test_clip_converter_matches_official_visual_tower():
    from conftest import fixture_file

    official = {k: v for k, v in read_state_dict(fixture_file("clip_vision_tiny", "clip_tiny_official.pth")).items()
                if k.startswith("visual.")}
    comfy = clip_to_official(read_state_dict(fixture_file("clip_vision_tiny", "clip_vision_tiny.safetensors")),
                             drop_unused=False)
    assert sorted(comfy) == sorted(official)
    for key, value in official.items():
        assert comfy[key].shape == value.shape and torch.equal(comfy[key].float(), value.float()), key
    assert clip_to_official(official) .keys() == clip_to_official(comfy).keys()


@pytest.mark.fidelity
def test_t5_fp8_scaled_fixture_loads_packed():
    """The umT5 fp8 fixture through the generic loader: Linear weights stay fp8, dequantised values exact."""
    from conftest import fixture_file

    sd = t5_to_official(open_state_dict(fixture_file("umt5_tiny", "umt5_tiny_fp8_scaled.safetensors")))
    names = [k for k in sd.keys() if k.endswith(".weight") and sd.dtype_of(k) == "float8_e4m3fn"]
    linears = {k[: -len(".weight")]: sd.shape_of(k) for k in names}

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict({n.replace(".", "_"): PACKED_OPS.Linear(s[1], s[0], bias=False)
                                               for n, s in linears.items()})

    flat = {n.replace(".", "_"): n for n in linears}
    sub = {f"layers.{f}.{suffix}": sd[f"{n}.{suffix}"] for f, n in flat.items() for suffix in ("weight", "scale_weight")}
    sub["scaled_fp8"] = sd["scaled_fp8"]
    with empty_init():
        m = Holder()
    load_state_dict_into(m, sub, torch.float32)
    for f, n in flat.items():
        layer = m.layers[f]
        assert isinstance(layer, PackedLinear) and layer.weight.dtype == torch.float8_e4m3fn
        ref = sd[f"{n}.weight"].float() * sd[f"{n}.scale_weight"]
        torch.testing.assert_close(layer.dequantized_weight(torch.float32), ref, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# DiT in every format
# ---------------------------------------------------------------------------------------------------------------
from safetensors.torch import load_file  # noqa: E402

from steadydancer_core.loading.errors import StateDictMismatchError  # noqa: E402
from steadydancer_core.loading.file_writers import save_gguf, to_fp8  # noqa: E402
from steadydancer_core.loading.loaders import load_dit  # noqa: E402
from steadydancer_core.models.dit import SteadyDancerDiT  # noqa: E402
from steadydancer_core.models.dit_config import DiTConfig  # noqa: E402

# head_dim 128 so num_heads follows the official dim // 128 rule without a config.json; widths of 256 so every
# linear fits K-quant blocks (like the real model)
TINY = dict(dim=256, num_heads=2, ffn_dim=256, freq_dim=256, text_dim=256, clip_dim=256, num_layers=1,
            align_hidden=32, text_len=512)


@pytest.fixture(scope="module")
def tiny_dit():
    """(fp16-representable fp32 state dict, inputs, fp32 reference output)."""
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


def _run(model, inputs):
    with torch.no_grad():
        return model(**inputs)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model.", "model."])
def test_dit_single_file_fp16_with_and_without_prefix(tmp_path, tiny_dit, prefix):
    sd, inputs, ref = tiny_dit
    save_file({prefix + k: v.half() for k, v in sd.items()}, tmp_path / "dit.safetensors")
    model = load_dit(tmp_path / "dit.safetensors", dtype=torch.float32)
    assert model.config == DiTConfig.tiny(**TINY)
    assert not any(p.is_meta for p in model.parameters())
    torch.testing.assert_close(_run(model, inputs), ref, atol=1e-4, rtol=1e-4)
    if prefix:
        return
    bf16 = load_dit(tmp_path / "dit.safetensors", dtype=torch.bfloat16)
    assert bf16.patch_embedding_fuse.weight.dtype == torch.bfloat16
    assert _rel(_run(bf16, inputs), ref) < 3e-2


def test_dit_sharded_official_dir(tmp_path, tiny_dit):
    sd, inputs, ref = tiny_dit
    keys = sorted(sd)
    half = len(keys) // 2
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[:half],
              "diffusion_pytorch_model-00002-of-00002.safetensors": keys[half:]}
    for name, names in shards.items():
        save_file({k: sd[k].to(torch.bfloat16) for k in names}, tmp_path / name)
    index = {"weight_map": {k: name for name, names in shards.items() for k in names}}
    (tmp_path / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text(json.dumps({"dim": 256, "num_heads": 2, "text_len": 512}))
    model = load_dit(tmp_path, dtype=torch.float32)
    assert _rel(_run(model, inputs), ref) < 3e-2


def test_dit_single_file_metadata_states_num_heads(tmp_path, tiny_dit):
    from steadydancer_core.loading.key_names import DIT_CONFIG_METADATA_KEY as KEY

    sd, inputs, ref = tiny_dit
    fp16 = {k: v.half() for k, v in sd.items()}
    save_file(fp16, tmp_path / "four_heads.safetensors", metadata={KEY: json.dumps({"num_heads": 4})})
    model = load_dit(tmp_path / "four_heads.safetensors", dtype=torch.float32)
    assert model.config.num_heads == 4 and model.config.head_dim == 64     # not the dim // 128 default
    save_file(fp16, tmp_path / "bad.safetensors", metadata={KEY: "{num_heads: 4"})
    with pytest.raises(WeightFileError, match="metadata 'steadydancer_config'.*not valid JSON"):
        load_dit(tmp_path / "bad.safetensors")
    save_file(fp16, tmp_path / "odd.safetensors", metadata={KEY: json.dumps({"num_heads": 3})})
    with pytest.raises(WeightFileError, match="not divisible by num_heads 3"):
        load_dit(tmp_path / "odd.safetensors")


def _dequantised_twin(model):
    """fp32 model whose packed linears are replaced by their exact dequantised weights."""
    from steadydancer_core.loading.quant_ops import packed_linears

    packed = packed_linears(model)
    side = {f"{n}.{leaf}" for n in packed for leaf in ("weight", "scale_weight")}
    sd = {k: v.float() for k, v in model.state_dict().items() if k not in side}
    for name, layer in packed.items():
        sd[name + ".weight"] = layer.dequantized_weight(torch.float32)
    twin = SteadyDancerDiT(model.config)
    twin.load_state_dict(sd)
    return twin.eval()


@pytest.mark.parametrize("fmt,tol", [("e4m3fn", 0.08), ("e4m3fn_scaled", 0.08), ("e5m2_scaled", 0.15)])
def test_dit_fp8_kept_packed(tmp_path, tiny_dit, fmt, tol):
    from steadydancer_core.loading.quant_ops import PackedLinear, packed_linears

    sd, inputs, ref = tiny_dit
    dtype = torch.float8_e4m3fn if fmt.startswith("e4m3fn") else torch.float8_e5m2
    names = [k for k in sd if k.startswith("blocks.") and k.endswith(".weight") and sd[k].dim() == 2]
    fp8 = to_fp8({k: v.half() for k, v in sd.items()}, dtype, scaled=fmt.endswith("scaled"), names=names)
    save_file({"model.diffusion_model." + k: v for k, v in fp8.items()}, tmp_path / "dit_fp8.safetensors")
    model = load_dit(tmp_path / "dit_fp8.safetensors", dtype=torch.float32)
    packed = packed_linears(model)
    assert len(packed) == len(names) and all(p.weight.dtype == dtype for p in packed.values())
    assert isinstance(model.blocks[0].self_attn.q, PackedLinear)
    out = _run(model, inputs)
    torch.testing.assert_close(out, _run(_dequantised_twin(model), inputs), atol=1e-4, rtol=1e-4)
    assert _rel(out, ref) < tol


@pytest.mark.parametrize("qtype,tol", [("Q8_0", 0.02), ("Q6_K", 0.05), ("Q5_K", 0.1), ("Q4_K", 0.2)])
def test_dit_gguf_dequantised_per_layer(tmp_path, tiny_dit, qtype, tol):
    from steadydancer_core.loading.quant_ops import packed_linears

    sd, inputs, ref = tiny_dit
    save_gguf(tmp_path / "dit.gguf", sd, qtype)
    model = load_dit(tmp_path / "dit.gguf", dtype=torch.float32)
    packed = packed_linears(model)
    assert len(packed) >= 10 and {p.qtype for p in packed.values()} == {qtype}
    assert all(p.weight.dtype == torch.uint8 for p in packed.values())
    out = _run(model, inputs)
    torch.testing.assert_close(out, _run(_dequantised_twin(model), inputs), atol=1e-4, rtol=1e-4)
    assert _rel(out, ref) < tol
    if qtype == "Q4_K":
        assert _run(load_dit(tmp_path / "dit.gguf", dtype=torch.bfloat16), inputs).dtype == torch.bfloat16


def test_dit_plain_wan_and_strict_errors(tmp_path, tiny_dit):
    sd, _, _ = tiny_dit
    wan = {k: v for k, v in sd.items() if not k.startswith(("condition_embedding", "patch_embedding_fuse",
                                                            "patch_embedding_ref_c"))}
    save_file(wan, tmp_path / "wan.safetensors")
    with pytest.raises(WeightFileError, match="plain Wan 2.1.*SteadyDancer checkpoint is needed"):
        load_dit(tmp_path / "wan.safetensors")
    broken = dict(sd)
    del broken["blocks.0.cross_attn.k_img.bias"]
    broken["blocks.0.extra.weight"] = torch.zeros(2)
    broken["blocks.0.ffn.2.bias"] = torch.zeros(7)
    save_file(broken, tmp_path / "broken.safetensors")
    with pytest.raises(StateDictMismatchError) as err:
        load_dit(tmp_path / "broken.safetensors")
    msg = str(err.value)
    assert "blocks.0.cross_attn.k_img.bias" in msg and "blocks.0.extra.weight" in msg and "blocks.0.ffn.2.bias" in msg
    save_file({"decoder.conv1.weight": torch.zeros(1)}, tmp_path / "vae.safetensors")
    with pytest.raises(WeightFileError, match="this is the Wan 2.1 VAE; choose it under vae_name"):
        load_dit(tmp_path / "vae.safetensors")


@pytest.mark.fidelity
def test_dit_load_official_dir_fidelity():
    from conftest import fixture_file

    import json

    model = load_dit(fixture_file("steadydancer_dit", "model"), dtype=torch.float32)
    io = load_file(fixture_file("steadydancer_dit", "dit_io.safetensors"))
    cases = [c["name"] for c in json.loads(fixture_file("steadydancer_dit", "dit_meta.json").read_text())["cases"]]
    assert cases
    for case in cases:
        kwargs = {k: io[f"{case}.{k}"] for k in ("x", "t", "context", "y", "condition", "ref_x", "ref_c")}
        kwargs = {k: (v if k == "t" else v.float()[None]) for k, v in kwargs.items()}
        kwargs.update(clip_fea_x=io["clip_fea_x"].float(), clip_fea_c=io["clip_fea_c"].float())
        out = _run(model, kwargs)[0]
        assert (out - io[f"{case}.out_fp32"]).abs().max().item() <= 1e-4, case


def test_name_tables_map_both_ways():
    from steadydancer_core.loading.key_names import (
        CLIP_RENAMES,
        CLIP_TO_HF,
        T5_RENAMES,
        T5_TO_COMFY,
        prefix_rules,
        rename_key,
    )

    rules = prefix_rules((("enc.{i}.attn_{qkvo}.", "blocks.{i}.attn.{qkvo}."),))
    assert rename_key("enc.12.attn_k.scale_weight", rules) == "blocks.12.attn.k.scale_weight"
    assert rename_key("enc.x.attn_k.weight", rules) == "enc.x.attn_k.weight"      # unmatched keys are kept
    with pytest.raises(KeyError, match="no name mapping"):
        rename_key("enc.x.attn_k.weight", rules, strict=True)
    for official in ("token_embedding.weight", "blocks.7.attn.o.weight", "blocks.0.ffn.gate.0.scale_weight",
                     "blocks.23.pos_embedding.embedding.weight", "norm.weight"):
        assert rename_key(rename_key(official, T5_TO_COMFY, strict=True), T5_RENAMES) == official
    assert rename_key("blocks.3.ffn.fc1.weight", T5_TO_COMFY) == "encoder.block.3.layer.1.DenseReluDense.wi_1.weight"
    for official in ("visual.pre_norm.bias", "visual.transformer.30.mlp.2.weight", "visual.transformer.1.attn.proj.bias"):
        assert rename_key(rename_key(official, CLIP_TO_HF, strict=True), CLIP_RENAMES) == official


@pytest.mark.parametrize("extra", ["namespace", "ndarray", "legacy"])
def test_refused_pickle_says_it_holds_python_objects(tmp_path, extra):
    import argparse

    import numpy as np

    from steadydancer_core.loading.errors import WeightFileError
    from steadydancer_core.loading.weight_files import open_state_dict

    obj = {"w": torch.zeros(2), "extra": np.zeros(3) if extra == "ndarray" else argparse.Namespace(lr=1e-4)}
    path = tmp_path / "model.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=extra != "legacy")
    with pytest.raises(WeightFileError, match="contains Python objects besides tensors") as info:
        open_state_dict(path)
    assert "damaged" not in str(info.value) and str(path) in str(info.value)
