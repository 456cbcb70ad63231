"""``VAEConfig`` and the Wan 2.1 VAE's constants: strides, latent statistics and the activation factors the tiling
planner uses.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- shared constants ---------------------------------------------------------------------------------------
VAE_TEMPORAL_STRIDE = 4          # latent frames = 1 + (frames - 1) // 4  (frames must be 4n + 1)


VAE_SPATIAL_STRIDE = 8


LATENT_CHANNELS = 16


# --- VAE -----------------------------------------------------------------------------------------------------
# Per-channel latent statistics of the Wan 2.1 VAE (z_dim 16), as in the official wrapper:
# normalised = (mu - mean) / std, and the decoder receives z * std + mean.
VAE_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)


VAE_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


VAE_REAL_DIM = 96                       # base width of the released Wan 2.1 VAE


VAE_TINY_DIM = 8                        # base width of the tiny test model


VAE_DEFAULT_CPU_MEMORY_BUDGET = 4 << 30  # bytes of activations allowed on CPU when tile="auto"


VAE_CUDA_FREE_MEMORY_FRACTION = 0.7     # share of the free CUDA memory tile="auto" may use


# Peak activation bytes per pixel of a tile, per base channel (dim), per byte of the compute dtype: the
# live tensors at the peak (about 10.8 and 7.9 "4 frames x dim channels" units for decode/encode, the causal
# caches included) plus the conv kernel's own copies; measured on CPU (benchmarks/bench_vae.py) with margin.
VAE_DECODE_ACT_FACTOR = 56.0


VAE_ENCODE_ACT_FACTOR = 44.0


VAE_CPU_FP16_CONV_EXTRA = 100.0          # fp16 conv3d on CPU falls back to an unfolding kernel (~27x input)


VAE_TILE_OVERLAP_FRACTION = 0.25        # default overlap as a share of the tile side (tile="auto" or explicit)


VAE_MIN_TILE_PIXELS = 64                # smallest tile side tile="auto" picks (pixels, multiple of 8)


@dataclass(frozen=True)
class VAEConfig:
    """Wan 2.1 causal-3D VAE (official ``WanVAE_`` arguments; ``temperal`` is the upstream spelling)."""

    dim: int = VAE_REAL_DIM
    z_dim: int = LATENT_CHANNELS
    dim_mult: tuple = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple = ()
    temperal_downsample: tuple = (False, True, True)

    def __post_init__(self):
        object.__setattr__(self, "dim_mult", tuple(int(m) for m in self.dim_mult))
        object.__setattr__(self, "attn_scales", tuple(float(s) for s in self.attn_scales))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        if self.dim <= 0 or self.num_res_blocks <= 0 or any(m <= 0 for m in self.dim_mult):
            raise ValueError(f"VAEConfig: dim, num_res_blocks and dim_mult must be positive, got {self}")
        if self.z_dim != LATENT_CHANNELS:
            raise ValueError(
                f"VAEConfig: z_dim {self.z_dim} is not supported; SteadyDancer (Wan 2.1) uses the Wan 2.1 VAE with "
                f"z_dim {LATENT_CHANNELS} (z_dim 48 is the Wan 2.2 TI2V-5B VAE)."
            )
        if 2 ** (len(self.dim_mult) - 1) != VAE_SPATIAL_STRIDE:
            raise ValueError(f"VAEConfig: dim_mult {self.dim_mult} does not give the spatial stride {VAE_SPATIAL_STRIDE}")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1 or 2 ** sum(self.temperal_downsample) != VAE_TEMPORAL_STRIDE:
            raise ValueError(
                f"VAEConfig: temperal_downsample {self.temperal_downsample} does not give the temporal stride "
                f"{VAE_TEMPORAL_STRIDE} over {len(self.dim_mult) - 1} stages"
            )

    @property
    def latents_mean(self) -> tuple:
        return VAE_LATENTS_MEAN

    @property
    def latents_std(self) -> tuple:
        return VAE_LATENTS_STD

    @classmethod
    def from_shapes(cls, shapes: dict) -> "VAEConfig":
        """Infer the width from official-named tensor shapes (``encoder.conv1.weight`` is [dim, 3, 3, 3, 3],
        ``conv2.weight`` is [z_dim, z_dim, 1, 1, 1]); the rest is the fixed Wan 2.1 layout, checked on load."""
        for key in ("encoder.conv1.weight", "conv2.weight"):
            if key not in shapes:
                raise ValueError(f"VAEConfig.from_shapes: '{key}' is missing; these are not Wan 2.1 VAE weights")
        conv_in = tuple(shapes["encoder.conv1.weight"])
        if len(conv_in) != 5 or conv_in[1] != 3:
            raise ValueError(
                f"VAEConfig.from_shapes: encoder.conv1.weight has shape {conv_in}, expected [dim, 3, 3, 3, 3] "
                f"(a Wan 2.1 VAE; [*, 12, ...] would be the Wan 2.2 VAE)"
            )
        return cls(dim=int(conv_in[0]), z_dim=int(tuple(shapes["conv2.weight"])[0]))

    @classmethod
    def tiny(cls) -> "VAEConfig":
        return cls(dim=VAE_TINY_DIM)
