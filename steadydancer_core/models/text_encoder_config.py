"""``T5Config``: the umT5 encoder's hyper-parameters (defaults: umT5-XXL as used by Wan 2.1).
"""
from __future__ import annotations

from dataclasses import dataclass

from .shapes import block_count

# --- umT5 text encoder -----------------------------------------------------------------------------------------
UMT5_TEXT_LEN = 512              # tokens per prompt incl. EOS (Wan pads / truncates to this)


UMT5_PAD_ID = 0


UMT5_EOS_ID = 1


UMT5_MAX_DIST = 128              # relative-position bucket range (not stored in the weights)


@dataclass(frozen=True)
class T5Config:
    """umT5 encoder (official ``T5Encoder``, shared_pos=False). Defaults are umT5-XXL as used by Wan 2.1."""

    vocab_size: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_dist: int = UMT5_MAX_DIST
    text_len: int = UMT5_TEXT_LEN
    eps: float = 1e-6
    pad_id: int = UMT5_PAD_ID
    eos_id: int = UMT5_EOS_ID

    def __post_init__(self):
        for name in ("vocab_size", "dim", "dim_attn", "dim_ffn", "num_heads", "num_layers", "num_buckets"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"T5Config.{name} must be positive, got {getattr(self, name)}")
        if self.dim_attn % self.num_heads:
            raise ValueError(f"T5Config.dim_attn={self.dim_attn} is not divisible by num_heads={self.num_heads}")
        if self.num_buckets % 2 or self.num_buckets < 4:
            raise ValueError(f"T5Config.num_buckets must be even and >= 4 (bidirectional), got {self.num_buckets}")
        if self.max_dist <= self.num_buckets // 4:
            raise ValueError(f"T5Config.max_dist={self.max_dist} must exceed num_buckets/4={self.num_buckets // 4}")
        if self.text_len < 2:
            raise ValueError(f"T5Config.text_len must be >= 2 (one token + EOS), got {self.text_len}")
        if not 0 < self.eps < 1:
            raise ValueError(f"T5Config.eps must be in (0, 1), got {self.eps}")

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads

    @classmethod
    def tiny(cls, **overrides) -> "T5Config":
        """Tiny test config (vocab 256, dim 64, 2 layers, text_len 32)."""
        base = dict(vocab_size=256, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2, text_len=32)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_shapes(cls, shapes: dict, text_len: int = UMT5_TEXT_LEN) -> "T5Config":
        """Config from official-named tensor shapes (``token_embedding.weight``, ``blocks.<i>.…``)."""
        vocab, dim = shapes["token_embedding.weight"]
        buckets, heads = shapes["blocks.0.pos_embedding.embedding.weight"]
        return cls(
            vocab_size=int(vocab), dim=int(dim), dim_attn=int(shapes["blocks.0.attn.q.weight"][0]),
            dim_ffn=int(shapes["blocks.0.ffn.fc1.weight"][0]), num_heads=int(heads),
            num_layers=block_count(shapes, "blocks."), num_buckets=int(buckets), text_len=int(text_len),
        )
