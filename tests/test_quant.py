"""fp8 / GGUF packed weights, torch dequantisers vs the gguf package, and the generic state-dict loader.

The gguf package is imported by the two tests that compare against it, so ``pytest -m gpu`` and the rest of this
file still collect where it is not installed (those two then say why they skip)."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from steadydancer_core.loading.errors import StateDictMismatchError, WeightFileError
from steadydancer_core.loading.gguf_codecs import (
    GGUF_BLOCKS,
    GGUFTensor,
    dequantize_gguf,
    quantize_gguf,
)
from steadydancer_core.loading.quant_ops import PACKED_OPS, PackedLinear
from steadydancer_core.loading.state_dict import empty_init, load_state_dict_into
from steadydancer_core.models.ops import PLAIN_OPS

QTYPES = sorted(GGUF_BLOCKS)


def _gguf():
    return pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")


def _random_blocks(qtype: str, n_blocks: int, seed: int = 0) -> np.ndarray:
    """Arbitrary block bytes with finite fp16 super-scales (exercises every bit of the layout)."""
    rng = np.random.default_rng(seed)
    _, nbytes = GGUF_BLOCKS[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    scale_pos = {"Q8_0": [0], "Q4_0": [0], "Q5_0": [0], "Q4_1": [0, 2], "Q5_1": [0, 2], "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2],
                 "Q5_K": [0, 2], "Q6_K": [nbytes - 2]}[qtype]
    for p in scale_pos:
        raw[:, p:p + 2] = rng.uniform(-0.1, 0.1, size=n_blocks).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw


@pytest.mark.parametrize("qtype", QTYPES)
def test_torch_dequant_matches_gguf_package_on_random_bytes(qtype):
    block, _ = GGUF_BLOCKS[qtype]
    raw = _random_blocks(qtype, 12)
    gguf = _gguf()
    ref = gguf.quants.dequantize(raw.reshape(3, -1), gguf.GGMLQuantizationType[qtype])
    mine = dequantize_gguf(torch.from_numpy(raw.reshape(3, -1)), qtype, (3, 4 * block))
    np.testing.assert_array_equal(mine.numpy(), ref)


@pytest.mark.parametrize("qtype,rel", [("Q8_0", 0.01), ("Q6_K", 0.03), ("Q5_K", 0.06), ("Q4_K", 0.12)])
def test_quantize_roundtrip(qtype, rel):
    x = torch.randn(4, 512)
    raw = quantize_gguf(x, qtype)
    gguf = _gguf()
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[qtype])
    y = dequantize_gguf(torch.from_numpy(raw), qtype, x.shape)
    np.testing.assert_array_equal(y.numpy(), ref)
    assert ((y - x).norm() / x.norm()).item() < rel


def test_packed_linear_fp8_scaled_and_gguf():
    torch.manual_seed(0)
    w, b, x = torch.randn(8, 256), torch.randn(8), torch.randn(3, 256)
    scale = torch.tensor(0.01)
    q8 = (w / scale).to(torch.float8_e4m3fn)
    lin = PackedLinear.from_packed(q8, b, scale)
    assert lin.weight.dtype == torch.float8_e4m3fn
    ref = x @ (q8.float() * scale).T + b
    torch.testing.assert_close(lin(x), ref, atol=1e-5, rtol=1e-5)
    raw = GGUFTensor(torch.from_numpy(quantize_gguf(w, "Q8_0")), "Q8_0", w.shape)
    glin = PackedLinear.from_packed(raw, b)
    assert glin.weight.dtype == torch.uint8 and glin.qtype == "Q8_0"
    torch.testing.assert_close(glin(x), x @ glin.dequantized_weight(torch.float32).T + b)
    assert glin(x.to(torch.bfloat16)).dtype == torch.bfloat16


class _Tiny(nn.Module):
    def __init__(self, ops=PLAIN_OPS):
        super().__init__()
        self.proj = ops.Linear(32, 16)
        self.norm = nn.LayerNorm(16)
        self.mha = nn.MultiheadAttention(16, 2)
        self.register_buffer("table", torch.arange(4.0), persistent=False)


def _dense_sd(seed=0):
    torch.manual_seed(seed)
    return {k: torch.randn_like(v) for k, v in _Tiny().state_dict().items()}


def test_load_into_meta_module_plain_and_fp8_scaled():
    sd = _dense_sd()
    with empty_init():
        m = _Tiny()
    assert m.proj.weight.is_meta and not m.table.is_meta
    load_state_dict_into(m, sd, torch.float32)
    torch.testing.assert_close(m.proj.weight, sd["proj.weight"])
    assert isinstance(m.proj, nn.Linear)

    scale = torch.tensor(0.02)
    fp8 = dict(sd)
    fp8["proj.weight"] = (sd["proj.weight"] / scale).to(torch.float8_e4m3fn)
    fp8["proj.scale_weight"] = scale
    fp8["proj.scale_input"] = torch.tensor(1.0)
    fp8["mha.out_proj.weight"] = sd["mha.out_proj.weight"].to(torch.float8_e5m2)   # not swappable: dequantised
    fp8["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    with empty_init():
        m2 = _Tiny(PACKED_OPS)
    proj = m2.proj
    load_state_dict_into(m2, fp8, torch.float32)
    assert m2.proj is proj   # filled in place: the layer type was chosen at construction
    assert isinstance(m2.proj, PackedLinear) and m2.proj.weight.dtype == torch.float8_e4m3fn
    assert type(m2.mha.out_proj) is not PackedLinear and m2.mha.out_proj.weight.dtype == torch.float32
    x = torch.randn(5, 32)
    ref = x @ (fp8["proj.weight"].float() * scale).T + sd["proj.bias"]
    torch.testing.assert_close(m2.proj(x), ref)


def test_load_into_reports_every_problem_by_name():
    sd = _dense_sd()
    del sd["norm.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["proj.weight"] = torch.zeros(16, 31)
    with empty_init():
        m = _Tiny()
    with pytest.raises(StateDictMismatchError) as err:
        load_state_dict_into(m, sd, torch.float32)
    msg = str(err.value)
    assert "norm.bias" in msg and "extra.weight" in msg and "proj.weight: file (16, 31) vs model (16, 32)" in msg
    assert err.value.missing == ["norm.bias"] and err.value.unexpected == ["extra.weight"]
    assert isinstance(err.value, ValueError)


def test_comfy_quant_unsupported_format_names_the_tensor_and_the_supported_ones():
    sd = _dense_sd()
    sd["proj.comfy_quant"] = torch.tensor(list(b'{"format": "mxfp8"}'), dtype=torch.uint8)
    with empty_init():
        m = _Tiny()
    with pytest.raises(WeightFileError, match=r"'proj.comfy_quant' declares quantisation format 'mxfp8'.*"
                                              r"float8_e4m3fn, float8_e5m2, nvfp4"):
        load_state_dict_into(m, sd, torch.float32)


def test_header_quantization_metadata_unsupported_format_is_rejected(tmp_path):
    from safetensors.torch import save_file

    from steadydancer_core.loading.weight_files import open_state_dict

    sd = _dense_sd()
    meta = {"_quantization_metadata": '{"layers": {"proj": {"format": "int8_tensorwise"}}}'}
    save_file(sd, tmp_path / "q.safetensors", metadata=meta)
    with empty_init():
        m = _Tiny()
    with pytest.raises(WeightFileError, match=r"'proj.comfy_quant' declares quantisation format 'int8_tensorwise'"):
        load_state_dict_into(m, open_state_dict(tmp_path / "q.safetensors"), torch.float32)
    meta = {"_quantization_metadata": '{"layers": {"x": {"format": "nvfp4"}}}'}
    save_file(sd, tmp_path / "stray.safetensors", metadata=meta)
    with pytest.raises(WeightFileError, match=r"header lists layer 'x', but the file has no 'x.weight'"):
        load_state_dict_into(m, open_state_dict(tmp_path / "stray.safetensors"), torch.float32)


def test_lazy_state_dict_tensors_read_once():
    """Streaming: the loader checks names/shapes from metadata and reads each tensor exactly once."""
    from collections import Counter

    from steadydancer_core.loading.weight_files import Entry, LazyStateDict

    sd = _dense_sd()
    reads = Counter()

    def loader(key):
        def load():
            reads[key] += 1
            return sd[key].clone()
        return load

    lazy = LazyStateDict({k: Entry(tuple(v.shape), "float32", loader(k)) for k, v in sd.items()})
    with empty_init():
        m = _Tiny()
    load_state_dict_into(m, lazy, torch.bfloat16)
    assert reads == Counter({k: 1 for k in sd}) and m.proj.weight.dtype == torch.bfloat16


def test_weights_the_model_cannot_compute_with_fail_at_load_naming_the_tensor():
    from steadydancer_core.loading.errors import WeightFileError
    from steadydancer_core.loading.gguf_codecs import GGUFTensor
    from steadydancer_core.loading.quant_ops import PackedLinear
    from steadydancer_core.loading.state_dict import empty_init, load_state_dict_into

    with empty_init():
        layer = torch.nn.Sequential(PackedLinear(256, 2, bias=False))
    q8k = GGUFTensor(torch.zeros(2, 292, dtype=torch.uint8), "Q8_K", (2, 256))
    with pytest.raises(WeightFileError, match=r"0.weight \(Q8_K\).*Q8_0"):
        load_state_dict_into(layer, {"0.weight": q8k}, torch.float32)

    with empty_init():
        dense = torch.nn.Sequential(torch.nn.Linear(4, 2))
    ints = {"0.weight": torch.zeros(2, 4, dtype=torch.int64), "0.bias": torch.zeros(2)}
    with pytest.raises(WeightFileError, match=r"as integers.*0.weight \(int64\)"):
        load_state_dict_into(dense, ints, torch.float32)
