"""Attention backends: sdpa correctness, bias semantics, clear errors for absent backends."""
import importlib.util
import math

import pytest
import torch

from steadydancer_core.models.attention import (
    AttentionBackendError,
    attention,
    available_backends,
    check_backend,
)
from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.dit_config import DiTConfig


def reference_attention(q, k, v, bias=None):
    logits = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias.double()
    return torch.einsum("bhqk,bkhd->bqhd", logits.softmax(-1), v.double())


def test_attention_sdpa_matches_reference():
    q, k, v = torch.randn(2, 7, 3, 8), torch.randn(2, 5, 3, 8), torch.randn(2, 5, 3, 8)
    out = attention(q, k, v)
    assert out.shape == (2, 7, 3, 8) and out.dtype == q.dtype
    torch.testing.assert_close(out.double(), reference_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_attention_log_count_bias_equals_repeated_keys():
    q, k, v = torch.randn(1, 4, 2, 8, dtype=torch.float64), torch.randn(1, 3, 2, 8, dtype=torch.float64), \
        torch.randn(1, 3, 2, 8, dtype=torch.float64)
    bias = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    bias[..., -1] = math.log(5)
    repeated_k = torch.cat([k, k[:, -1:].expand(-1, 4, -1, -1)], 1)
    repeated_v = torch.cat([v, v[:, -1:].expand(-1, 4, -1, -1)], 1)
    torch.testing.assert_close(attention(q, k, v, bias=bias), attention(q, repeated_k, repeated_v))


def test_attention_backends_listed_and_errors_are_clear():
    assert available_backends()[0] == "sdpa"
    with pytest.raises(AttentionBackendError, match="unknown attention backend"):
        attention(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2), backend="xformers")
    for backend, module, package in (("flash-attn", "flash_attn", "flash-attn"),
                                     ("sageattention", "sageattention", "sageattention")):
        if importlib.util.find_spec(module) is not None:
            assert backend in available_backends()
            continue
        assert backend not in available_backends()
        with pytest.raises(AttentionBackendError, match=f"pip install {package}"):
            check_backend(backend)
        with pytest.raises(AttentionBackendError, match=f"pip install {package}"):
            SteadyDancerDiT(DiTConfig.tiny(), attention_backend=backend)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flash-attn", "sageattention"])
def test_attention_optional_backends_on_gpu(backend):
    if backend not in available_backends():
        pytest.skip(f"{backend} not installed")
    q, k, v = (torch.randn(1, 64, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = attention(q, k, v)
    torch.testing.assert_close(attention(q, k, v, backend=backend).float(), ref.float(), atol=3e-2, rtol=3e-2)
