"""A minimal stand-in for the ComfyUI host, so tests can run the pack's nodes and its API workflows without ComfyUI.

``install(root)`` puts small ``folder_paths``, ``comfy.utils``, ``comfy.model_management``, ``comfy.model_patcher``,
``comfy.latent_formats`` and ``comfy_api.latest`` modules into ``sys.modules`` (a models tree, input and output
folders under ``root``; the model management of ``standin_models``, which follows ComfyUI 0.8's semantics);
``load_pack()`` imports the repository as ComfyUI does (as a package under an odd name, relative imports inside);
``CORE_NODES`` stands in for the few core nodes the bundled workflows use (and Load VAE / VAE Decode, whose VAE
object decodes raw Wan 2.1 latents as ComfyUI's does); ``run_prompt`` executes an API-format prompt like ComfyUI's executor
(output nodes and what they depend on, each node once, only the inputs a node declares, its hidden UNIQUE_ID and
PROMPT filled in, ``{"result", "ui"}`` dicts unwrapped).
"""
from __future__ import annotations

import enum
import io
import importlib.machinery
import json
import contextlib
import importlib.util
import os
import sys
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "steadydancer_pack_under_test"
HOST_MODULES = ("folder_paths", "comfy", "comfy.utils", "comfy.model_management", "comfy.model_patcher",
                "comfy.cli_args", "comfy.latent_formats", "comfy_api", "comfy_api.latest")
MODEL_FOLDERS = ("diffusion_models", "vae", "text_encoders", "clip_vision", "loras")
PT_EXTENSIONS = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}


class InterruptProcessingException(Exception):
    pass


class Host:
    """State of the stand-in host: folders, progress events, the interrupt flag."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.input_dir = self.root / "input"
        self.output_dir = self.root / "output"
        self.custom_nodes_dir = self.root / "custom_nodes"
        self.temp_dir = self.root / "temp"
        for path in (self.models_dir, self.input_dir, self.output_dir, self.custom_nodes_dir, self.temp_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.progress: list[tuple] = []
        self.interrupt = False
        self.unload_calls = 0
        self.mm = None                   # the stand-in comfy.model_management module (set by install)


def _module(name: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


def _folder_paths(host: Host) -> types.ModuleType:
    fp = _module("folder_paths")
    fp.models_dir = str(host.models_dir)
    fp.supported_pt_extensions = set(PT_EXTENSIONS)
    fp.folder_names_and_paths = {name: ([str(host.models_dir / name)], set(PT_EXTENSIONS)) for name in MODEL_FOLDERS}
    fp.folder_names_and_paths["custom_nodes"] = ([str(host.custom_nodes_dir)], set())

    def add_model_folder_path(name, path, is_default=False):
        dirs, exts = fp.folder_names_and_paths.setdefault(name, ([], set()))
        if path not in dirs:
            dirs.insert(0, path) if is_default else dirs.append(path)

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[name][0])

    def get_filename_list(name):
        dirs, exts = fp.folder_names_and_paths[name]
        found = []
        for base in dirs:
            if not os.path.isdir(base):
                continue
            for dirpath, _, files in os.walk(base, followlinks=True):
                for file in files:
                    if not exts or os.path.splitext(file)[1].lower() in exts:
                        found.append(os.path.relpath(os.path.join(dirpath, file), base).replace(os.sep, "/"))
        return sorted(set(found))

    def get_full_path(name, filename):
        for base in fp.folder_names_and_paths[name][0]:
            path = os.path.join(base, filename)
            if os.path.isfile(path):
                return path
        return None

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = get_folder_paths
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_input_directory = lambda: str(host.input_dir)
    fp.get_output_directory = lambda: str(host.output_dir)
    fp.get_temp_directory = lambda: str(host.temp_dir)

    def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
        # ComfyUI's numbering: the next counter after the highest ``name_NNNNN_`` in the folder.
        subfolder = os.path.dirname(os.path.normpath(filename_prefix))
        name = os.path.basename(os.path.normpath(filename_prefix))
        folder = os.path.join(output_dir, subfolder)
        os.makedirs(folder, exist_ok=True)
        counters = [int(f[len(name) + 1:].split("_")[0]) for f in os.listdir(folder)
                    if f.startswith(name + "_") and f[len(name) + 1:].split("_")[0].isdigit()]
        return folder, name, max(counters, default=0) + 1, subfolder, filename_prefix

    fp.get_save_image_path = get_save_image_path
    return fp


def _comfy(host: Host) -> dict[str, types.ModuleType]:
    from standin_models import model_management_module, model_patcher_module

    comfy = _module("comfy")
    utils = _module("comfy.utils")
    mm = model_management_module(_module("comfy.model_management"), host)
    patcher = model_patcher_module(_module("comfy.model_patcher"))

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.total, self.current, self.node_id = total, 0, node_id

        def update_absolute(self, value, total=None, preview=None):
            if total is not None:
                self.total = total
            self.current = min(value, self.total)
            host.progress.append((self.node_id, self.current, self.total, preview is not None))
            if host.interrupt:
                raise InterruptProcessingException()

        def update(self, value):
            self.update_absolute(self.current + value)

    def throw_exception_if_processing_interrupted():
        if host.interrupt:
            host.interrupt = False
            raise InterruptProcessingException()

    utils.ProgressBar = ProgressBar
    mm.InterruptProcessingException = InterruptProcessingException
    mm.processing_interrupted = lambda: host.interrupt
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    host.mm = mm
    cli_args = _module("comfy.cli_args")
    cli_args.args = types.SimpleNamespace(preview_method=LatentPreviewMethod.NoPreviews)
    latent_formats = _module("comfy.latent_formats")
    latent_formats.Wan21 = Wan21
    comfy.utils, comfy.model_management, comfy.model_patcher, comfy.cli_args = utils, mm, patcher, cli_args
    comfy.latent_formats = latent_formats
    return {"comfy": comfy, "comfy.utils": utils, "comfy.model_management": mm, "comfy.model_patcher": patcher,
            "comfy.cli_args": cli_args, "comfy.latent_formats": latent_formats}


class Wan21:
    """ComfyUI's Wan 2.1 latent format: a LATENT's ``samples`` hold the raw latent (what its VAE encodes to and
    decodes from); ``process_in`` normalises it for the diffusion model, ``process_out`` undoes that. The statistics
    are the host's own copy (ComfyUI 0.8 ``comfy/latent_formats.py``), not the pack's."""

    latent_channels = 16
    scale_factor = 1.0
    latents_mean = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
    latents_std = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)

    def _stats(self, latent):
        shape = (1, self.latent_channels, 1, 1, 1)
        mean = torch.tensor(self.latents_mean).view(shape).to(latent.device, latent.dtype)
        std = torch.tensor(self.latents_std).view(shape).to(latent.device, latent.dtype)
        return mean, std

    def process_in(self, latent):
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent):
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


class VAE:
    """ComfyUI's VAE object for a Wan 2.1 VAE file: ``decode`` takes a raw latent [B, 16, F, h, w] (a LATENT's
    ``samples``) and returns [B, T, H, W, 3] in 0..1 as ComfyUI 0.8's ``comfy.sd.VAE.decode`` does for video."""

    latent_channels = 16
    latent_dim = 3

    def __init__(self, path):
        from steadydancer_core import load_vae

        self.model = load_vae(path).eval()
        self.calls: list[tuple] = []

    def spacial_compression_decode(self):
        return 8

    def _decode(self, samples, tile=False):
        video = self.model.decode_raw(samples.float(), tile=tile)          # [B, 3, T, H, W] in [-1, 1]
        return ((video + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)

    def decode(self, samples):
        self.calls.append(("decode", tuple(samples.shape)))
        return self._decode(samples)

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        self.calls.append(("decode_tiled", tuple(samples.shape), tile_x, tile_y, overlap))
        return self._decode(samples, tile=int(tile_x) * 8)


class LatentPreviewMethod(enum.Enum):
    """ComfyUI's ``--preview-method`` values."""

    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class VideoComponents:
    def __init__(self, images, audio=None, frame_rate=Fraction(24), metadata=None):
        self.images, self.audio, self.frame_rate, self.metadata = images, audio, frame_rate, metadata


class VideoFromComponents:
    def __init__(self, components: VideoComponents):
        self.components = components

    def get_components(self):
        return self.components

    def save_to(self, path, format="auto", codec="auto", metadata=None):
        from steadydancer_core.video_io import write_video

        write_video(path, self.components.images, float(self.components.frame_rate))


class VideoFromFile:
    """Like ComfyUI 0.8's: the path or BytesIO is private; get_stream_source() hands it out (rewound)."""

    def __init__(self, file):
        self.__file = file

    def get_stream_source(self):
        if isinstance(self.__file, io.BytesIO):
            self.__file.seek(0)
        return self.__file

    def get_components(self):
        from steadydancer_core.video_io import read_video

        frames, fps = read_video(self.get_stream_source())
        return VideoComponents(frames, None, Fraction(fps).limit_denominator(1001))


def _comfy_api() -> dict[str, types.ModuleType]:
    api = _module("comfy_api")
    latest = _module("comfy_api.latest")
    latest.InputImpl = types.SimpleNamespace(VideoFromComponents=VideoFromComponents, VideoFromFile=VideoFromFile)
    latest.Types = types.SimpleNamespace(VideoComponents=VideoComponents)
    api.latest = latest
    return {"comfy_api": api, "comfy_api.latest": latest}


def install(root: Path) -> Host:
    """Put the stand-in host modules into sys.modules (see ``uninstall``)."""
    host = Host(root)
    modules = {"folder_paths": _folder_paths(host), **_comfy(host), **_comfy_api()}
    for name, module in modules.items():
        sys.modules[name] = module
    return host


def uninstall() -> None:
    for name in list(sys.modules):
        if name in HOST_MODULES or name == PACK_NAME or name.startswith(PACK_NAME + "."):
            del sys.modules[name]


@contextlib.contextmanager
def host_with_kit(root: Path):
    """``with host_with_kit(root) as (host, nodes, pack)``: the stand-in host with the tiny kit written into its
    models and input folders and the pack loaded; ``nodes`` = the core stand-in nodes plus the pack's."""
    host = install(root)
    try:
        from steadydancer_core import tiny_kit

        tiny_kit.write_kit(host.models_dir, host.input_dir)
        pack = load_pack()
        yield host, {**CORE_NODES, **pack.NODE_CLASS_MAPPINGS}, pack
    finally:
        uninstall()


def load_pack():
    """Import the repository the way ComfyUI imports a custom-node folder; returns the package module."""
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------ stand-in core nodes
def _load_image_tensor(path: Path) -> torch.Tensor:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(rgb)).float().div(255.0)[None]


class LoadImage:
    FUNCTION = "load_image"
    RETURN_TYPES = ("IMAGE", "MASK")

    def load_image(self, image, upload=None):
        import folder_paths

        path = Path(folder_paths.get_input_directory()) / image
        return _load_image_tensor(path), _load_image_mask(path)


def _load_image_mask(path: Path) -> torch.Tensor:
    """ComfyUI 0.8's LoadImage MASK: 1 - alpha [1, H, W] for an image with an alpha channel (or a palette with a
    transparent colour), else a [1, 64, 64] zero mask."""
    from PIL import Image

    with Image.open(path) as im:
        if "A" in im.getbands():
            alpha = np.array(im.getchannel("A"))
        elif im.mode == "P" and "transparency" in im.info:
            alpha = np.array(im.convert("RGBA").getchannel("A"))
        else:
            return torch.zeros(1, 64, 64)
    return 1.0 - torch.from_numpy(alpha.astype(np.float32) / 255.0)[None]


class LoadVideo:
    FUNCTION = "load"
    RETURN_TYPES = ("VIDEO",)

    def load(self, file, upload=None):
        import folder_paths

        return (VideoFromFile(os.path.join(folder_paths.get_input_directory(), file)),)


class GetVideoComponents:
    FUNCTION = "get"
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")

    def get(self, video):
        parts = video.get_components()
        return parts.images, parts.audio, float(parts.frame_rate)


class CreateVideo:
    FUNCTION = "create"
    RETURN_TYPES = ("VIDEO",)

    def create(self, images, fps, audio=None):
        return (VideoFromComponents(VideoComponents(images, audio, Fraction(fps).limit_denominator(1001))),)


class VAELoader:
    FUNCTION = "load_vae"
    RETURN_TYPES = ("VAE",)

    def load_vae(self, vae_name):
        import folder_paths

        return (VAE(folder_paths.get_full_path("vae", vae_name)),)


class VAEDecode:
    """ComfyUI's VAE Decode: ``vae.decode(samples)``, video batches joined into one IMAGE batch."""

    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)

    def decode(self, vae, samples):
        images = vae.decode(samples["samples"])
        if images.ndim == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return (images,)


class SaveVideo:
    FUNCTION = "save"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    def save(self, video, filename_prefix, format="auto", codec="auto"):
        import folder_paths

        out = Path(folder_paths.get_output_directory())
        target = out / f"{filename_prefix}_{len(list(out.rglob('*.mp4'))):05d}_.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        video.save_to(str(target), format=format, codec=codec)
        return {"ui": {"images": [{"filename": target.name, "subfolder": "", "type": "output"}]}}


class PreviewImage:
    """Checks it got an IMAGE batch [B, H, W, 3] in 0..1, as ComfyUI's PreviewImage saves it to the temp folder."""

    FUNCTION = "save_images"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    def save_images(self, images):
        if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[-1] == 3):
            raise TypeError(f"PreviewImage needs IMAGE [B, H, W, 3], got {getattr(images, 'shape', type(images))}")
        if images.shape[0] < 1 or float(images.min()) < 0 or float(images.max()) > 1:
            raise ValueError("PreviewImage got an empty batch or values outside 0..1")
        return {"ui": {"images": [{"filename": f"preview_{i:05d}.png", "subfolder": "", "type": "temp"}
                                  for i in range(images.shape[0])]}}


CORE_NODES = {cls.__name__: cls for cls in (LoadImage, LoadVideo, GetVideoComponents, CreateVideo, SaveVideo,
                                            PreviewImage, VAELoader, VAEDecode)}


# --------------------------------------------------------------------------------------------- executor
def run_prompt(prompt: dict, classes: dict, cache: dict | None = None) -> dict:
    """Execute an API-format prompt like ComfyUI: output nodes and what they depend on, each node once.

    Returns {"outputs": {node id: output tuple}, "ui": {node id: ui dict}, "ran": [node ids executed]}. With
    ``cache`` (a dict kept by the caller), a node whose class and inputs (upstream nodes included) match an
    earlier run is not executed again, as ComfyUI's cache does; output nodes always run.
    """
    outputs: dict[str, tuple] = {}
    keys: dict[str, str] = {}
    ui: dict[str, dict] = {}
    ran: list[str] = []

    def run(node_id: str, run):
        # ``run`` is passed in, not closed over: a closure referring to itself is a reference cycle, which would keep
        # the node outputs alive until a garbage-collector pass (ComfyUI frees them when its cache drops them)
        if node_id in outputs:
            return outputs[node_id]
        node = prompt[node_id]
        cls = classes[node["class_type"]]
        kwargs, signature = {}, {}
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                kwargs[name] = run(value[0], run)[value[1]]
                signature[name] = [keys[value[0]], value[1]]
            else:
                kwargs[name] = value
                signature[name] = value
        keys[node_id] = key = json.dumps([node["class_type"], signature], sort_keys=True, default=str)
        output_node = getattr(cls, "OUTPUT_NODE", False)
        if cache is not None and key in cache and not output_node:
            outputs[node_id] = cache[key]
            return outputs[node_id]
        spec = cls.INPUT_TYPES() if hasattr(cls, "INPUT_TYPES") else None
        if spec is not None:       # as ComfyUI: a node gets only the inputs it declares
            declared = {n for section in ("required", "optional", "hidden") for n in spec.get(section, {})}
            kwargs = {k: v for k, v in kwargs.items() if k in declared}
        for name, kind in (spec or {}).get("hidden", {}).items():
            if kind == "UNIQUE_ID":
                kwargs[name] = node_id
            elif kind == "PROMPT":
                kwargs[name] = prompt
        result = getattr(cls(), cls.FUNCTION)(**kwargs)
        ran.append(node_id)
        if isinstance(result, dict):
            ui[node_id] = result.get("ui", {})
            result = result.get("result", ())
        outputs[node_id] = tuple(result)
        if cache is not None:
            cache[key] = outputs[node_id]
        return outputs[node_id]

    for node_id, node in prompt.items():
        if getattr(classes[node["class_type"]], "OUTPUT_NODE", False):
            run(node_id, run)
    return {"outputs": outputs, "ui": ui, "ran": ran}
