"""fp8 matmul (``fp8_matmul``): the scaled-mm path against the upcast path with the same quantised input, the
device / layer policy and its report, and block swap with the packed layers. torch's CPU build runs
``torch._scaled_mm`` for float8, so the arithmetic is checked on CPU; the CUDA checks carry the gpu marker."""
import math

import pytest
import torch

from steadydancer_core.loading import fp8_matmul, quant_ops
from steadydancer_core.loading.file_writers import to_comfy_quant
from steadydancer_core.loading.fp8_matmul import fp8_linear, layer_blocker
from steadydancer_core.loading.nvfp4_codec import quantize_nvfp4
from steadydancer_core.loading.quant_ops import PackedLinear, set_fp8_matmul

E4M3_MAX = 448.0


def reference_input(x: torch.Tensor, scale: float | None):
    """(e4m3 codes as float64, scale): per-tensor quantisation by the definition, x ~ codes * scale; the dynamic
    scale is amax / 448 rounded up to a power of two."""
    s = 2.0 ** math.ceil(math.log2(float(x.abs().max()) / E4M3_MAX)) if scale is None else scale
    return (x.double() / s).clamp(-E4M3_MAX, E4M3_MAX).float().to(torch.float8_e4m3fn).double(), s


def fp8_layer(out_features=48, in_features=64, seed=0, input_scale=None, bias=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=g) * 0.1
    b = torch.randn(out_features, generator=g) if bias else None
    scale = w.abs().max() / E4M3_MAX
    layer = PackedLinear.from_packed((w / scale).to(torch.float8_e4m3fn), b, scale.reshape(()),
                                     input_scale=None if input_scale is None else torch.tensor(input_scale))
    return layer, w, b


@pytest.fixture
def cpu_counts_as_fp8_capable(monkeypatch):
    """Let the device policy accept the CPU, so the scaled-mm path runs here."""
    monkeypatch.setattr(fp8_matmul, "scaled_mm_supported", lambda device: True)


@pytest.mark.parametrize("input_scale", [None, 0.004])
def test_fp8_linear_equals_the_upcast_product_of_the_quantised_input(input_scale):
    layer, w, b = fp8_layer()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 64, generator=g)
    x[0, 0, 0] = 3.0                                          # with input_scale 0.004 this one saturates at 448
    codes, s = reference_input(x, input_scale)
    w_dense = layer.dequantized_weight(torch.float64)
    want = (codes * s) @ w_dense.T + b.double()
    given = None if input_scale is None else torch.tensor(input_scale)
    got = fp8_linear(x, layer.weight, layer.scale_weight, given, layer.bias)
    assert got.shape == (2, 5, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    full = x @ w.T + b                                         # full precision: only loosely equal
    rel = ((got - full).norm() / full.norm()).item()
    assert rel < (0.2 if input_scale else 0.06)
    # bf16: the input and the output are rounded to bf16 (so a few codes differ), the products are the same
    bf16 = fp8_linear(x.bfloat16(), layer.weight, layer.scale_weight, given, layer.bias.bfloat16())
    assert bf16.dtype == torch.bfloat16
    assert ((bf16.double() - want).norm() / want.norm()).item() < 0.01


def test_zero_input_and_tiny_fp16_scale_stay_finite():
    layer, _, _ = fp8_layer(bias=False)
    zero = fp8_linear(torch.zeros(3, 64, dtype=torch.float16), layer.weight, layer.scale_weight, None, None)
    assert torch.equal(zero, torch.zeros(3, 48, dtype=torch.float16))
    tiny = torch.full((3, 64), 1e-4, dtype=torch.float16)
    out = fp8_linear(tiny, layer.weight, layer.scale_weight, torch.tensor(1e-12), None)
    assert torch.isfinite(out).all()


def test_packed_layer_switches_paths_by_device_and_policy(cpu_counts_as_fp8_capable):
    layer, _, _ = fp8_layer(input_scale=0.01)
    holder = torch.nn.Sequential(layer)
    x = torch.randn(4, 64)
    upcast = layer(x)
    report = set_fp8_matmul(holder, True, "cpu")
    assert report.startswith("fp8 matmul: 1 of 1 fp8 layers multiply in fp8")
    assert "1 by the file's input_scale" in report
    assert layer.fp8_matmul_device == "cpu"
    fast = layer(x)
    torch.testing.assert_close(fast, fp8_linear(x, layer.weight, layer.scale_weight, layer.input_scale, layer.bias))
    assert not torch.equal(fast, upcast) and ((fast - upcast).norm() / upcast.norm()).item() < 0.1
    assert set_fp8_matmul(holder, False, "cpu") == "" and layer.fp8_matmul_device is None
    assert torch.equal(layer(x), upcast)


def test_fallback_is_reported_on_cpu_and_old_gpus(monkeypatch):
    layer, _, _ = fp8_layer()
    holder = torch.nn.Sequential(layer)
    report = set_fp8_matmul(holder, True, "cpu")
    assert "not used - the model runs on cpu" in report and "upcast per layer" in report
    assert layer.fp8_matmul_device is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 3090")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    report = set_fp8_matmul(holder, True, "cuda")
    assert "RTX 3090 has compute capability 8.6; fp8 matmul needs 8.9 or newer" in report
    assert layer.fp8_matmul_device is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 9))
    assert fp8_matmul.scaled_mm_supported("cuda") and fp8_matmul.device_blocker("cuda") is None
    assert set_fp8_matmul(holder, True, "cuda").startswith("fp8 matmul: 1 of 1")
    assert layer.fp8_matmul_device == "cuda"
    assert set_fp8_matmul(torch.nn.Sequential(torch.nn.Linear(4, 4)), True, "cuda") == \
        "fp8 matmul: not used - the DiT has no fp8 weights (fp16 / bf16)"


def test_layers_that_stay_on_the_upcast_path_are_counted(cpu_counts_as_fp8_capable):
    e4m3, _, _ = fp8_layer()
    e5m2 = PackedLinear.from_packed(torch.randn(16, 16).to(torch.float8_e5m2), None, torch.tensor(0.1))
    odd = PackedLinear.from_packed(torch.randn(24, 40).to(torch.float8_e4m3fn), None, torch.tensor(0.1))
    rows = PackedLinear.from_packed(torch.randn(16, 16).to(torch.float8_e4m3fn), None, torch.rand(16))
    full = PackedLinear.from_packed(torch.randn(16, 16).to(torch.float8_e4m3fn), None, torch.tensor(0.1),
                                    full_precision_mm=True)
    packed, blocked, global_scale = quantize_nvfp4(torch.randn(16, 16))
    nv = PackedLinear.from_packed(packed, None, global_scale, qtype="nvfp4", block_scale=blocked, shape=(16, 16))
    report = set_fp8_matmul(torch.nn.ModuleList([e4m3, e5m2, odd, rows, full, nv]), True, "cpu")
    assert report.startswith("fp8 matmul: 1 of 5 fp8 layers multiply in fp8")
    assert "upcast: 1 (dimensions not multiples of 16), 1 (e5m2 weights), 1 (per-row weight scales), " \
           "1 (the file asks for full-precision matmul)" in report
    assert [m.fp8_matmul_device for m in (e4m3, e5m2, odd, rows, full, nv)] == ["cpu", None, None, None, None, None]
    assert layer_blocker("Q8_0", None, 16, 16) == "Q8_0 weights"


def test_loader_option_and_report_on_a_tiny_dit(tmp_path, cpu_counts_as_fp8_capable, monkeypatch):
    from safetensors.torch import save_file

    from steadydancer_core.loading.loaders import load_dit
    from steadydancer_core.models.dit import SteadyDancerDiT
    from steadydancer_core.models.dit_config import DiTConfig

    torch.manual_seed(0)
    config = DiTConfig.tiny(dim=256, num_heads=2, ffn_dim=256, freq_dim=256, text_dim=256, clip_dim=256,
                            num_layers=1, align_hidden=32, text_len=512)
    sd = SteadyDancerDiT(config).state_dict()
    names = [k for k in sd if k.startswith("blocks.") and k.endswith(".weight") and sd[k].dim() == 2]
    tensors, _ = to_comfy_quant(sd, "float8_e4m3fn", names=names, input_scales={"blocks.0.ffn.2": 0.01})
    save_file(tensors, str(tmp_path / "dit.safetensors"))
    model = load_dit(tmp_path / "dit.safetensors", dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    b, f, h, w = 1, 2, 4, 4
    inputs = dict(x=torch.randn(b, 16, f, h, w, generator=g), t=torch.tensor([700]),
                  context=torch.randn(b, 5, 256, generator=g), y=torch.randn(b, 20, f, h, w, generator=g),
                  condition=torch.randn(b, 16, f, h, w, generator=g), ref_x=torch.randn(b, 36, 1, h, w, generator=g),
                  ref_c=torch.randn(b, 36, 1, h, w, generator=g),
                  clip_fea_x=torch.randn(b, config.clip_tokens, 256, generator=g),
                  clip_fea_c=torch.randn(b, config.clip_tokens, 256, generator=g))
    with torch.no_grad():
        upcast = model(**inputs)
        report = set_fp8_matmul(model, True, "cpu")
        calls = []
        monkeypatch.setattr(quant_ops, "fp8_linear", lambda *a, f=quant_ops.fp8_linear: calls.append(1) or f(*a))
        fast = model(**inputs)
    assert report.startswith(f"fp8 matmul: {len(names)} of {len(names)} fp8 layers") and "1 by the file's" in report
    assert len(calls) >= len(names)
    rel = ((fast - upcast).norm() / upcast.norm()).item()
    assert 0 < rel < 0.05


# ---------------------------------------------------------------------------------------------------------------
# Block swap carries every packed tensor (fp8 scales, input scales, nvfp4 block scales)
# ---------------------------------------------------------------------------------------------------------------
class QuantBlock(torch.nn.Module):
    def __init__(self, dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(dim, dim, generator=g) * 0.2
        packed, blocked, global_scale = quantize_nvfp4(w)
        self.nv = PackedLinear.from_packed(packed, torch.zeros(dim), global_scale, qtype="nvfp4",
                                           block_scale=blocked, shape=(dim, dim))
        scale = w.abs().max() / E4M3_MAX
        self.fp8 = PackedLinear.from_packed((w / scale).to(torch.float8_e4m3fn), torch.zeros(dim), scale,
                                            input_scale=torch.tensor(0.01))

    def forward(self, x):
        return x + self.fp8(torch.tanh(self.nv(x)))


class QuantDiT(torch.nn.Module):
    BLOCKS = "blocks"

    def __init__(self, dim=32, n=4):
        super().__init__()
        self.blocks = torch.nn.ModuleList([QuantBlock(dim, i) for i in range(n)])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


@pytest.mark.parametrize("matmul", [False, True])
def test_block_swap_moves_the_packed_tensors(matmul, cpu_counts_as_fp8_capable):
    from steadydancer_core.runtime.offload import Offloader

    model = QuantDiT()
    set_fp8_matmul(model, matmul, "cpu")
    x = torch.randn(3, 32)
    with torch.inference_mode():
        expected = model(x)
    off = Offloader.simulated()
    off.place(model, "dit", blocks_to_swap=3, prefetch=1)
    unit = off.swap.units[0]
    assert {s.name for s in unit.slots} >= {"weight", "block_scale", "scale_weight", "input_scale"}
    with torch.inference_mode():
        out = model(x)
    assert torch.equal(out, expected) and off.ledger.is_clean()
    assert model.blocks[0].nv.block_scale.is_meta                  # released between forwards
    off.unplace(model)


@pytest.mark.gpu
def test_cuda_fp8_matmul_matches_the_reference_and_survives_block_swap():
    from steadydancer_core.runtime.offload import Offloader

    layer, w, b = fp8_layer(out_features=256, in_features=512)
    x = torch.randn(77, 512)
    codes, s = reference_input(x, None)
    want = (codes * s) @ layer.dequantized_weight(torch.float64).T + b.double()
    layer = layer.cuda()
    if fp8_matmul.scaled_mm_supported("cuda"):
        for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 0.05)):
            got = fp8_linear(x.cuda().to(dtype), layer.weight, layer.scale_weight, None, layer.bias.to(dtype))
            torch.testing.assert_close(got.double().cpu(), want, atol=tol, rtol=tol)
    model = QuantDiT(dim=256, n=4)
    report = set_fp8_matmul(model, True, "cuda")
    assert ("4 of 4 fp8 layers" in report) == fp8_matmul.scaled_mm_supported("cuda"), report
    xs = torch.randn(40, 256, device="cuda", dtype=torch.bfloat16)
    off = Offloader("cuda")
    off.place(model, "dit")
    with torch.inference_mode():
        expected = model(xs)
    off.unplace(model)
    off.place(model, "dit", blocks_to_swap=3, prefetch=1)
    with torch.inference_mode():
        out = model(xs)
    torch.cuda.synchronize()
    assert torch.equal(out, expected) and off.ledger.is_clean()
    off.unplace(model)
