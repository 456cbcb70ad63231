"""Regional ``torch.compile`` of the DiT: the transformer block's ``core`` is compiled once and reused by every block.

What is compiled: ``WanBlock.core`` (self-attention, cross-attention given its keys / values, FFN), the same code
object for all blocks, so the compiler traces and builds it once (plus one variant for the last block, which keeps
only the returned tokens, and one per batch size) instead of the whole 40-block model: compile time stays in the
seconds-to-a-minute range. What is not: the blocks' ``__call__`` (so the block-swap hooks that stream weights in and
out run as plain Python around the compiled code), the context K/V projection and its cache, the embeddings and
the head.

Shapes: ``dynamic=False`` (no automatic dynamic shapes), with the sizes that change between segments and prompts
marked dynamic on each call: the token count (segment length, resolution; x dim 1 and the rotary tables) and the
text-key count (prompt length, float precision only). The batch size (guidance passes batched or not) and the
last block's ``keep`` stay static, one compiled variant each. The compiler's per-function recompile limit is raised
to ``COMPILE_RECOMPILE_LIMIT`` when lower, so those variants do not silently fall back to eager.

Fallback: compilation happens at the first call. If it fails (no C++ compiler for the CPU backend, no triton for
CUDA, an inductor error), one warning "compile unavailable: <reason>; running uncompiled (install ...)" is logged
and every block runs eagerly from then on; the failed call is re-run eagerly (``core`` changes nothing in place, so
the re-run is exact). Out-of-memory errors are not caught.
"""
from __future__ import annotations

import functools
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILE_BACKEND = "inductor"
COMPILE_RECOMPILE_LIMIT = 64     # compiled variants kept per function (batch sizes x segment lengths x dtypes)


def _compile_errors() -> tuple:
    """Exceptions that mean "the compiler could not build this", not "the model is wrong" (the eager re-run raises
    those again)."""
    import torch._dynamo.exc as dynamo_exc
    import torch._inductor.exc as inductor_exc

    found = [dynamo_exc.TorchDynamoException, ImportError]
    found += [getattr(inductor_exc, n) for n in ("InvalidCxxCompiler", "CppCompileError", "CUDACompileError")
              if hasattr(inductor_exc, n)]
    return tuple(found)


def _traced_model_error() -> type:
    import torch._dynamo.exc as dynamo_exc

    return dynamo_exc.TorchRuntimeError


def install_hint(device_type: str) -> str:
    if device_type == "cuda":
        return "install triton for CUDA (pip install triton; on Windows: pip install triton-windows)"
    return "install a C++ compiler (gcc or clang) and the Python development headers for the CPU backend"


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def _raise_recompile_limit() -> None:
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if getattr(config, name, COMPILE_RECOMPILE_LIMIT) < COMPILE_RECOMPILE_LIMIT:
            setattr(config, name, COMPILE_RECOMPILE_LIMIT)


def _mark(t: torch.Tensor, dim: int) -> None:
    if t.dim() > dim and t.shape[dim] >= 2:
        torch._dynamo.mark_dynamic(t, dim)


class RegionalCompile:
    """``core`` of every block of ``dit.blocks`` routed through one ``torch.compile`` of the block class's ``core``.

    status: "pending" (not called yet), "compiled", or "eager: <reason>" after a fallback. ``remove()`` restores
    the plain blocks.
    """

    def __init__(self, dit: nn.Module, backend=COMPILE_BACKEND, mode: str | None = None):
        block_attr = getattr(dit, "BLOCKS", "blocks")
        self.blocks = list(getattr(dit, block_attr))
        if not self.blocks:
            raise ValueError("the model has no blocks to compile")
        kinds = {type(b) for b in self.blocks}
        if len(kinds) != 1 or not callable(getattr(kinds.pop(), "core", None)):
            raise TypeError("regional compile needs blocks of one class with a core() method")
        self.plain_core = type(self.blocks[0]).core
        self.backend, self.status, self.compiled = backend, "pending", None
        try:
            _raise_recompile_limit()
            self.compiled = torch.compile(self.plain_core, backend=backend, mode=mode, dynamic=False)
        except (RuntimeError, ImportError) as err:          # e.g. a Python version torch.compile does not support
            self._fall_back(err, "cpu")
        for block in self.blocks:
            block.core = functools.partial(self._run, block)  # instance attribute: shadows the class's method

    def _run(self, block, x, e, rope, keys, keep=None):
        if self.compiled is not None:
            _mark(x, 1)
            _mark(rope[0], 0)
            _mark(rope[1], 0)
            if keys[4] is not None:                             # float precision: text keys not expanded
                _mark(keys[2], 1)
                _mark(keys[3], 1)
                _mark(keys[4], 3)
            try:
                out = self.compiled(block, x, e, rope, keys, keep)
            except _traced_model_error() as err:
                # the model itself raised while being traced (e.g. wrong input shapes): the eager call below
                # raises the same error plainly; compiling stays on for correct inputs
                log.debug("error while tracing the block, re-raised by the eager call: %s", err)
            except _compile_errors() as err:
                self._fall_back(err, x.device.type)
            else:
                self.status = "compiled"
                return out
        return self.plain_core(block, x, e, rope, keys, keep)

    def _fall_back(self, err: BaseException, device_type: str) -> None:
        self.compiled = None
        self.status = f"eager: {_reason(err)}"
        log.warning("compile unavailable: %s; running uncompiled (%s)", _reason(err), install_hint(device_type))

    def remove(self) -> None:
        for block in self.blocks:
            block.__dict__.pop("core", None)
        self.compiled = None


def compile_blocks(dit: nn.Module, backend=COMPILE_BACKEND, mode: str | None = None) -> RegionalCompile:
    """Compile the blocks of ``dit`` regionally (see the module docstring); again on a compiled model: the previous
    compile is removed first. ``backend``: a ``torch.compile`` backend ("inductor", "aot_eager", a callable)."""
    previous = getattr(dit, "regional_compile", None)
    if previous is not None:
        previous.remove()
    dit.regional_compile = RegionalCompile(dit, backend, mode)
    return dit.regional_compile
