"""``CLIPVisionConfig``: the CLIP ViT image tower's hyper-parameters (defaults: open-clip ViT-H/14 as used by Wan 2.1).
"""
from __future__ import annotations

from dataclasses import dataclass

from .shapes import block_count

# --- CLIP vision -------------------------------------------------------------------------------------------------
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


CLIP_SKIP_LAST_BLOCKS = 1        # Wan uses the output of the second-to-last block (use_31_block), no post-norm


# Head counts are not stored in the weights: known open-clip widths, else CLIP_FALLBACK_HEAD_DIM (tiny test models).
CLIP_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}


CLIP_FALLBACK_HEAD_DIM = 16


@dataclass(frozen=True)
class CLIPVisionConfig:
    """CLIP ViT image tower (official ``VisionTransformer``, pool 'token', pre-norm, exact GELU).

    Defaults are open-clip xlm-roberta-large ViT-H/14 as used by Wan 2.1 (output [N, 257, 1280]).
    """

    dim: int = 1280
    num_layers: int = 32
    num_heads: int = 16
    mlp_dim: int = 5120
    patch_size: int = 14
    image_size: int = 224
    eps: float = 1e-5
    skip_last_blocks: int = CLIP_SKIP_LAST_BLOCKS
    mean: tuple = CLIP_MEAN
    std: tuple = CLIP_STD

    def __post_init__(self):
        for name in ("dim", "num_layers", "num_heads", "mlp_dim", "patch_size", "image_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"CLIPVisionConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.num_heads:
            raise ValueError(f"CLIPVisionConfig.dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPVisionConfig.image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if not 0 <= self.skip_last_blocks < self.num_layers:
            raise ValueError(f"CLIPVisionConfig.skip_last_blocks={self.skip_last_blocks} must be in "
                             f"[0, num_layers={self.num_layers})")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("CLIPVisionConfig.mean/std need 3 values each, std > 0")

    @property
    def num_tokens(self) -> int:
        """Output tokens per image: one class token + (image_size / patch_size)^2 patches (257 for ViT-H/14)."""
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def used_layers(self) -> int:
        return self.num_layers - self.skip_last_blocks

    @classmethod
    def tiny(cls, **overrides) -> "CLIPVisionConfig":
        """Tiny test config (width 32, 3 blocks, 2 heads; real 224 / 14 geometry, so 257 tokens)."""
        base = dict(dim=32, num_layers=3, num_heads=2, mlp_dim=128)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_shapes(cls, shapes: dict, num_heads: int | None = None) -> "CLIPVisionConfig":
        """Config from official open-clip shapes (``visual.patch_embedding.weight``, ``visual.pos_embedding``,
        ``visual.transformer.<i>.…``). ``num_heads`` is not in the weights: known widths use
        CLIP_HEADS_BY_WIDTH, other widths CLIP_FALLBACK_HEAD_DIM, unless given."""
        dim, _, patch, _ = shapes["visual.patch_embedding.weight"]
        tokens = int(shapes["visual.pos_embedding"][-2])
        grid = round((tokens - 1) ** 0.5)
        if grid * grid + 1 != tokens:
            raise ValueError(f"CLIP pos_embedding has {tokens} tokens, not 1 + a square grid")
        if num_heads is None:
            num_heads = CLIP_HEADS_BY_WIDTH.get(int(dim), max(1, int(dim) // CLIP_FALLBACK_HEAD_DIM))
        return cls(
            dim=int(dim), num_layers=block_count(shapes, "visual.transformer."), num_heads=int(num_heads),
            mlp_dim=int(shapes["visual.transformer.0.mlp.0.weight"][0]), patch_size=int(patch),
            image_size=int(grid * patch),
        )
