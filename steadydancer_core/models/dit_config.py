"""``DiTConfig``: the SteadyDancer DiT's hyper-parameters, validated on construction and readable from weight shapes.

Every size the released checkpoint fixes lives here, so the model code never hard-codes 512, 257 or 1280.
"""
from __future__ import annotations

from dataclasses import dataclass

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


DIT_FREQ_THETA = 10000.0         # sinusoidal timestep embedding base


DIT_SSAR_GROUPS = 4              # GroupNorm groups inside the SSAR dynamic conv


DIT_SSAR_FC_SQUEEZE = 8
DIT_CLIP_FRAMES = 81            # frames per clip (4n + 1) the model was trained on (official frame_num)
DIT_DEFAULT_AREA = 1024 * 576    # pixels per frame of the official default size; output aspect follows the photo
DIT_MAX_SIZE = 1 << 18           # bound of every width, count and length of a config (the 14B's largest: 13824)
DIT_MAX_TEXT_LEN = 4096          # text tokens (official 512): the context is allocated at this length
# what a weight file may state about its config (official config.json, or a single file's metadata):
# key -> (lowest, highest); num_heads and text_len are integers, eps a float
DIT_STATED_BOUNDS = {"num_heads": (1, 1024), "text_len": (1, DIT_MAX_TEXT_LEN), "eps": (1e-12, 1e-2)}

# one tensor of each module SteadyDancer adds on top of Wan 2.1 I2V (official names): a DiT file without any of them
# is a plain Wan 2.1 checkpoint
STEADYDANCER_KEYS = ("patch_embedding_fuse.weight", "patch_embedding_ref_c.weight",
                     "condition_embedding_align.proj_p.weight", "condition_embedding_spatial.conv.weight",
                     "condition_embedding_temporal.0.temporal.weight")


def missing_steadydancer_modules(keys) -> list[str]:
    """The ``STEADYDANCER_KEYS`` absent from ``keys`` (official names); all of them for a plain Wan 2.1 DiT."""
    keys = set(keys)
    return [k for k in STEADYDANCER_KEYS if k not in keys]


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
        huge = [f"{name}={getattr(self, name)}" for name in positive if getattr(self, name) > DIT_MAX_SIZE]
        if huge or self.text_len > DIT_MAX_TEXT_LEN:
            raise ValueError(f"DiTConfig: sizes beyond any DiT (widths and counts <= {DIT_MAX_SIZE}, text_len <= "
                             f"{DIT_MAX_TEXT_LEN}): {', '.join(huge) or f'text_len={self.text_len}'}")
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
        if not 0 < self.eps < 1:                          # NaN and inf fail too
            raise ValueError(f"DiTConfig: eps must be in (0, 1), got {self.eps}")

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
        missing = [k for k in wan_keys if k not in shapes]
        if missing:
            raise ValueError(f"not a Wan 2.1 DiT state dict: missing {', '.join(missing)}. Check that the file is "
                             "the SteadyDancer diffusion model (not a VAE, text or CLIP encoder) and not truncated.")
        missing = missing_steadydancer_modules(shapes)
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
