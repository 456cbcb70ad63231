"""Everything the nodes need from the ComfyUI host, in one place.

Model folders (``folder_paths``), the progress bar, interrupts and latent previews (ComfyUI's model management is
in ``comfy_models``).
The node modules call these helpers and never import ComfyUI themselves, so a test can replace the host with a
small stand-in (``folder_paths``, ``comfy.utils``, ``comfy.model_management`` and ``comfy_api.latest`` modules put
into ``sys.modules``).
"""
from __future__ import annotations

import os
from pathlib import Path
from fractions import Fraction
from typing import Iterable

import folder_paths

from .. import steadydancer_core as sd

# Folder names registered with ComfyUI and the folders of each model role: the model file table's
# (``steadydancer_core.model_files``). "steadydancer" holds DiT files for users who keep them apart from other
# diffusion models; "dwpose" holds the ONNX pose models.
STEADYDANCER_FOLDER = sd.STEADYDANCER_FOLDER
DWPOSE_FOLDER = sd.DWPOSE_FOLDER
DIT_FOLDERS = sd.model_folders("dit")
LORA_FOLDERS = sd.model_folders("lora")
NONE_CHOICE = "None"

ONNX_EXTENSIONS = {".onnx"}
# Where comfyui_controlnet_aux keeps the DWPose / YOLOX ONNX files it downloaded (relative to its pack folder).
CONTROLNET_AUX_DIRS = (sd.CONTROLNET_AUX_PACK,)
CONTROLNET_AUX_CKPT_SUBDIRS = tuple(os.path.join(*d.split("/")) for d in sd.CONTROLNET_AUX_DWPOSE_DIRS)


def model_folders(role: str) -> tuple[str, ...]:
    """The ComfyUI folders a loader widget of ``role`` lists, in lookup order (e.g. "vae" -> ("vae",))."""
    return sd.model_folders(role)


def model_tooltip(role: str) -> str:
    """A file widget's tooltip: what the role is, its folders and its files, preferred first."""
    return sd.model_role_tooltip(role)


def find_model(role: str, name: str) -> str:
    """Absolute path of the ``role`` file ``name`` (e.g. "vae", "wan_2.1_vae.safetensors") in the role's folders."""
    return find_file(sd.model_folders(role), name, sd.MODEL_ROLES[role].title)


# ----------------------------------------------------------------------------------------------- model folders
def controlnet_aux_pose_dirs() -> list[str]:
    """Existing comfyui_controlnet_aux checkpoint folders that may hold the DWPose ONNX files."""
    found = []
    for base in folder_paths.get_folder_paths("custom_nodes"):
        for pack in CONTROLNET_AUX_DIRS:
            for sub in CONTROLNET_AUX_CKPT_SUBDIRS:
                path = os.path.join(base, pack, sub)
                if os.path.isdir(path):
                    found.append(path)
    return found


def register_model_folders() -> None:
    """Register ``models/steadydancer`` (weight files) and ``models/dwpose`` (ONNX files, plus the folders where
    comfyui_controlnet_aux stores its DWPose downloads). Safe to call more than once."""
    models_dir = folder_paths.models_dir
    folder_paths.add_model_folder_path(STEADYDANCER_FOLDER, os.path.join(models_dir, STEADYDANCER_FOLDER))
    dirs, _ = folder_paths.folder_names_and_paths[STEADYDANCER_FOLDER]
    folder_paths.folder_names_and_paths[STEADYDANCER_FOLDER] = (dirs, set(folder_paths.supported_pt_extensions) | {".gguf"})

    folder_paths.add_model_folder_path(DWPOSE_FOLDER, os.path.join(models_dir, DWPOSE_FOLDER))
    for path in controlnet_aux_pose_dirs():
        if path not in folder_paths.folder_names_and_paths[DWPOSE_FOLDER][0]:
            folder_paths.add_model_folder_path(DWPOSE_FOLDER, path)
    dirs, _ = folder_paths.folder_names_and_paths[DWPOSE_FOLDER]
    folder_paths.folder_names_and_paths[DWPOSE_FOLDER] = (dirs, set(ONNX_EXTENSIONS))
    # GGUF DiT files live in diffusion_models too; ComfyUI's default extension set does not list .gguf.
    if "diffusion_models" in folder_paths.folder_names_and_paths:
        dirs, exts = folder_paths.folder_names_and_paths["diffusion_models"]
        if exts and ".gguf" not in exts:
            folder_paths.folder_names_and_paths["diffusion_models"] = (dirs, set(exts) | {".gguf"})


def list_files(folders: Iterable[str], *, with_none: bool = False) -> list[str]:
    """Sorted, de-duplicated file names from several registered folders (for a combo widget)."""
    names: list[str] = []
    for folder in folders:
        try:
            names.extend(folder_paths.get_filename_list(folder))
        except KeyError:
            continue
    names = sorted(dict.fromkeys(names))
    return ([NONE_CHOICE] if with_none else []) + names


def find_file(folders: Iterable[str], name: str, what: str) -> str:
    """Absolute path of ``name`` in the first folder that has it; a readable error naming where to put it."""
    folders = tuple(folders)
    for folder in folders:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if path:
            return path
    places = ", ".join(f"models/{f}" for f in folders)
    raise FileNotFoundError(
        f"{what} file '{name}' was not found in {places}. Put the file there (or add the folder in "
        f"extra_model_paths.yaml) and press R in the UI to refresh the lists."
    )


# ------------------------------------------------------------------------------------ progress and interrupts
def interrupted() -> bool:
    """True after the user pressed Cancel (POST /interrupt)."""
    import comfy.model_management as mm

    return bool(mm.processing_interrupted())


def raise_if_interrupted() -> None:
    """Raise ComfyUI's InterruptProcessingException when the user cancelled (the UI shows it as interrupted)."""
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()


class StepProgress:
    """ComfyUI progress bar for a loop of ``total`` steps, with optional preview images.

    ``__call__(step, total, preview=None)`` is the shape the core's callbacks use: ``step`` counts finished steps,
    ``preview`` is an RGB uint8 numpy array [H, W, 3] or a float tensor [H, W, 3] in 0..1, or None.
    """

    PREVIEW_MAX_SIZE = 512

    def __init__(self, total: int, node_id: str | None = None):
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(max(1, int(total)), node_id=node_id)

    def __call__(self, step: int, total: int | None = None, preview=None) -> None:
        self.bar.update_absolute(int(step), total=None if total is None else max(1, int(total)),
                                 preview=_preview_tuple(preview))


class JobProgressBar:
    """ComfyUI progress bar over a whole core job: ``__call__(progress)`` takes the core's ``Progress`` reports
    (weighted fraction of encodes, steps and decodes, and the step previews)."""

    SCALE = 1000

    def __init__(self, node_id: str | None = None):
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(self.SCALE, node_id=node_id)

    def __call__(self, progress) -> None:
        self.bar.update_absolute(int(round(progress.fraction * self.SCALE)), total=self.SCALE,
                                 preview=_preview_tuple(progress.preview))


def _preview_tuple(image):
    if image is None:
        return None
    import numpy as np
    from PIL import Image

    if hasattr(image, "detach"):
        image = (image.detach().float().clamp(0, 1).cpu().numpy() * 255.0).round().astype("uint8")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        return None
    return ("JPEG", Image.fromarray(array.astype("uint8")), StepProgress.PREVIEW_MAX_SIZE)


def previews_enabled() -> bool:
    """Whether ComfyUI was started with latent previews on (``--preview-method`` other than none)."""
    from comfy.cli_args import args

    return args.preview_method.value != "none"


def temp_directory() -> str:
    """ComfyUI's temp folder (emptied by ComfyUI at start and exit): where the sampler keeps the segments it
    already decoded, for DecodeVideo."""
    return folder_paths.get_temp_directory()


def computes_on_cpu() -> bool:
    """Whether ComfyUI computes on the CPU (``--cpu``, or no GPU): the pose models then stay on the CPU too."""
    import comfy.model_management as mm

    return mm.get_torch_device().type == "cpu"


# ------------------------------------------------------------------------------------------------- native VAE
WAN21_LATENT_CHANNELS = 16


def check_wan21_vae(vae) -> None:
    """A readable error unless ``vae`` (ComfyUI's VAE object) is a video VAE with Wan 2.1's 16 latent channels."""
    channels = getattr(vae, "latent_channels", None)
    dims = getattr(vae, "latent_dim", None)
    if not callable(getattr(vae, "decode", None)) or channels != WAN21_LATENT_CHANNELS or dims != 3:
        raise ValueError(f"the connected VAE is not a Wan 2.1 VAE (latent channels {channels}, latent dimensions "
                         f"{dims}; Wan 2.1 has 16 and 3): load {sd.preferred_file_name('vae')} with Load VAE (the "
                         "Wan 2.2 VAE has 48 channels and does not fit SteadyDancer's latents)")


def vae_decode(vae, raw_latent, tile_size: int | None = None):
    """Frames [T, H, W, 3] float32 in 0..1 on the CPU from ComfyUI's VAE and a raw latent [1, 16, F, h, w] (the
    LATENT ``samples`` convention). tile_size (pixels): ComfyUI's tiled decode, spatial tiles with a quarter of
    overlap and the whole segment in time; None: its plain decode (which tiles by itself when memory runs out)."""
    if tile_size:
        scale = int(vae.spacial_compression_decode())
        tile = max(1, int(tile_size) // scale)
        images = vae.decode_tiled(raw_latent, tile_x=tile, tile_y=tile, overlap=max(1, tile // 4))
    else:
        images = vae.decode(raw_latent)
    if images.ndim == 5:                       # [B, T, H, W, 3] for video VAEs
        images = images.reshape(-1, *images.shape[-3:])
    return images.float().cpu()


# ------------------------------------------------------------------------------------------------------ video
def make_video(frames, fps: float, audio=None):
    """A ComfyUI VIDEO object from IMAGE frames [T, H, W, 3] in 0..1 (for the core SaveVideo node)."""
    from comfy_api.latest import InputImpl, Types

    rate = Fraction(fps).limit_denominator(1001)
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=frames, audio=audio, frame_rate=rate))


def video_components(video):
    """(frames [T, H, W, 3] float in 0..1, fps float, audio or None) of a ComfyUI VIDEO object."""
    parts = video.get_components()
    return parts.images, float(parts.frame_rate), parts.audio


def video_source(video):
    """The file a ComfyUI VIDEO reads from (a path or a seekable file-like), or None when it has none (a VIDEO
    made from frames). Lets a node decode the video frame by frame instead of as one float32 batch."""
    getter = getattr(video, "get_stream_source", None)
    source = getter() if callable(getter) else getattr(video, "_VideoFromFile__file", None)
    if isinstance(source, (str, os.PathLike)):
        return source if os.path.isfile(source) else None
    if hasattr(source, "read") and hasattr(source, "seek"):
        return source
    return None


def video_from_file(path: str):
    """A ComfyUI VIDEO object that reads ``path`` when used (nothing is decoded here)."""
    from comfy_api.latest import InputImpl

    return InputImpl.VideoFromFile(path)


# ----------------------------------------------------------------------------------------------------- output
def output_target(filename_prefix: str, width: int, height: int, ext: str = "mp4") -> tuple[str, str, str]:
    """(absolute path, file name, subfolder) of a new file in ComfyUI's output folder, numbered the way SaveVideo
    numbers its files (``prefix_00001_.mp4``); ``%width%`` / ``%date%``-style variables are expanded by ComfyUI."""
    out_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, out_dir, width, height)
    while True:
        file = f"{name}_{counter:05}_.{ext}"
        path = os.path.join(folder, file)
        if not os.path.lexists(path):
            return path, file, subfolder
        counter += 1


def in_output_directory(path) -> bool:
    """Whether ``path`` is a file inside ComfyUI's output folder (where the pack may write files beside it)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder_paths.get_output_directory()).resolve())
    except (OSError, ValueError):
        return False


def saved_video_ui(file: str, subfolder: str) -> dict:
    """The ``ui`` entry ComfyUI's SaveVideo returns, so the frontend shows the written video."""
    return {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": (True,)}
