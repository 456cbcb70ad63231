"""Helpers shared by the configs' ``from_shapes`` constructors.
"""
from __future__ import annotations


def block_count(shapes: dict, prefix: str) -> int:
    """Number of ``<prefix><i>.`` blocks among the keys of ``shapes`` (0 when none)."""
    idx = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes
           if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    return max(idx) + 1 if idx else 0
