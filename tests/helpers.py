"""Helpers shared by the tests: tiny random networks and inputs (no fixtures, no test functions here).

* ``tiny_dit`` / ``tiny_dit_inputs``: a tiny SteadyDancer DiT with non-trivial norms and biases, and its inputs;
* ``build_tiny_model`` / ``inputs`` / ``settings``: a whole tiny ``SteadyDancerModel`` (real DiT, VAE, umT5 and CLIP
  classes, a byte tokenizer), random photo / pose frames of side ``SIZE`` and small ``GenerationSettings``.
"""
import struct
import zlib

import numpy as np
import torch

from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.models.image_encoder import CLIPVisionTower, ImageEncoder
from steadydancer_core.models.image_encoder_config import CLIPVisionConfig
from steadydancer_core.models.text_encoder import TextEncoder, UMT5Encoder
from steadydancer_core.models.text_encoder_config import T5Config
from steadydancer_core.models.vae import WanVAE
from steadydancer_core.models.vae_config import VAEConfig
from steadydancer_core.runtime.bundle import SteadyDancerModel
from steadydancer_core.sampling import conditioning as cond
from steadydancer_core.sampling.settings import GenerationSettings


def tiny_dit(seed=0, dtype=torch.float32, **overrides):
    torch.manual_seed(seed)
    model = SteadyDancerDiT(DiTConfig.tiny(**overrides)).to(dtype).eval()
    with torch.no_grad():  # non-trivial norm gains and biases
        for name, p in model.named_parameters():
            if name.endswith(("norm_q.weight", "norm_k.weight", "norm_k_img.weight", "norm3.weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return model


def tiny_dit_inputs(config, batch=1, frames=3, h=4, w=6, text_lens=None, seed=1):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    text_lens = text_lens or [config.text_len] * batch
    context = torch.zeros(batch, max(text_lens), config.text_dim)
    for i, n in enumerate(text_lens):
        context[i, :n] = randn(n, config.text_dim)
    return dict(
        x=randn(batch, config.out_dim, frames, h, w), t=torch.randint(0, 1000, (batch,), generator=g),
        context=context, y=randn(batch, config.y_channels, frames, h, w),
        condition=randn(batch, config.condition_channels, frames, h, w), ref_x=randn(batch, config.in_dim, 1, h, w),
        ref_c=randn(batch, config.in_dim, 1, h, w), clip_fea_x=randn(batch, config.clip_tokens, config.clip_dim),
        clip_fea_c=randn(batch, config.clip_tokens, config.clip_dim))


SIZE = 32  # photo side; max_area SIZE*SIZE keeps it unresized


class ByteTokenizer:
    """Deterministic stand-in tokenizer with the UMT5Tokenizer call shape (ids, mask [B, text_len])."""

    def __init__(self, config: T5Config):
        self.text_len, self.vocab = config.text_len, config.vocab_size

    def __call__(self, prompts):
        ids = torch.zeros(len(prompts), self.text_len, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, text in enumerate(prompts):
            toks = [3 + b % (self.vocab - 3) for b in text.encode()][: self.text_len - 1] + [1]
            ids[i, : len(toks)] = torch.tensor(toks)
            mask[i, : len(toks)] = 1
        return ids, mask

    def was_truncated(self, text):
        return len(text.encode()) > self.text_len - 1


def build_tiny_model():
    torch.manual_seed(0)
    t5 = T5Config.tiny(text_len=DiTConfig.tiny().text_len)
    clip = CLIPVisionConfig.tiny()
    dit = SteadyDancerDiT(DiTConfig.tiny(text_dim=t5.dim, clip_dim=clip.dim)).eval().requires_grad_(False)
    with torch.no_grad():  # make the random DiT respond visibly to its inputs
        for p in dit.parameters():
            if p.ndim == 1 and torch.count_nonzero(p) == 0:
                p.normal_(0, 0.02)
    vae = WanVAE(VAEConfig.tiny()).eval().requires_grad_(False)
    text = TextEncoder(UMT5Encoder(t5).eval().requires_grad_(False), ByteTokenizer(t5))
    image = ImageEncoder(CLIPVisionTower(clip).eval().requires_grad_(False))
    return SteadyDancerModel(dit=dit, vae=vae, text_encoder=text, image_encoder=image, dtype=torch.float32)


def inputs(frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(SIZE, SIZE, 3, generator=g)
    pos = torch.rand(frames, SIZE, SIZE, 3, generator=g)
    neg = torch.rand(frames, SIZE, SIZE, 3, generator=g)
    return photo, pos, neg


def settings(**kw):
    base = dict(prompt="a dancer", steps=2, max_area=SIZE * SIZE, seed=7, pose_cfg=1.5,
                pose_cfg_start=0.0, pose_cfg_end=1.0, tiling="off", first_frame="model", length=0)
    base.update(kw)
    return GenerationSettings(**base)


def pose_latent(vae, poses, photo_hw, size, device, tiling="off", pose_resize="direct"):
    """The latent [16, F, h, w] of whole pose frames [T, H', W', 3] in [0, 1], resized by ``pose_resize`` as the
    pipeline resizes them one segment at a time (the reference the tests compare its ``condition`` with)."""
    video = cond.pose_video(poses, cond.pose_pil_size(photo_hw, size, pose_resize), size)
    return cond.encode_video(vae, video, "off" if tiling == "off" else "auto").to(device)


def clip_features(image_encoder, image):
    """CLIP features [1, tokens, dim] of one image [H, W, 3] in [0, 1] (official preprocessing in the encoder)."""
    return image_encoder.encode(image.permute(2, 0, 1)[None].mul(2.0).sub_(1.0))


def write_png(path, rgb):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def pose_run(tmp_path):
    """A photo, a pose folder and stand-in model files: enough for everything before the models load."""
    rng = np.random.default_rng(1)
    photo = write_png(tmp_path / "photo.png", rng.integers(0, 255, (16, 16, 3), np.uint8))
    for i in range(2):
        write_png(tmp_path / "poses" / "positive" / f"{i:04d}.png", rng.integers(0, 255, (16, 16, 3), np.uint8))
        write_png(tmp_path / "poses" / "negative" / f"{i:04d}.png", rng.integers(0, 255, (16, 16, 3), np.uint8))
    models = []
    for name in ("dit", "vae", "t5", "clip-vision"):
        (tmp_path / f"{name}.safetensors").write_bytes(b"stand-in")
        models += [f"--{name}", str(tmp_path / f"{name}.safetensors")]
    return ["--photo", str(photo), "--pose-dir", str(tmp_path / "poses")] + models + ["--steps", "1"]


def png_claiming(path, width, height):
    """A PNG whose header claims width x height (1 row of data: decoding it would fail, reading the header not)."""
    import cv2

    cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]                                     # chunk type + 13 bytes of IHDR data
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path
