"""``--models DIR``: the model files of a ComfyUI-style models folder, found by their standard names."""
from __future__ import annotations

import logging
from pathlib import Path

from .cli_options import CLIError

log = logging.getLogger("steadydancer")

# standard file names in a ComfyUI models folder, in order of preference
DIT_DIRS = ("diffusion_models", "steadydancer")


DIT_NAMES = ("Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors", "Wan21_SteadyDancer_fp16.safetensors")


DIT_FOLDER = "SteadyDancer-14B"                   # the official release (sharded safetensors + config.json)


MODEL_FILES = {  # option -> (what, folders, names)
    "vae": ("VAE", ("vae",), ("wan_2.1_vae.safetensors",)),
    "t5": ("umT5 text encoder", ("text_encoders", "clip"),
           ("umt5_xxl_fp8_e4m3fn_scaled.safetensors", "umt5_xxl_fp16.safetensors")),
    "clip_vision": ("CLIP vision encoder", ("clip_vision",), ("clip_vision_h.safetensors",)),
    "detector": ("DWPose person detector", ("dwpose",), ("yolox_l.onnx",)),
    "pose_model": ("DWPose pose model", ("dwpose",), ("dw-ll_ucoco_384.onnx",)),
}


def _find_dit(root: Path) -> Path:
    folders = [root / d for d in DIT_DIRS]
    for name in DIT_NAMES:
        for folder in folders:
            found = _find_file(folder, name)
            if found is not None:
                return found
    for folder in folders:
        ggufs = sorted(f for f in (folder.rglob("*.gguf") if folder.is_dir() else ())
                       if "steadydancer" in f.name.lower() and f.is_file())
        if ggufs:
            if len(ggufs) > 1:
                log.info("--models: %d SteadyDancer GGUF files in %s; using %s (choose with --dit)",
                         len(ggufs), folder, ggufs[0].name)
            return ggufs[0]
    for folder in folders:
        candidate = folder / DIT_FOLDER
        if (candidate / "config.json").is_file():
            return candidate
    raise CLIError(f"--models {root}: no SteadyDancer DiT; looked for {', '.join(DIT_NAMES)}, a .gguf whose name "
                   f"contains SteadyDancer, or a {DIT_FOLDER}/ folder with config.json, in "
                   f"{' and '.join(str(f) for f in folders)}; put one there or pass --dit PATH")


def _find_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else the first ``name`` in a subfolder of ``folder``."""
    if (folder / name).is_file():
        return folder / name
    if folder.is_dir():
        return next((f for f in sorted(folder.rglob(name)) if f.is_file()), None)
    return None


def resolve_models(args) -> None:
    """Fill the model paths left empty from ``--models DIR`` (the explicit options win); with --video also the
    DWPose files. A missing file: a CLIError listing what was looked for where."""
    needed = ["dit", "vae", "t5", "clip_vision"] + (["detector", "pose_model"] if args.video else [])
    if args.models is None:
        missing = [n for n in needed[:4] if getattr(args, n) is None]
        if missing:
            names = ", ".join(f"--{n.replace('_', '-')}" for n in missing)
            raise CLIError(f"no model files given ({names}); pass --models DIR (a ComfyUI models folder) or each "
                           "file with --dit, --vae, --t5 and --clip-vision")
        return
    root = Path(args.models)
    if not root.is_dir():
        raise CLIError(f"--models {root}: folder not found; pass the ComfyUI models folder (the one holding "
                       "diffusion_models/, vae/, text_encoders/, clip_vision/)")
    for name in needed:
        if getattr(args, name) is not None:
            continue
        if name == "dit":
            found = _find_dit(root)
        else:
            what, folders, names = MODEL_FILES[name]
            found = next((f for n in names for d in folders if (f := _find_file(root / d, n)) is not None), None)
            if found is None:
                raise CLIError(f"--models {root}: no {what}; looked for {' or '.join(names)} in "
                               f"{' and '.join(str(root / d) for d in folders)}; put it there or pass "
                               f"--{name.replace('_', '-')} PATH")
        log.info("--models: %s = %s", name.replace("_", "-"), found)
        setattr(args, name, str(found))
