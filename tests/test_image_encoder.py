"""CLIP vision encoder: preprocessing, config, loading, errors; fidelity against the clip_vision_tiny fixtures."""
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import fixture_file
from safetensors.torch import load_file, save_file

from steadydancer_core.loading.loaders import load_image_encoder
from steadydancer_core.models.image_encoder import CLIPVisionTower, preprocess
from steadydancer_core.models.image_encoder_config import (
    CLIP_MEAN,
    CLIP_STD,
    CLIPVisionConfig,
)

FIX = "clip_vision_tiny"


def official_sd(config: CLIPVisionConfig, seed: int = 0) -> dict:
    """A random full open-clip state dict (visual tower with every block, post_norm, head, a text stub)."""
    torch.manual_seed(seed)
    full = CLIPVisionTower(CLIPVisionConfig(**{**config.__dict__, "skip_last_blocks": 0}))
    sd = {f"visual.{k}": torch.randn_like(v) * 0.2 for k, v in full.state_dict().items()}
    sd.update({"visual.post_norm.weight": torch.ones(config.dim), "visual.post_norm.bias": torch.zeros(config.dim),
               "visual.head": torch.randn(config.dim, 8), "textual.token_embedding.weight": torch.randn(10, 8),
               "log_scale": torch.tensor(4.6)})
    return sd


# --- config and preprocessing ------------------------------------------------------------------------------------
def test_clip_config_real_sizes_and_validation():
    real = CLIPVisionConfig()
    assert (real.dim, real.num_layers, real.num_heads, real.patch_size, real.image_size) == (1280, 32, 16, 14, 224)
    assert real.num_tokens == 257 and real.used_layers == 31
    assert CLIPVisionConfig.tiny().num_tokens == 257
    assert CLIPVisionConfig.tiny(image_size=112).num_tokens == 65
    with pytest.raises(ValueError, match="multiple of"):
        CLIPVisionConfig(image_size=225)
    with pytest.raises(ValueError, match="divisible"):
        CLIPVisionConfig(dim=1280, num_heads=7)


def test_clip_from_shapes_round_trip():
    cfg = CLIPVisionConfig.tiny(image_size=112)
    shapes = {k: tuple(v.shape) for k, v in official_sd(cfg).items()}
    assert CLIPVisionConfig.from_shapes(shapes) == cfg
    assert CLIPVisionConfig.from_shapes(shapes, num_heads=4).num_heads == 4


def test_preprocess_is_the_official_one():
    cfg = CLIPVisionConfig.tiny(image_size=28, patch_size=14)
    img = torch.rand(2, 3, 40, 30) * 2 - 1
    got = preprocess(img, cfg)
    want = F.interpolate(img, size=(28, 28), mode="bicubic", align_corners=False)
    want = (want * 0.5 + 0.5 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    same = preprocess(img[:, :, :28, :28], cfg)  # no resize when already at size
    torch.testing.assert_close(same * torch.tensor(CLIP_STD).view(1, 3, 1, 1) + torch.tensor(CLIP_MEAN).view(1, 3, 1, 1),
                               img[:, :, :28, :28] * 0.5 + 0.5, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        preprocess(torch.zeros(3, 10, 10), cfg)


# --- loading and errors ------------------------------------------------------------------------------------------
def test_clip_loads_official_pth_skipping_unused_parts(tmp_path):
    cfg = CLIPVisionConfig.tiny(image_size=56)
    sd = official_sd(cfg)
    torch.save(sd, tmp_path / "clip.pth")
    enc = load_image_encoder(tmp_path / "clip.pth", dtype=torch.float32)
    assert enc.config == cfg and len(enc.model.transformer) == cfg.num_layers - 1
    # reference: all blocks but the last, written out directly
    ref = CLIPVisionTower(cfg)
    ref.load_state_dict({k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")
                         and not k.startswith(("visual.post_norm", "visual.head", f"visual.transformer.{cfg.num_layers - 1}."))})
    images = torch.rand(3, 3, 50, 70) * 2 - 1
    out = enc.encode(images, batch_size=2)
    assert out.shape == (3, cfg.num_tokens, cfg.dim)
    with torch.no_grad():
        torch.testing.assert_close(out, ref(preprocess(images, cfg)), atol=1e-5, rtol=0)
    video = images.transpose(0, 1)  # official call form: [3, T, H, W]
    torch.testing.assert_close(enc.encode_videos([video]), out, atol=1e-6, rtol=0)
    enc.free()
    with pytest.raises(RuntimeError, match="freed"):
        enc.encode(images)


def test_clip_wrong_component_names_expected_and_found(tmp_path):
    t5_like = {"shared.weight": torch.zeros(16, 8), "encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(8, 8)}
    save_file(t5_like, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(ValueError, match="this is the umT5 text encoder.*expected the CLIP vision encoder") as err:
        load_image_encoder(tmp_path / "umt5.safetensors")
    assert "umT5" in str(err.value) and "clip_vision_h" in str(err.value)


def test_clip_truncated_file_gets_a_clear_error(tmp_path):
    cfg = CLIPVisionConfig.tiny(image_size=28)
    save_file({k: v.contiguous() for k, v in official_sd(cfg).items()}, str(tmp_path / "clip.safetensors"))
    data = (tmp_path / "clip.safetensors").read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        load_image_encoder(tmp_path / "half.safetensors")


def test_clip_pixel_values_shape_checked(tmp_path):
    cfg = CLIPVisionConfig.tiny(image_size=28)
    torch.save(official_sd(cfg), tmp_path / "clip.pth")
    enc = load_image_encoder(tmp_path / "clip.pth", dtype=torch.float32)
    with pytest.raises(ValueError, match="pixel_values"):
        enc.encode_pixels(torch.zeros(1, 3, 30, 30))


# --- fidelity ----------------------------------------------------------------------------------------------------
def _fixture():
    io_ = load_file(str(fixture_file(FIX, "clip_io.safetensors")))
    meta = json.loads(fixture_file(FIX, "clip_config.json").read_text())
    return io_, meta


def _indices(io_):
    return sorted(int(k.rsplit("_", 1)[1]) for k in io_ if k.startswith("image_"))


@pytest.mark.fidelity
@pytest.mark.parametrize("name", ["clip_tiny_official.pth", "clip_vision_tiny.safetensors"])
def test_clip_fp32_matches_official(name):
    io_, meta = _fixture()
    enc = load_image_encoder(fixture_file(FIX, name), dtype=torch.float32, num_heads=meta["arch"]["vision_heads"])
    assert enc.config.image_size == meta["arch"]["image_size"]
    for i in _indices(io_):
        want = io_[f"features_{i}"]
        torch.testing.assert_close(preprocess(io_[f"image_{i}"][None], enc.config), io_[f"pixel_values_{i}"],
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(enc.encode_pixels(io_[f"pixel_values_{i}"]), want, atol=1e-4, rtol=0)
        torch.testing.assert_close(enc.encode(io_[f"image_{i}"][None]), want, atol=1e-4, rtol=0)
    video = io_["video_batch"]  # [3, T, H, W] as the official wrapper takes it
    torch.testing.assert_close(enc.encode(video.transpose(0, 1)), io_["features_video_batch"], atol=1e-4, rtol=0)
    torch.testing.assert_close(enc.encode_videos([video]), io_["features_video_batch"], atol=1e-4, rtol=0)


@pytest.mark.fidelity
def test_clip_fp16_compute_close_to_official():
    io_, meta = _fixture()
    enc = load_image_encoder(fixture_file(FIX, "clip_vision_tiny.safetensors"), dtype=torch.float16,
                             num_heads=meta["arch"]["vision_heads"])
    for i in _indices(io_):
        got, want = enc.encode(io_[f"image_{i}"][None]), io_[f"features_{i}"]
        assert got.dtype == torch.float16
        assert ((got.float() - want).norm() / want.norm()).item() < 1e-2
