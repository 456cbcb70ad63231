"""Tiny random-weight model files in the real formats, under the real file names, plus example inputs.

    python -m steadydancer_core.tiny_kit MODELS_DIR --inputs INPUT_DIR

writes a ComfyUI-style models tree: every single file of the model file table (``model_files``), under its real
name in its folder (``kit_path``)::

    DiT, fp16 and fp8 (block linears e4m3fn + scale_weight)  official parameter names
    distill LoRA                                             diffusion_model.* lora_down/lora_up/alpha
    VAE                                                      official Wan VAE names
    umT5, fp16 and fp8 (scaled, ``scaled_fp8`` marker)       ComfyUI/HF names + ``spiece_model`` tokenizer
    CLIP vision                                              HF CLIPVisionModelWithProjection names
    DWPose detector and pose model                           tiny ONNX graphs with the real signatures

and, with ``--inputs``, the example photo and driving video the bundled workflows load. Write it into a folder of
its own and add that folder to ComfyUI through ``extra_model_paths.yaml`` (the section: ``kit_extra_model_paths``),
never into a models folder that holds real downloads: the files carry the real names. The kit never replaces a
file it did not write: each folder it writes gets a small manifest (``.steadydancer_tiny_kit.json``: the relative
path and SHA-256 of every file), and an existing target is replaced only when the manifest lists it with the same
content; any other existing target stops the kit before it writes anything. Each file is written under a temporary
name beside its target and renamed into place when complete, readable by everyone (0644 under the usual umask) like
any file ComfyUI writes.

The umT5 tokenizer is a small sentencepiece model trained in-process. Everything is random: the output is noise,
but every loader, converter and node runs exactly as with the real 14B files, on CPU (under 10 s for the 4-step
workflow, about 20 s for the 40-step ones, which keep their full resolution). Needs ``onnx`` (the ``test`` extra)
for the pose models.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .loading.key_names import (
    CLIP_QKV_OFFICIAL,
    CLIP_TO_HF,
    DIT_CONFIG_METADATA_KEY,
    T5_TO_COMFY,
    rename_key,
)
from .model_files import MODEL_FILE_TABLE, extra_model_paths_yaml, model_file_info
from .models.dit_config import DiTConfig
from .models.image_encoder_config import CLIPVisionConfig
from .models.text_encoder_config import T5Config
from .models.vae_config import VAEConfig
from .safe_write import TargetExistsError, file_mode, sha256, write_beside

# File names: the model file table's (the real downloads'; the bundled workflows reference them).
DIT_FP16, DIT_FP8, DISTILL_LORA, VAE_FILE, T5_FP16, T5_FP8, CLIP_FILE, DETECTOR_FILE, ESTIMATOR_FILE = (
    model_file_info(key).name for key in ("dit_fp16", "dit_fp8", "distill_lora", "vae", "t5_fp16", "t5_fp8",
                                          "clip_vision", "detector", "pose_model"))
PHOTO_FILE = "steadydancer_photo.png"
VIDEO_FILE = "steadydancer_dance.mp4"

# Tiny sizes: the smallest the loaders' config inference accepts, so the bundled workflows run on a CPU at their
# real settings (40 steps, 1024x576). The DiT's text and CLIP widths must equal the tiny umT5 / CLIP
# widths; the DiT is 16 wide with one head, stated in the file's metadata (real files need none: the loader
# infers heads as dim / 128 from shapes alone); FAAU's hidden
# width must be a multiple of its 8 heads; CLIP width 16 is one head of the fallback head width and Wan drops its
# last block, so it needs two; the VAE's base width 1 keeps every layer and the 4x temporal / 8x spatial strides
# (and is the fastest VAE width on CPU: wider ones are slower per pixel). The workflows' own resolution is kept
# (max_area scales the photo up to ~1024x576), so the DiT attention and the VAE still see full-size frames: about
# 20 s for the 40-step workflows on two CPU cores, under 10 s for the 4-step one.
TINY_T5 = dict(vocab_size=128, dim=16, dim_attn=16, dim_ffn=16, num_heads=2, num_layers=1)
TINY_CLIP = dict(dim=16, num_layers=2, num_heads=1, mlp_dim=16)
TINY_DIT = dict(dim=16, ffn_dim=32, freq_dim=16, num_heads=1, num_layers=1, align_hidden=8)
TINY_VAE_DIM = 1
TINY_LORA_RANK = 4
TOKENIZER_VOCAB = 96
FP8_MAX = 448.0  # largest float8_e4m3fn value
PHOTO_HW = (320, 192)
VIDEO_HW = (240, 160)
VIDEO_FRAMES = 7  # at 24 fps -> 5 frames at the workflows' 16 fps: a 4n+1 count, so no frame is dropped or reported
VIDEO_FPS = 24
TOKENIZER_CORPUS = (
    "a woman dances gracefully in a sunlit studio",
    "the man waves and smiles at the camera while music plays",
    "spinning, jumping and landing softly on a wooden floor",
    "a person dancing, natural motion, high quality",
    "bright tones, overexposed, static, blurred details, subtitles, worst quality, low quality",
)


MANIFEST_FILE = ".steadydancer_tiny_kit.json"
MANIFEST_TAG = "steadydancer_core.tiny_kit"


class KitConflictError(FileExistsError):
    """A target file exists and the kit did not write it (or it changed since): nothing was written."""


@dataclass(frozen=True)
class KitFiles:
    """Paths written by :func:`write_kit` (inputs are None when no input folder was given)."""

    models_dir: Path
    files: tuple
    photo: Path | None
    video: Path | None


def _randomise(module: torch.nn.Module, seed: int, scale: float = 0.2) -> dict[str, torch.Tensor]:
    """Random state dict: norms/gains near 1, everything else N(0, scale^2) (fp16/bf16-exact values)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, tensor in module.state_dict().items():
        if not tensor.is_floating_point():
            out[name] = tensor.clone()
            continue
        noise = torch.randn(tensor.shape, generator=gen)
        if re.search(r"(norm\w*|gamma|ln\w*)\.weight$|\.gamma$", name) or (tensor.ndim == 1 and name.endswith("scale")):
            value = 1.0 + 0.1 * noise
        else:
            value = noise * scale
        out[name] = value.to(torch.bfloat16).to(torch.float16).float()
    return out


def _save(sd: dict, path: Path, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)


def _fp8_scaled(sd: dict, is_quantised) -> dict:
    """fp8 e4m3fn copy of the chosen 2-D weights with a per-tensor ``scale_weight``, plus the ``scaled_fp8`` marker."""
    out = {}
    for key, value in sd.items():
        if is_quantised(key, value):
            scale = value.abs().max().clamp(min=1e-8) / FP8_MAX
            out[key] = (value / scale).to(torch.float8_e4m3fn)
            out[key[: -len(".weight")] + ".scale_weight"] = scale.reshape(1).float()
        else:
            out[key] = value.half() if value.is_floating_point() else value
    out["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    return out


# ------------------------------------------------------------------------------------------------- components
def tiny_configs() -> tuple[DiTConfig, VAEConfig, T5Config, CLIPVisionConfig]:
    t5 = T5Config.tiny(**TINY_T5)
    clip = CLIPVisionConfig.tiny(**TINY_CLIP)
    dit = DiTConfig.tiny(text_dim=t5.dim, clip_dim=clip.dim, **TINY_DIT)
    return dit, VAEConfig(dim=TINY_VAE_DIM), t5, clip


def dit_state_dict(config: DiTConfig, seed: int) -> dict:
    from .models.dit import SteadyDancerDiT

    torch.manual_seed(seed)
    return _randomise(SteadyDancerDiT(config), seed, scale=0.05)


def _dit_linear(key: str, value: torch.Tensor) -> bool:
    """A linear weight inside the DiT's block list (what the fp8 file and the LoRA cover)."""
    from .models.dit import SteadyDancerDiT

    return key.startswith(SteadyDancerDiT.BLOCKS + ".") and key.endswith(".weight") and value.ndim == 2


def lora_state_dict(dit_sd: dict, rank: int, seed: int) -> dict:
    """lightx2v-style LoRA over every block linear: ``diffusion_model.<layer>.lora_down/lora_up.weight`` + alpha."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in dit_sd.items():
        if not _dit_linear(key, value):
            continue
        base = "diffusion_model." + key[: -len(".weight")]
        out[base + ".lora_down.weight"] = (torch.randn(rank, value.shape[1], generator=gen) * 0.02).bfloat16()
        out[base + ".lora_up.weight"] = (torch.randn(value.shape[0], rank, generator=gen) * 0.02).bfloat16()
        out[base + ".alpha"] = torch.tensor(float(rank)).bfloat16()
    return out


def vae_state_dict(config: VAEConfig, seed: int) -> dict:
    from .models.vae import WanVAE

    torch.manual_seed(seed)
    return _randomise(WanVAE(config), seed, scale=0.1)


def train_tokenizer(vocab_size: int = TOKENIZER_VOCAB) -> bytes:
    """A small umT5-style sentencepiece model (pad 0, eos 1, unk 2, no bos), trained in memory."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(TOKENIZER_CORPUS) * 20), model_writer=buf, vocab_size=vocab_size, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, model_type="unigram", hard_vocab_limit=False, minloglevel=2,
    )
    return buf.getvalue()


def t5_comfy_state_dict(config: T5Config, spiece: bytes, seed: int) -> dict:
    from .loading.key_names import t5_to_official
    from .models.text_encoder import UMT5Encoder

    torch.manual_seed(seed)
    official = _randomise(UMT5Encoder(config), seed)
    comfy = {rename_key(k, T5_TO_COMFY, strict=True): v for k, v in official.items()}
    back = dict(t5_to_official(comfy))
    if set(back) != set(official):
        raise RuntimeError(f"umT5 name round trip failed: {sorted(set(back) ^ set(official))[:6]}")
    comfy["spiece_model"] = torch.frombuffer(bytearray(spiece), dtype=torch.uint8).clone()
    return comfy


def clip_hf_state_dict(config: CLIPVisionConfig, seed: int) -> dict:
    from .loading.key_names import clip_to_official
    from .models.image_encoder import CLIPVisionTower

    torch.manual_seed(seed)
    tower = CLIPVisionTower(config)
    official = {"visual." + k: v for k, v in _randomise(tower, seed).items()}
    hf = {}
    for key, value in official.items():
        m = re.match(CLIP_QKV_OFFICIAL, key)
        if m:
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                hf[f"vision_model.encoder.layers.{m.group(1)}.self_attn.{part}_proj.{m.group(2)}"] = chunk.clone()
        elif key == "visual.cls_embedding":
            hf["vision_model.embeddings.class_embedding"] = value.reshape(-1)
        elif key == "visual.pos_embedding":
            hf["vision_model.embeddings.position_embedding.weight"] = value.reshape(value.shape[-2:])
        else:
            hf[rename_key(key, CLIP_TO_HF, strict=True)] = value
    # the full HF tower also has the blocks Wan skips, the post-norm and the projection: include them as files do
    gen = torch.Generator().manual_seed(seed + 1)
    for i in range(config.used_layers, config.num_layers):
        for name, value in list(hf.items()):
            if name.startswith("vision_model.encoder.layers.0."):
                hf[name.replace("layers.0.", f"layers.{i}.", 1)] = value.clone()
    hf["vision_model.post_layernorm.weight"] = torch.ones(config.dim)
    hf["vision_model.post_layernorm.bias"] = torch.zeros(config.dim)
    hf["visual_projection.weight"] = torch.randn(config.dim, config.dim, generator=gen) * 0.05
    hf["vision_model.embeddings.position_ids"] = torch.arange(config.num_tokens)[None]
    back = dict(clip_to_official(hf))
    for key, value in official.items():
        if key not in back or not torch.equal(back[key].float(), value.float()):
            raise RuntimeError(f"CLIP name round trip failed at {key}")
    return {k: (v.half() if v.is_floating_point() else v) for k, v in hf.items()}


# ------------------------------------------------------------------------------------------------- inputs
def _draw_person(canvas: np.ndarray, cx: float, cy: float, height: float, phase: float) -> None:
    """A bright stick figure (the tiny pose models fire on bright pixels)."""
    import cv2

    white = (255, 255, 255)
    t = max(2, int(height / 30))
    head = (int(cx), int(cy - 0.42 * height))
    neck = (int(cx), int(cy - 0.32 * height))
    hip = (int(cx), int(cy + 0.05 * height))
    cv2.circle(canvas, head, int(0.08 * height), white, -1)
    cv2.line(canvas, neck, hip, white, t)
    swing = math.sin(phase)
    for side in (-1, 1):
        hand = (int(cx + side * 0.25 * height), int(cy - 0.3 * height + side * swing * 0.15 * height))
        cv2.line(canvas, neck, hand, white, t)
        foot = (int(cx + side * 0.15 * height + swing * 0.05 * height), int(cy + 0.45 * height))
        cv2.line(canvas, hip, foot, white, t)


def _photo_writer():
    def write(path: Path) -> None:
        import cv2

        h, w = PHOTO_HW
        yy, xx = np.mgrid[0:h, 0:w]
        photo = np.stack([40 + 60 * yy / h, 60 + 40 * xx / w, 110 + 0 * xx], axis=-1).astype(np.uint8)
        _draw_person(photo, w / 2, h * 0.55, h * 0.8, 0.0)
        ok, png = cv2.imencode(".png", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("could not encode the example photo as PNG")
        path.write_bytes(png.tobytes())

    return write


def _video_writer():
    def write(path: Path) -> None:
        from .video_io import write_video

        vh, vw = VIDEO_HW
        frames = np.zeros((VIDEO_FRAMES, vh, vw, 3), np.uint8)
        frames[...] = (30, 30, 50)
        for i in range(VIDEO_FRAMES):
            _draw_person(frames[i], vw / 2 + 10 * math.sin(i / 2), vh * 0.55, vh * 0.8, i / 1.5)
        write_video(path, frames, VIDEO_FPS)

    return write


def _input_plan() -> list[tuple[str, object]]:
    return [(PHOTO_FILE, _photo_writer()), (VIDEO_FILE, _video_writer())]


def write_inputs(input_dir) -> tuple[Path, Path]:
    """The example photo (PNG) and driving video (H.264 mp4) the bundled workflows load (same rules as the kit)."""
    folder = _KitFolder(Path(input_dir))
    plan = _input_plan()
    _refuse_conflicts([folder.conflict(rel) for rel, _ in plan])
    photo, video = (folder.write(rel, writer) for rel, writer in plan)
    return photo, video


# ------------------------------------------------------------------------------------------------- safe writing
def _refuse_conflicts(problems) -> None:
    problems = [p for p in problems if p]
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise KitConflictError(
            f"the tiny kit will not replace files it did not write:\n{listed}\n"
            "Nothing was written. The kit writes random weights under the real file names: give it an empty folder "
            "of its own (for example steadydancer-tiny/models) and add that folder to ComfyUI through "
            "extra_model_paths.yaml.")


class _KitFolder:
    """One folder the kit writes into, with its manifest of the files it wrote there (relative path -> SHA-256)."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = root / MANIFEST_FILE
        self.files = self._read_manifest()

    def _read_manifest(self) -> dict[str, str]:
        if not os.path.lexists(self.manifest):
            return {}
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
            if data.get("written_by") != MANIFEST_TAG or not isinstance(data.get("files"), dict):
                raise ValueError("not a tiny-kit manifest")
            return {str(k): str(v) for k, v in data["files"].items()}
        except (OSError, ValueError, AttributeError) as err:
            raise KitConflictError(
                f"{self.manifest} exists but is not a readable tiny-kit manifest ({err}); the kit will not write into "
                "this folder. Give it an empty folder of its own (for example steadydancer-tiny/models).") from None

    def conflict(self, rel: str) -> str | None:
        """Why ``rel`` may not be written, or None (absent, or the kit's own unchanged file)."""
        target = self.root / rel
        if not os.path.lexists(target):
            return None
        if target.is_symlink() or not target.is_file():
            return f"{target} (exists and is not a regular file)"
        recorded = self.files.get(rel)
        if recorded is None:
            return f"{target} (exists; not written by the tiny kit)"
        if sha256(target) != recorded:
            return f"{target} (changed since the tiny kit wrote it)"
        return None

    def write(self, rel: str, writer) -> Path:
        """Write ``rel`` through ``writer(temp_path)`` beside the target, then rename it into place."""
        target = self.root / rel
        _refuse_conflicts([self.conflict(rel)])
        try:
            self.files[rel] = write_beside(target, writer, replace=os.path.lexists(target), digest=True)
        except TargetExistsError:
            _refuse_conflicts([f"{target} (appeared while the kit was writing it)"])
        self._write_manifest()
        return target

    def _write_manifest(self) -> None:
        body = json.dumps({"written_by": MANIFEST_TAG, "files": dict(sorted(self.files.items()))}, indent=1) + "\n"
        fd, tmp_name = tempfile.mkstemp(prefix=".steadydancer_tiny_kit.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
            os.chmod(tmp_name, file_mode())
            os.replace(tmp_name, self.manifest)
        finally:
            if os.path.lexists(tmp_name):
                os.unlink(tmp_name)


# ------------------------------------------------------------------------------------------------- the kit
def _pose_builders():
    try:
        from ..pose.tiny_models import build_tiny_dwpose, build_tiny_yolox
    except (ImportError, ValueError):  # steadydancer_core imported as a top-level package: pose is one too
        from pose.tiny_models import build_tiny_dwpose, build_tiny_yolox
    return build_tiny_yolox, build_tiny_dwpose


def _model_plan(seed: int) -> list[tuple[str, object]]:
    """(relative path, writer) for every model file; the weights are made when a writer runs."""
    dit_cfg, vae_cfg, t5_cfg, clip_cfg = tiny_configs()
    made = {}

    def dit():
        if "dit" not in made:
            made["dit"] = dit_state_dict(dit_cfg, seed)
        return made["dit"]

    def t5():
        if "t5" not in made:
            made["t5"] = t5_comfy_state_dict(t5_cfg, train_tokenizer(), seed + 3)
        return made["t5"]

    # the head count cannot be read from shapes (real files: dim // 128); a width-16 DiT states it in its metadata
    stated = {DIT_CONFIG_METADATA_KEY: json.dumps({"num_heads": dit_cfg.num_heads})}
    t5_linear = lambda k, v: k.startswith("encoder.block.") and k.endswith(".weight") and v.ndim == 2 \
        and "relative_attention_bias" not in k  # noqa: E731

    def later(make_sd, metadata=None):
        return lambda path: _save(make_sd(), path, metadata)

    def pose(which: int):
        return lambda path: _pose_builders()[which](path)

    writers = {
        "dit_fp16": later(lambda: {k: v.half() for k, v in dit().items()}, stated),
        "dit_fp8": later(lambda: _fp8_scaled(dit(), _dit_linear), stated),
        "distill_lora": later(lambda: lora_state_dict(dit(), TINY_LORA_RANK, seed + 1)),
        "vae": later(lambda: vae_state_dict(vae_cfg, seed + 2)),
        "t5_fp16": later(lambda: {k: (v.half() if v.is_floating_point() else v) for k, v in t5().items()}),
        "t5_fp8": later(lambda: _fp8_scaled(t5(), t5_linear)),
        "clip_vision": later(lambda: clip_hf_state_dict(clip_cfg, seed + 4)),
        "detector": pose(0),
        "pose_model": pose(1),
    }
    return [(kit_path(info.key), writers[info.key]) for info in MODEL_FILE_TABLE if info.kind == "file"]


def kit_path(key: str) -> str:
    """Where the kit writes the table's file ``key``: ``<its first folder>/<its name>``."""
    info = model_file_info(key)
    return f"{info.folders[0]}/{info.name}"


def kit_extra_model_paths(base_path: str) -> str:
    """The ``extra_model_paths.yaml`` section that adds a kit written to ``base_path`` to ComfyUI."""
    folders = dict.fromkeys(kit_path(info.key).split("/", 1)[0] for info in MODEL_FILE_TABLE if info.kind == "file")
    return extra_model_paths_yaml(base_path, "steadydancer_tiny", folders)


def write_kit(models_dir, input_dir=None, seed: int = 0) -> KitFiles:
    """Write the tiny models (and the example inputs when ``input_dir`` is given).

    Raises :class:`KitConflictError`, before writing anything, when a target exists that the kit did not write.
    """
    models_dir = Path(models_dir)
    models = _KitFolder(models_dir)
    inputs = None
    if input_dir is not None:
        same = models_dir.resolve() == Path(input_dir).resolve()
        inputs = models if same else _KitFolder(Path(input_dir))
    model_plan = _model_plan(seed)
    input_plan = _input_plan() if inputs is not None else []
    _refuse_conflicts([models.conflict(rel) for rel, _ in model_plan]
                      + [inputs.conflict(rel) for rel, _ in input_plan])
    files = [models.write(rel, writer) for rel, writer in model_plan]
    photo = video = None
    if inputs is not None:
        photo, video = (inputs.write(rel, writer) for rel, writer in input_plan)
    return KitFiles(models_dir=models_dir, files=tuple(files), photo=photo, video=video)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steadydancer_core.tiny_kit", description=(
        "Write tiny random-weight SteadyDancer model files (real formats and names) into a folder of their own, "
        "laid out like a ComfyUI models folder; add it to ComfyUI through extra_model_paths.yaml. Existing files "
        f"are never replaced unless the kit wrote them (recorded in {MANIFEST_FILE} in each folder it writes)."))
    parser.add_argument("models_dir", help="an empty folder of its own for the tiny models (subfolders are created); "
                                           "not the models folder that holds your real downloads")
    parser.add_argument("--inputs", help="also write the example photo and driving video into this folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        kit = write_kit(args.models_dir, args.inputs, args.seed)
    except KitConflictError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path in kit.files + tuple(p for p in (kit.photo, kit.video) if p is not None):
        print(f"{path.stat().st_size / 1024:9.1f} KiB  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
