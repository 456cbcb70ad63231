"""``--models DIR``: the model files of a ComfyUI-style models folder, found by the model file table's names."""
from __future__ import annotations

import logging
from pathlib import Path

from . import MODEL_ROLES, model_files_for
from .cli_options import CLIError

log = logging.getLogger("steadydancer")

# option (the argparse attribute) -> role in the model file table
OPTION_ROLES = {"dit": "dit", "vae": "vae", "t5": "t5", "clip_vision": "clip_vision", "detector": "detector",
                "pose_model": "pose_model"}


def _or_list(items: list[str]) -> str:
    return " or ".join(items) if len(items) <= 2 else ", ".join(items[:-1]) + ", or " + items[-1]


def _find(root: Path, option: str) -> Path:
    """The preferred file of the option's role: the table's entries in order of preference, each in the role's
    folders in lookup order (directly in a folder, else in a subfolder of it)."""
    role = MODEL_ROLES[OPTION_ROLES[option]]
    folders = [root / d for d in role.search_dirs]
    candidates = [f for f in model_files_for(role.key) if f.kind != "comfy_quant"]
    for info in candidates:
        for folder in folders:
            found = info.found_in(folder)
            if len(found) > 1:
                log.info("--models: %d matches for %s in %s; using %s (choose with --%s)", len(found),
                         info.looked_for, folder, found[0].name, option.replace("_", "-"))
            if found:
                return found[0]
    one = "one" if len(candidates) > 1 else "it"
    raise CLIError(f"--models {root}: no {role.title}; looked for {_or_list([f.looked_for for f in candidates])} "
                   f"in {' and '.join(str(f) for f in folders)}; put {one} there or pass "
                   f"--{option.replace('_', '-')} PATH")


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
        found = _find(root, name)
        log.info("--models: %s = %s", name.replace("_", "-"), found)
        setattr(args, name, str(found))


def describe_lookup() -> str:
    """What ``--models DIR`` looks for, as a Markdown list (for the documentation), ending in a newline."""
    lines = []
    for option, role_key in OPTION_ROLES.items():
        role = MODEL_ROLES[role_key]
        where = " or ".join(f"`{d}/`" for d in role.folders)
        legacy = "".join(f" (also in the legacy `{d}/`)" for d in role.legacy_dirs)
        found = ", else ".join(f"`{f.name}`" if f.kind == "file" else
                               f.looked_for + (" (the first by name)" if f.kind == "gguf" else "")
                               for f in model_files_for(role_key) if f.kind != "comfy_quant")
        video = " (with `--video`)" if role_key in ("detector", "pose_model") else ""
        lines.append(f"- `--{option.replace('_', '-')}`{video}, the {role.title}, in {where}{legacy}: {found}")
    return "\n".join(lines) + "\n"
