"""Fused linear layers: same results as F.linear (+ GELU) on every path, same parameters, safe fallbacks."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from steadydancer_core.models import fused_linear
from steadydancer_core.models.fused_linear import GeluMLP, Linear, linear


@pytest.fixture(params=[True, False], ids=["onednn", "aten"])
def path(request, monkeypatch):
    monkeypatch.setattr(fused_linear, "ONEDNN_ENABLED", request.param)
    return request.param


def _reference(x, w, b, activation):
    out = F.linear(x.double(), w.double(), None if b is None else b.double())
    if activation is not None:
        out = F.gelu(out, approximate=fused_linear.ACTIVATIONS[activation][2])
    return out


@pytest.mark.parametrize("activation", [None, "gelu", "gelu_tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_float64_reference(path, activation, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 37, 48, generator=g)
    w = torch.randn(40, 48, generator=g) / 48 ** 0.5
    b = torch.randn(40, generator=g) if bias else None
    with torch.no_grad():
        for inp in (x, x[:, 5:30], x.transpose(0, 1), x[0]):      # 3-D, sliced, transposed, 2-D
            out = linear(inp, w, b, activation)
            assert out.dtype == torch.float32 and out.shape == (*inp.shape[:-1], 40)
            torch.testing.assert_close(out.double(), _reference(inp, w, b, activation), atol=2e-6, rtol=1e-5)


def test_linear_falls_back_where_onednn_does_not_apply():
    layer = Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    layer(x).sum().backward()                                  # autograd: F.linear path, gradients flow
    assert x.grad is not None and layer.weight.grad is not None
    with torch.no_grad():
        half = linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16(), "gelu")
        assert half.dtype == torch.bfloat16
        torch.testing.assert_close(half, F.gelu(F.linear(x.bfloat16(), layer.weight.bfloat16(),
                                                         layer.bias.bfloat16())))
        strided = layer.weight.t().contiguous().t()            # non-contiguous weight
        torch.testing.assert_close(linear(x, strided), F.linear(x, strided))
        empty = torch.zeros(4, 0)                              # no input features
        torch.testing.assert_close(linear(torch.zeros(3, 0), empty, layer.bias), layer.bias.expand(3, 4))
        assert linear(torch.zeros(0, 8), layer.weight).shape == (0, 4)
    with pytest.raises(ValueError, match="unknown activation"):
        linear(x, layer.weight, activation="relu")


def test_modules_keep_upstream_parameter_names():
    assert set(Linear(4, 3).state_dict()) == set(nn.Linear(4, 3).state_dict())
    assert isinstance(Linear(4, 3), nn.Linear)
    mlp = GeluMLP(6, 10, 4, approximate="tanh")
    assert set(mlp.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    reference = nn.Sequential(nn.Linear(6, 10), nn.GELU(approximate="tanh"), nn.Linear(10, 4))
    reference.load_state_dict(mlp.state_dict())
    x = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), reference(x), atol=2e-6, rtol=1e-5)


class _Doubled(nn.Module):
    """Stand-in for a swapped-in packed layer: not a plain Linear, so no fusion may be attempted."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 2 * self.inner(x)


def test_gelu_mlp_with_a_swapped_first_layer_applies_the_activation_separately():
    mlp = GeluMLP(6, 10, 4)
    x = torch.randn(5, 6)
    with torch.no_grad():
        expected = mlp[2](F.gelu(2 * mlp[0](x)))
        mlp[0] = _Doubled(mlp[0])
        torch.testing.assert_close(mlp(x), expected)
