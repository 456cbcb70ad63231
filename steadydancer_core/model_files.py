"""The model files SteadyDancer uses, in one table: name, ComfyUI folder, size, Hugging Face source, preference.

Everything else that names a model file is derived from :data:`MODEL_FILE_TABLE`: the ``--models DIR`` lookup of
the CLI, the tiny kit's file names, the workflows' missing-model downloads, the loader's tooltips and folder lists,
the DWPose defaults and the model table of the documentation (:func:`render_model_table`). Standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HF_SITE = "https://huggingface.co"
HF_REVISION = "main"

# The folders this pack registers with ComfyUI (the others are ComfyUI's own model folders).
STEADYDANCER_FOLDER = "steadydancer"    # DiT and LoRA files kept apart from other diffusion models
DWPOSE_FOLDER = "dwpose"                # the ONNX pose models
# Where comfyui_controlnet_aux keeps the DWPose / YOLOX ONNX files it downloaded (relative to custom_nodes/).
CONTROLNET_AUX_PACK = "comfyui_controlnet_aux"
CONTROLNET_AUX_DWPOSE_DIRS = ("ckpts/yzd-v/DWPose", "ckpts/hr16/yolox-onnx", "ckpts/hr16/DWPose-TorchScript-BatchSize5")

KINDS = ("file", "gguf", "comfy_quant", "folder")
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


@dataclass(frozen=True)
class ModelRole:
    """What a model file does. ``folders``: the ComfyUI model folders that hold it, in lookup order;
    ``legacy_dirs``: older ``models/`` subfolders ComfyUI reads as the first of them (``--models`` looks there too)."""

    key: str
    title: str
    folders: tuple[str, ...]
    legacy_dirs: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.key or not self.title or not self.folders:
            raise ValueError(f"model role {self.key!r}: key, title and folders are required")

    @property
    def search_dirs(self) -> tuple[str, ...]:
        """The ``models/`` subfolders ``--models DIR`` searches, in order."""
        return self.folders + self.legacy_dirs


MODEL_ROLES = {r.key: r for r in (
    ModelRole("dit", "SteadyDancer DiT", ("diffusion_models", STEADYDANCER_FOLDER)),
    ModelRole("vae", "Wan 2.1 VAE", ("vae",)),
    ModelRole("t5", "umT5 text encoder", ("text_encoders",), legacy_dirs=("clip",)),
    ModelRole("clip_vision", "CLIP vision encoder", ("clip_vision",)),
    ModelRole("lora", "LoRA", ("loras", STEADYDANCER_FOLDER)),
    ModelRole("detector", "DWPose person detector", (DWPOSE_FOLDER,)),
    ModelRole("pose_model", "DWPose pose model", (DWPOSE_FOLDER,)),
)}


@dataclass(frozen=True)
class ModelFileInfo:
    """One known model file (or family of files).

    kind: ``file`` (``name`` is the exact file name), ``gguf`` (``name`` is a glob, ``contains`` a word the file
    name holds, any case), ``comfy_quant`` (any name: a file in ComfyUI's quantised layout, recognised by its
    contents) or ``folder`` (``name`` is a folder holding ``marker``). ``rank``: preference within the role, 0 first.
    ``folders``: where it goes, the recommended folder first (default: its role's folders). ``size``: about, as
    shown to people. ``repo`` / ``subfolder``: its Hugging Face repository and the folder in it (ending in ``/``);
    ``source`` describes the source when there is no single repository.
    """

    key: str
    role: str
    name: str
    size: str
    rank: int
    label: str = ""
    kind: str = "file"
    repo: str = ""
    subfolder: str = ""
    source: str = ""
    contains: str = ""
    marker: str = ""
    optional: bool = False
    note: str = ""
    folders: tuple[str, ...] = field(default=())

    def __post_init__(self):
        problem = self._problem()
        if problem:
            raise ValueError(f"model file {self.key!r}: {problem}")
        if not self.folders:
            object.__setattr__(self, "folders", MODEL_ROLES[self.role].folders)
        if not self.label:
            object.__setattr__(self, "label", self.name)

    def _problem(self) -> str | None:
        if self.role not in MODEL_ROLES:
            return f"role must be one of {', '.join(MODEL_ROLES)}"
        if self.kind not in KINDS:
            return f"kind must be one of {', '.join(KINDS)}"
        if self.kind != "comfy_quant" and not self.name or "/" in self.name:
            return "needs a name without '/'"
        if self.repo and not _REPO.fullmatch(self.repo):
            return f"repo {self.repo!r} is not owner/name"
        if self.subfolder and (not self.repo or not self.subfolder.endswith("/") or self.subfolder.startswith("/")):
            return "subfolder needs a repo and ends with '/'"
        if not self.repo and not self.source:
            return "needs a repo or a source"
        if self.kind == "folder" and not self.marker:
            return "a folder needs its marker file"
        if not set(self.folders) <= set(MODEL_ROLES[self.role].folders):
            return f"folders must be among {MODEL_ROLES[self.role].folders}"
        return None

    @property
    def url(self) -> str | None:
        """The direct download (Hugging Face resolve URL) of a single named file; None otherwise."""
        if self.kind != "file" or not self.repo:
            return None
        return f"{HF_SITE}/{self.repo}/resolve/{HF_REVISION}/{self.subfolder}{self.name}"

    @property
    def page(self) -> str | None:
        """The repository page (its folder when it has one); None without a repository."""
        if not self.repo:
            return None
        folder = f"/tree/{HF_REVISION}/{self.subfolder.rstrip('/')}" if self.subfolder else ""
        return f"{HF_SITE}/{self.repo}{folder}"

    @property
    def looked_for(self) -> str:
        """What ``--models`` looks for, in words."""
        if self.kind == "gguf":
            return f"a {self.name.lstrip('*')} whose name contains {self.contains}"
        if self.kind == "folder":
            return f"a {self.name}/ folder with {self.marker}"
        return self.name

    def found_in(self, folder: Path) -> list[Path]:
        """The matches in ``folder`` (directly, else in a subfolder), best first; [] for ``comfy_quant`` (any
        name)."""
        folder = Path(folder)
        if self.kind == "file":
            if (folder / self.name).is_file():
                return [folder / self.name]
            found = sorted(folder.rglob(self.name)) if folder.is_dir() else []
            return [f for f in found if f.is_file()][:1]
        if self.kind == "gguf":
            found = sorted(folder.rglob(self.name)) if folder.is_dir() else []
            return [f for f in found if self.contains.lower() in f.name.lower() and f.is_file()]
        if self.kind == "folder":
            return [folder / self.name] if (folder / self.name / self.marker).is_file() else []
        return []


_KIJAI = "Kijai/WanVideo_comfy"
_WAN_REPACKAGED = "Comfy-Org/Wan_2.1_ComfyUI_repackaged"
_DWPOSE = "yzd-v/DWPose"

# In the order the documentation lists them.
MODEL_FILE_TABLE = (
    ModelFileInfo("dit_fp16", "dit", "Wan21_SteadyDancer_fp16.safetensors", "32.8 GB", rank=1,
                  repo=_KIJAI, subfolder="SteadyDancer/", note="16-bit weights; on 24 GB with offload auto"),
    ModelFileInfo("dit_fp8", "dit", "Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors", "16.4 GB", rank=0,
                  repo="Kijai/WanVideo_comfy_fp8_scaled", subfolder="SteadyDancer/",
                  note="fp8 e4m3fn with scales: the 24 GB and 16 GB choice"),
    ModelFileInfo("dit_gguf", "dit", "*.gguf", "9–17 GB", rank=2, kind="gguf", contains="SteadyDancer",
                  label="SteadyDancer GGUF (Q8_0, Q6_K, Q5_K_M, Q4_K_M …)",
                  source="SteadyDancer-GGUF conversions of the fp16 file",
                  note="packed quantised weights; Q4_K_M / Q5_K_M for 12 GB cards"),
    ModelFileInfo("dit_comfy_quant", "dit", "", "9–17 GB", rank=3, kind="comfy_quant",
                  label="SteadyDancer in ComfyUI's quantised format (fp8 float8_e4m3fn / float8_e5m2, nvfp4)",
                  source="files quantised with ComfyUI's own layout",
                  note="any file name; recognised by its layer markers"),
    ModelFileInfo("dit_official", "dit", "SteadyDancer-14B", "65 GB", rank=4, kind="folder", marker="config.json",
                  label="official SteadyDancer-14B/ folder (sharded safetensors + config.json)",
                  repo="MCG-NJU/SteadyDancer-14B", folders=(STEADYDANCER_FOLDER, "diffusion_models"),
                  note="the release as published; the largest download"),
    ModelFileInfo("vae", "vae", "wan_2.1_vae.safetensors", "254 MB", rank=0, repo=_WAN_REPACKAGED,
                  subfolder="split_files/vae/", note="the Wan 2.1 VAE (not the Wan 2.2 one)"),
    ModelFileInfo("t5_fp16", "t5", "umt5_xxl_fp16.safetensors", "11.4 GB", rank=1, repo=_WAN_REPACKAGED,
                  subfolder="split_files/text_encoders/", note="carries its tokenizer"),
    ModelFileInfo("t5_fp8", "t5", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "6.7 GB", rank=0, repo=_WAN_REPACKAGED,
                  subfolder="split_files/text_encoders/", note="carries its tokenizer; the usual choice"),
    ModelFileInfo("clip_vision", "clip_vision", "clip_vision_h.safetensors", "1.26 GB", rank=0, repo=_WAN_REPACKAGED,
                  subfolder="split_files/clip_vision/", note="CLIP ViT-H, encodes the photo"),
    ModelFileInfo("distill_lora", "lora", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
                  "0.74 GB", rank=0, repo=_KIJAI, subfolder="Lightx2v/", optional=True,
                  note="4 steps with text_cfg 1 instead of 40"),
    ModelFileInfo("detector", "detector", "yolox_l.onnx", "217 MB", rank=0, repo=_DWPOSE,
                  note="finds the person in each frame"),
    ModelFileInfo("pose_model", "pose_model", "dw-ll_ucoco_384.onnx", "134 MB", rank=0, repo=_DWPOSE,
                  note="DWPose whole-body keypoints"),
)
MODEL_FILES_BY_KEY = {f.key: f for f in MODEL_FILE_TABLE}


# ------------------------------------------------------------------------------------------------- queries
def model_file_info(key: str) -> ModelFileInfo:
    """The table's entry ``key`` (e.g. ``"dit_fp8"``)."""
    try:
        return MODEL_FILES_BY_KEY[key]
    except KeyError:
        raise KeyError(f"no model file {key!r}; known: {', '.join(MODEL_FILES_BY_KEY)}") from None


def model_files_for(role: str) -> tuple[ModelFileInfo, ...]:
    """The entries of ``role``, preferred first."""
    if role not in MODEL_ROLES:
        raise KeyError(f"no model role {role!r}; known: {', '.join(MODEL_ROLES)}")
    return tuple(sorted((f for f in MODEL_FILE_TABLE if f.role == role), key=lambda f: f.rank))


def preferred_file_name(role: str) -> str:
    """The name of the preferred single file of ``role`` (e.g. ``yolox_l.onnx`` for the detector)."""
    return next(f.name for f in model_files_for(role) if f.kind == "file")


def model_folders(role: str) -> tuple[str, ...]:
    """The ComfyUI model folders of ``role``, in lookup order."""
    return MODEL_ROLES[role].folders


def model_role_tooltip(role: str) -> str:
    """One line for a node's file widget: what the role is and the files it takes, preferred first."""
    files = [f.label for f in model_files_for(role) if f.kind != "folder"]
    where = " or ".join(f"models/{d}" for d in model_folders(role))
    optional = " Optional." if all(f.optional for f in model_files_for(role)) else ""
    return f"{MODEL_ROLES[role].title} from {where}: {', '.join(files)}.{optional}"


# ------------------------------------------------------------------------------------------------- documentation
def _folder_cell(info: ModelFileInfo) -> str:
    main, *others = [f"`models/{d}`" for d in info.folders]
    legacy = [f"the legacy `models/{d}`" for d in MODEL_ROLES[info.role].legacy_dirs]
    return main + (f" (or {', '.join(others + legacy)})" if others or legacy else "")


def _source_cell(info: ModelFileInfo) -> str:
    if info.url:
        where = f"{info.repo}, `{info.subfolder}`" if info.subfolder else info.repo
        return f"[{where}]({info.url})"
    if info.page:
        return f"[{info.repo}]({info.page})"
    return info.source


def render_model_table(notes: bool = False) -> str:
    """The Markdown table of :data:`MODEL_FILE_TABLE` (file, ComfyUI folder, size, source with its download link;
    with ``notes``, a column saying what each is for), ending in a newline."""
    head = ["file", "ComfyUI folder", "size (about)", "source (Hugging Face)"] + (["notes"] if notes else [])
    rows = [head, ["---"] * len(head)]
    for info in MODEL_FILE_TABLE:
        name = f"`{info.name}`" if info.kind == "file" else info.label
        row = [name + (" (optional)" if info.optional else ""), _folder_cell(info), info.size, _source_cell(info)]
        rows.append(row + ([info.note] if notes else []))
    return "".join("| " + " | ".join(cells) + " |\n" for cells in rows)


def all_model_folders() -> tuple[str, ...]:
    """Every ComfyUI model folder the table uses, in table order."""
    return tuple(dict.fromkeys(d for info in MODEL_FILE_TABLE for d in MODEL_ROLES[info.role].folders))


def extra_model_paths_yaml(base_path: str, section: str = "steadydancer", folders=None) -> str:
    """A section of ComfyUI's ``extra_model_paths.yaml`` adding ``base_path``'s subfolders (named like the model
    folders) for ``folders`` (default: every folder of the table), ending in a newline."""
    folders = all_model_folders() if folders is None else tuple(folders)
    lines = [f"{section}:", f"    base_path: {base_path}"] + [f"    {d}: {d}" for d in folders]
    return "\n".join(lines) + "\n"
