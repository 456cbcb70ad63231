"""Regional torch.compile of the DiT blocks: one compiled core for every block, hooks outside, eager fallback."""
import logging
import shutil

import pytest
import torch
from helpers import tiny_dit as tiny_model, tiny_dit_inputs as tiny_inputs

from steadydancer_core.runtime import compile as regional
from steadydancer_core.runtime.compile import compile_blocks
from steadydancer_core.runtime.offload import Offloader


@pytest.fixture(autouse=True)
def fresh_dynamo():
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_one_compiled_core_serves_every_block_and_prompt_length():
    model = tiny_model(num_layers=4)
    cfg = model.config
    cases = [tiny_inputs(cfg, text_lens=[5]), tiny_inputs(cfg, text_lens=[9], seed=2)]
    with torch.inference_mode():
        expected = [model(**c) for c in cases]
        rc = compile_blocks(model, backend="eager")       # dynamo tracing, no code generation: fast
        assert rc.status == "pending"
        got = [model(**c) for c in cases]
    assert rc.status == "compiled"
    # 4 blocks, 2 prompt lengths: one graph for the blocks, one for the last block (it keeps only the output frames)
    assert _graphs() == 2
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)   # traced linears are plain F.linear, not oneDNN's
    rc.remove()
    assert "core" not in model.blocks[0].__dict__


def test_compiled_blocks_run_under_block_swap_hooks():
    """The swap hooks stay outside the compiled code: weights streamed in as new tensors on every call reuse the
    compiled core (no new graph), and the ledger is clean afterwards."""
    model = tiny_model(num_layers=3)
    inputs = tiny_inputs(model.config, text_lens=[6])
    with torch.inference_mode():
        expected = model(**inputs)
        compile_blocks(model, backend="eager")
        off = Offloader.simulated()
        off.place(model, "dit", blocks_to_swap=2, prefetch=1, offload_embeddings=True)
        with model.caching_context():
            outs = [model(**inputs) for _ in range(3)]
        assert off.ledger.is_clean()
    assert _graphs() == 2
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    off.unplace(model)


def test_failing_compiler_falls_back_to_eager_with_one_message(caplog):
    def broken_backend(graph, example_inputs):
        raise RuntimeError("no working C++ compiler found")

    model = tiny_model()
    inputs = tiny_inputs(model.config, text_lens=[4])
    with torch.inference_mode():
        expected = model(**inputs)
        rc = compile_blocks(model, backend=broken_backend)
        with caplog.at_level(logging.WARNING, logger=regional.__name__):
            first = model(**inputs)
            second = model(**inputs)
    messages = [r.getMessage() for r in caplog.records if "compile unavailable" in r.getMessage()]
    assert len(messages) == 1
    assert "no working C++ compiler found" in messages[0] and "running uncompiled" in messages[0]
    assert "C++ compiler" in messages[0]                      # the install hint for the CPU backend
    assert rc.status.startswith("eager:") and rc.compiled is None
    assert torch.equal(first, expected) and torch.equal(second, expected)   # the eager path is the plain forward


def test_torch_compile_missing_at_setup_falls_back(monkeypatch, caplog):
    def unsupported(*args, **kwargs):
        raise RuntimeError("torch.compile is not supported on this Python version")

    monkeypatch.setattr(torch, "compile", unsupported)
    model = tiny_model()
    inputs = tiny_inputs(model.config)
    with caplog.at_level(logging.WARNING, logger=regional.__name__):
        rc = compile_blocks(model)
    assert rc.status.startswith("eager:") and "not supported" in caplog.text
    with torch.inference_mode():
        out = model(**inputs)
    assert torch.isfinite(out).all()


def test_install_hint_names_triton_for_cuda():
    assert "triton" in regional.install_hint("cuda")
    assert "C++ compiler" in regional.install_hint("cpu")


def test_loader_option_compiles_the_blocks():
    from steadydancer_core import LOADER, LoaderSettings
    from steadydancer_core.runtime.bundle import SteadyDancerModel

    assert LOADER.default("compile") is False
    dit = tiny_model()
    SteadyDancerModel(dit=dit, vae=None, text_encoder=None, image_encoder=None, dtype=torch.float32,
                      settings=LoaderSettings(compile=True))
    assert isinstance(dit.regional_compile, regional.RegionalCompile)
    assert all("core" in b.__dict__ for b in dit.blocks)
    plain = tiny_model()
    SteadyDancerModel(dit=plain, vae=None, text_encoder=None, image_encoder=None, dtype=torch.float32)
    assert getattr(plain, "regional_compile", None) is None


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")), reason="needs a C++ compiler")
def test_inductor_on_cpu_equals_eager():
    """The real CPU backend (C++ code generation) on the tiny DiT: compiled, and equal to eager within float32
    rounding."""
    model = tiny_model(num_layers=2)
    inputs = tiny_inputs(model.config, text_lens=[5])
    with torch.inference_mode():
        expected = model(**inputs)
        rc = compile_blocks(model)
        out = model(**inputs)
    assert rc.status == "compiled"
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_inductor_on_cuda_equals_eager_in_bf16():
    pytest.importorskip("triton")
    model = tiny_model(num_layers=2).to("cuda", torch.bfloat16)
    inputs = {k: v.to("cuda", torch.bfloat16) if v.is_floating_point() else v.to("cuda")
              for k, v in tiny_inputs(model.config, batch=2, text_lens=[5, 9]).items()}
    with torch.inference_mode():
        expected = model(**inputs)
        rc = compile_blocks(model)
        out = model(**inputs)
    assert rc.status == "compiled"
    torch.testing.assert_close(out.float(), expected.float(), rtol=3e-2, atol=3e-2)


def test_an_error_of_the_model_itself_is_raised_plainly_and_compiling_stays_on(caplog):
    """A shape error inside the compiled block (raised while tracing) is not a missing compiler: the eager re-run
    raises it as eager would, no "compile unavailable" warning, and later correct calls still compile."""
    model = tiny_model()
    inputs = tiny_inputs(model.config)
    rc = compile_blocks(model, backend="eager")
    block, dim = model.blocks[0], model.config.dim
    x = torch.randn(1, 8, dim)
    rope = (torch.ones(8, 1, dim // model.config.num_heads), torch.zeros(8, 1, dim // model.config.num_heads // 2))
    bad_keys = tuple(torch.randn(1, 4, model.config.num_heads, 3) for _ in range(4)) + (None,)   # wrong head dim
    with torch.inference_mode(), caplog.at_level(logging.WARNING, logger=regional.__name__):
        with pytest.raises(RuntimeError):
            block.core(x, torch.zeros(1, 6, dim), rope, bad_keys)
        model(**inputs)
    assert "compile unavailable" not in caplog.text
    assert rc.status == "compiled"
