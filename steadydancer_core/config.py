"""Frozen, validated configuration dataclasses and the model constants.

Every size that the real checkpoints fix (CLIP token count, text length, frame rules, ...) lives here, so the
rest of the code never hard-codes 81, 257 or 512. Each component owns one section below.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- shared constants ---------------------------------------------------------------------------------------
VAE_TEMPORAL_STRIDE = 4          # latent frames = 1 + (frames - 1) // 4  (frames must be 4n + 1)
VAE_SPATIAL_STRIDE = 8
LATENT_CHANNELS = 16

# --- DiT -----------------------------------------------------------------------------------------------------
# Sizes of the released SteadyDancer-14B (Wan 2.1 I2V-14B + the SteadyDancer condition modules). The condition
# path and the CLIP projection are hard-wired in the official code: they do not follow `dim`.
DIT_HEAD_DIM = 128               # official 14B / 1.3B: num_heads = dim // 128 (heads cannot be read from shapes)
DIT_TEXT_LEN = 512               # text tokens the model pads the umT5 context to
DIT_CONDITION_CHANNELS = 16      # pose latent channels (`in_dim_c`)
DIT_ALIGN_HIDDEN = 128           # FAAU hidden width
DIT_ALIGN_HEADS = 8              # FAAU attention heads (not readable from shapes)
DIT_ALIGN_NORM_EPS = 1e-5        # FAAU channel LayerNorms
DIT_CLIP_DIM = 1280              # CLIP ViT-H feature width going into `img_emb`
DIT_CLIP_TOKENS = 257            # CLIP tokens (1 class + 16x16 patches) in front of the text context
DIT_ROPE_THETA = 10000.0
DIT_ROPE_MAX_POSITIONS = 1024    # rotary table length of the official model (max grid size per axis)
DIT_FREQ_THETA = 10000.0         # sinusoidal timestep embedding base
DIT_SSAR_GROUPS = 4              # GroupNorm groups inside the SSAR dynamic conv
DIT_SSAR_FC_SQUEEZE = 8


@dataclass(frozen=True)
class DiTConfig:
    """SteadyDancer DiT hyper-parameters (defaults: the released 14B model).

    ``in_dim`` counts the noisy latent (``out_dim`` channels) plus ``y`` (4 mask + 16 latent channels), so
    ``y`` has ``in_dim - out_dim`` channels. The fused patch embedding sees ``in_dim + 2 * condition_channels``.
    """

    dim: int = 5120
    ffn_dim: int = 13824
    freq_dim: int = 256
    text_dim: int = 4096
    num_heads: int = 40
    num_layers: int = 40
    text_len: int = DIT_TEXT_LEN
    in_dim: int = 36
    out_dim: int = 16
    patch_size: tuple = (1, 2, 2)
    eps: float = 1e-6
    qk_norm: bool = True
    cross_attn_norm: bool = True
    condition_channels: int = DIT_CONDITION_CHANNELS
    align_hidden: int = DIT_ALIGN_HIDDEN
    align_heads: int = DIT_ALIGN_HEADS
    clip_dim: int = DIT_CLIP_DIM
    clip_tokens: int = DIT_CLIP_TOKENS

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        positive = ("dim", "ffn_dim", "freq_dim", "text_dim", "num_heads", "num_layers", "text_len", "in_dim",
                    "out_dim", "condition_channels", "align_hidden", "align_heads", "clip_dim", "clip_tokens")
        bad = [f"{name}={getattr(self, name)}" for name in positive
               if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0]
        if bad:
            raise ValueError(f"DiTConfig: these sizes must be positive integers: {', '.join(bad)}")
        if len(self.patch_size) != 3 or min(self.patch_size) <= 0:
            raise ValueError(f"DiTConfig: patch_size must be 3 positive ints (t, h, w), got {self.patch_size}")
        if self.dim % self.num_heads:
            raise ValueError(f"DiTConfig: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"DiTConfig: head_dim {self.head_dim} must be even and >= 6 (rotary t/h/w split)")
        if self.freq_dim % 2:
            raise ValueError(f"DiTConfig: freq_dim {self.freq_dim} must be even")
        if self.in_dim <= self.out_dim:
            raise ValueError(f"DiTConfig: in_dim {self.in_dim} must exceed out_dim {self.out_dim} (I2V: latent + y)")
        if self.align_hidden % self.align_heads:
            raise ValueError(f"DiTConfig: align_hidden {self.align_hidden} not divisible by {self.align_heads} heads")
        if not self.eps > 0:
            raise ValueError(f"DiTConfig: eps must be > 0, got {self.eps}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def y_channels(self) -> int:
        """Channels of ``y`` (mask + image latent) = in_dim - out_dim (20 for the real model)."""
        return self.in_dim - self.out_dim

    @property
    def rope_pairs(self) -> tuple:
        """Rotary (t, h, w) split of the head_dim / 2 channel pairs, as in the official model (e.g. 22/21/21)."""
        pairs = self.head_dim // 2
        return (pairs - 2 * (pairs // 3), pairs // 3, pairs // 3)

    @classmethod
    def tiny(cls, **overrides) -> "DiTConfig":
        """A tiny config for tests (about 0.3 M parameters); keyword arguments override fields."""
        base = dict(dim=64, ffn_dim=128, freq_dim=32, text_dim=32, num_heads=2, num_layers=2, text_len=16,
                    align_hidden=32, clip_dim=32)
        base.update(overrides)
        return cls(**base)

    @staticmethod
    def official_config_overrides(config_json: dict) -> dict:
        """The keyword overrides for :meth:`from_shapes` found in an official ``config.json``.

        Shapes cannot tell ``num_heads``, ``text_len`` or ``eps``; the official (diffusers-style) config.json
        stores them. Returns only the keys that are present, e.g. ``{"num_heads": 40, "text_len": 512}``.
        """
        return {key: config_json[key] for key in ("num_heads", "text_len", "eps") if key in config_json}

    @classmethod
    def from_shapes(cls, shapes: dict, num_heads: int | None = None, text_len: int | None = None,
                    eps: float | None = None) -> "DiTConfig":
        """Infer the config from official-named tensor shapes (``{name: shape}``, any prefix already removed).

        ``num_heads``: shapes cannot tell it. Pass it when known (e.g. from config.json via
        :meth:`official_config_overrides`); otherwise ``dim // 128`` is used, as in the official 14B and 1.3B
        models. ``text_len`` defaults to 512 and ``eps`` to 1e-6 (the official values).
        Raises ValueError naming the missing tensors (e.g. a plain Wan 2.1 I2V file has no SteadyDancer modules).
        """
        shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
        wan_keys = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                    "head.head.weight", "blocks.0.ffn.0.weight", "blocks.0.self_attn.q.weight")
        dancer_keys = ("patch_embedding_fuse.weight", "patch_embedding_ref_c.weight",
                       "condition_embedding_align.proj_p.weight", "condition_embedding_spatial.conv.weight",
                       "condition_embedding_temporal.0.temporal.weight")
        missing = [k for k in wan_keys if k not in shapes]
        if missing:
            raise ValueError(f"not a Wan 2.1 DiT state dict: missing {', '.join(missing)}. Check that the file is "
                             "the SteadyDancer diffusion model (not a VAE, text or CLIP encoder) and not truncated.")
        missing = [k for k in dancer_keys if k not in shapes]
        if missing:
            raise ValueError(f"the DiT has no SteadyDancer modules (missing {', '.join(missing)}): this looks like a "
                             "plain Wan 2.1 I2V checkpoint. Load a SteadyDancer-14B file instead.")
        if "img_emb.proj.0.weight" not in shapes:
            raise ValueError("missing img_emb.proj.*: this is a text-to-video Wan model; SteadyDancer needs the I2V "
                             "variant with the CLIP image projection.")
        dim, in_dim, *patch = shapes["patch_embedding.weight"]
        patch_size = tuple(patch)
        layers = {int(k.split(".")[1]) for k in shapes if k.startswith("blocks.") and k.split(".")[1].isdigit()}
        if layers != set(range(len(layers))):
            gaps = sorted(set(range(max(layers) + 1)) - layers)
            raise ValueError(f"DiT blocks are not contiguous: blocks {gaps} are missing (truncated file?)")
        if num_heads is None:
            if dim % DIT_HEAD_DIM:
                raise ValueError(f"cannot infer num_heads for dim {dim} (not a multiple of {DIT_HEAD_DIM}); pass "
                                 "num_heads explicitly (the official config.json has it)")
            num_heads = dim // DIT_HEAD_DIM
        cond = shapes["patch_embedding_ref_c.weight"][1]
        fuse_in = shapes["patch_embedding_fuse.weight"][1]
        if fuse_in != in_dim + 2 * cond:
            raise ValueError(f"patch_embedding_fuse takes {fuse_in} channels, expected in_dim + 2 * {cond} = "
                             f"{in_dim + 2 * cond}: inconsistent SteadyDancer checkpoint")
        patch_volume = patch_size[0] * patch_size[1] * patch_size[2]
        return cls(
            dim=dim,
            ffn_dim=shapes["blocks.0.ffn.0.weight"][0],
            freq_dim=shapes["time_embedding.0.weight"][1],
            text_dim=shapes["text_embedding.0.weight"][1],
            num_heads=num_heads,
            num_layers=len(layers),
            text_len=DIT_TEXT_LEN if text_len is None else text_len,
            in_dim=in_dim,
            out_dim=shapes["head.head.weight"][0] // patch_volume,
            patch_size=patch_size,
            eps=1e-6 if eps is None else eps,
            qk_norm="blocks.0.self_attn.norm_q.weight" in shapes,
            cross_attn_norm="blocks.0.norm3.weight" in shapes,
            condition_channels=cond,
            align_hidden=shapes["condition_embedding_align.proj_p.weight"][0],
            clip_dim=shapes["img_emb.proj.0.weight"][0],
        )


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

# --- umT5 text encoder -----------------------------------------------------------------------------------------
UMT5_TEXT_LEN = 512              # tokens per prompt incl. EOS (Wan pads / truncates to this)
UMT5_PAD_ID = 0
UMT5_EOS_ID = 1
UMT5_MAX_DIST = 128              # relative-position bucket range (not stored in the weights)


def _encoder_block_count(shapes: dict, prefix: str) -> int:
    """Number of ``<prefix><i>.`` blocks among the keys of ``shapes`` (0 when none)."""
    idx = {int(k[len(prefix):].split(".", 1)[0]) for k in shapes
           if k.startswith(prefix) and k[len(prefix):].split(".", 1)[0].isdigit()}
    return max(idx) + 1 if idx else 0


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
            num_layers=_encoder_block_count(shapes, "blocks."), num_buckets=int(buckets), text_len=int(text_len),
        )


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
            dim=int(dim), num_layers=_encoder_block_count(shapes, "visual.transformer."), num_heads=int(num_heads),
            mlp_dim=int(shapes["visual.transformer.0.mlp.0.weight"][0]), patch_size=int(patch),
            image_size=int(grid * patch),
        )


# --- offload / memory planner ------------------------------------------------------------------------------------
OFFLOAD_REFERENCE_LATENT_FRAMES = 2   # ref_x and ref_c latents appended to the video latent in time
OFFLOAD_DEFAULT_PREFETCH = 1          # swapped DiT blocks copied ahead of use
OFFLOAD_RESERVE_FRACTION = 0.1        # share of the budget kept free (allocator fragmentation, library workspaces);
                                      # keeps the planned peak of a 24 GiB card under 22.5 GB allocated
OFFLOAD_MIN_RESERVE_BYTES = 1 << 30
OFFLOAD_ACTIVATION_SAFETY = 1.1       # margin on the per-token activation estimate of a DiT block


# --- sampling / pipeline ----------------------------------------------------------------------------------------
NUM_TRAIN_TIMESTEPS = 1000          # flow-matching training steps; timestep = int(sigma * 1000)
SOLVERS = ("unipc", "dpm++", "euler")
DEFAULT_SOLVER = "unipc"
SOLVER_ORDER = 2                    # UniPC (bh2) and DPM++ (midpoint) multistep order, as shipped
DEFAULT_STEPS = 40
DEFAULT_SHIFT = 5.0                 # official: 5.0 (3.0 recommended for 480p)
DEFAULT_GUIDE_SCALE = 5.0           # text CFG
DEFAULT_CONDITION_GUIDE_SCALE = 1.0  # pose-condition CFG (README value; generate_dancer.py CLI default is 1.5)
DEFAULT_CONDITION_CFG_START = 0.1   # pose CFG active while start < step/steps < end (strict)
DEFAULT_CONDITION_CFG_END = 0.4
DEFAULT_MAX_AREA = 1024 * 576       # pixels; output aspect follows the photo
LATENT_SIZE_MULTIPLE = 2            # latent h, w are multiples of the DiT spatial patch
DEFAULT_FRAMES_PER_SEGMENT = 81     # frames the model was trained on (4n + 1)
DEFAULT_SEGMENT_OVERLAP = 9         # frames shared by consecutive segments (4k + 1)
FIRST_FRAME_MODES = ("model", "latent", "exact")
MASK_CHANNELS = 4                   # I2V mask channels in y (one per pixel frame of a latent frame)
WAN_I2V_NEGATIVE_PROMPT = (
    "镜头晃动，色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
DEFAULT_NEGATIVE_PROMPT = WAN_I2V_NEGATIVE_PROMPT  # used when the negative prompt is left empty
# Wan 2.1 latent -> RGB preview projection ([16][3] and bias), in normalised-latent space.
WAN21_LATENT_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
)
WAN21_LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)
