"""The options of a clip run on several GPUs: ``PARALLEL``, one row per option of the multi-GPU loader node, the
CLI's ``--sequence-parallel`` / ``--guidance-parallel`` / ``--shard-blocks`` and the Python API's
``parallel_config``; the number of processes (GPUs) is the product of the two degrees.
"""
from __future__ import annotations

from typing import Optional

from ..models.dit_config import DiTConfig
from ..models.sequence_parallel import MAX_SEQUENCE_DEGREE, valid_sequence_degrees
from ..option import Option, OptionTable
from .parallel import GUIDANCE_DEGREES, ParallelConfig

__all__ = ["PARALLEL", "parallel_config"]

_SEQUENCE_DEGREES = (1, *valid_sequence_degrees(DiTConfig.num_heads))
_SEQUENCE_WORDS = f"{', '.join(map(str, _SEQUENCE_DEGREES[:-1]))} or {_SEQUENCE_DEGREES[-1]}"     # "1, 2, 4, 5 or 8"


def _sequence_rule(value: int) -> Optional[str]:
    if value in _SEQUENCE_DEGREES:
        return None
    return f"must be {_SEQUENCE_WORDS} (1 = off; the others divide the DiT's {DiTConfig.num_heads} attention heads)"


PARALLEL = OptionTable("Several GPUs", [
    Option("sequence_parallel", "int", 1, minimum=1, maximum=MAX_SEQUENCE_DEGREE, step=1, level="basic",
           rule=_sequence_rule, rule_text=f"that divides the {DiTConfig.num_heads} heads: {_SEQUENCE_WORDS}",
           help="GPUs that split every DiT pass's tokens (Ulysses sequence parallel; 1 = off). The processes "
                "started are sequence_parallel x guidance_parallel, one per GPU."),
    Option("guidance_parallel", "int", 1, minimum=1, maximum=max(GUIDANCE_DEGREES), step=1, level="basic",
           help="GPU groups that split each step's guidance passes (conditional, text- and pose-unconditional; "
                "1 = off, 2 or 3). Bit-identical to one GPU."),
    Option("shard_blocks", "bool", False,
           help="Split the DiT blocks' weights over the sequence_parallel GPUs (FSDP2) for cards too small for a "
                "whole DiT; needs sequence_parallel 2 or more and bf16 / fp16 DiT weights."),
])


def parallel_config(sequence_parallel: int = PARALLEL.default("sequence_parallel"),
                    guidance_parallel: int = PARALLEL.default("guidance_parallel"),
                    shard_blocks: bool = PARALLEL.default("shard_blocks")) -> ParallelConfig:
    """The ``ParallelConfig`` of the ``PARALLEL`` options (each value checked by its row; ``OptionError`` /
    ``ValueError`` name the option and the fix)."""
    values = PARALLEL.check_all(dict(sequence_parallel=sequence_parallel, guidance_parallel=guidance_parallel,
                                     shard_blocks=shard_blocks))
    return ParallelConfig(sequence=values["sequence_parallel"], guidance=values["guidance_parallel"],
                          shard_blocks=values["shard_blocks"])
