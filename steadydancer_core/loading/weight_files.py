"""Weight files: what a file holds, read lazily, one tensor at a time.

``open_state_dict(path)`` returns a ``LazyStateDict`` (name -> tensor, read on access; shapes and dtypes known
without reading data) for: a single ``.safetensors``; an official model directory (``config.json`` +
``diffusion_pytorch_model*.safetensors``, sharded with an index json); ``.pth`` / ``.pt`` via
``torch.load(weights_only=True, mmap=True)``; ``.gguf`` via the ``gguf`` package (quantised tensors come back as
``gguf_codecs.GGUFTensor``, kept packed). ``read_state_dict`` reads everything. Wrong, truncated or disguised files
(an HTML page, a Git LFS pointer, a pickle named .safetensors) get a ``WeightFileError`` naming what was found.
Key names are not touched here: renaming lives in ``key_names.py``.
"""
from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import WeightFileError
from .gguf_codecs import (
    gguf_dtype_name,
    gguf_logical_shape,
    gguf_tensor,
    logical_shape,
    storage_type,
)

__all__ = ["Entry", "LazyStateDict", "open_state_dict", "read_state_dict", "OFFICIAL_DIT_CONFIG"]

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
GGUF_SUFFIXES = (".gguf",)
# safetensors header dtype -> the dtype name readers report
SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
                       "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
# phrases of torch's messages (2.4 ... 2.13) when weights_only=True refuses a pickle that holds non-tensor objects
WEIGHTS_ONLY_REJECTIONS = ("allowed global", "Unsupported global", "Unsupported class", "is not an allowed")
# containers that wrap a state dict inside a torch.save'd dict
TORCH_CONTAINER_KEYS = ("state_dict", "model", "module", "model_state_dict")
OFFICIAL_DIT_FILE_GLOB = "diffusion_pytorch_model*.safetensors"
OFFICIAL_DIT_INDEX = "diffusion_pytorch_model.safetensors.index.json"
OFFICIAL_DIT_CONFIG = "config.json"
FILE_MAGIC = ((b"PK\x03\x04", "a PyTorch zip checkpoint (.pth)"), (b"GGUF", "a GGUF file (.gguf)"),
              (b"\x80", "a pickled PyTorch checkpoint (.pth)"), (b"<", "an HTML/XML page (a failed download?)"),
              (b"version https://git-lfs", "a Git LFS pointer (the real file was not downloaded)"))


# ==============================================================================================================
# Lazy state dict
# ==============================================================================================================
class Entry(NamedTuple):
    """One stored tensor: logical shape and dtype name known without reading it; ``load()`` reads it."""

    shape: tuple
    dtype: str          # "float16", "float8_e4m3fn", "Q4_K", ...
    load: Callable[[], torch.Tensor]


class LazyStateDict(Mapping):
    """name -> tensor, read from the file on access (one tensor at a time). ``shape_of``/``dtype_of`` read no data."""

    def __init__(self, entries: dict[str, Entry], source: str = "", metadata: dict | None = None):
        self._entries = dict(entries)
        self.source = source
        self.metadata = dict(metadata or {})

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor], source: str = "") -> "LazyStateDict":
        """Wrap tensors already in memory."""
        return cls({k: Entry(tuple(logical_shape(t)), storage_type(t), (lambda t=t: t)) for k, t in tensors.items()},
                   source)

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._entries[key].load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def entry(self, key: str) -> Entry:
        return self._entries[key]

    def shape_of(self, key: str) -> tuple:
        return self._entries[key].shape

    def dtype_of(self, key: str) -> str:
        return self._entries[key].dtype

    def shapes(self) -> dict[str, tuple]:
        return {k: e.shape for k, e in self._entries.items()}

    def with_entries(self, entries: dict[str, Entry]) -> "LazyStateDict":
        """Same source and metadata, other entries (what converters return)."""
        return LazyStateDict(entries, self.source, self.metadata)


# ==============================================================================================================
# Readers
# ==============================================================================================================
def _sniff(path: Path) -> str | None:
    """What a file really is, from its first bytes (``FILE_MAGIC``), or None."""
    with open(path, "rb") as f:
        head = f.read(32)
    for magic, what in FILE_MAGIC:
        if head.startswith(magic):
            return what
    return None


def _safetensors_header(path: Path) -> dict:
    """Validate the header and the data extent before handing the file to safetensors."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise WeightFileError(f"{path} is empty or truncated ({size} bytes); download it again.")
        (n,) = struct.unpack("<Q", raw_len)
        if n > size - 8:
            other = _sniff(path)
            if other:
                raise WeightFileError(f"{path} is not a safetensors file: it looks like {other}. "
                                      "Use the matching file extension or the right file.")
            raise WeightFileError(f"{path} is truncated or not a safetensors file: its header claims {n} bytes but "
                                  f"the file has {size}. Download it again.")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            other = _sniff(path)
            hint = f" It looks like {other}." if other else ""
            raise WeightFileError(f"{path} is not a valid safetensors file (unreadable header: {exc}).{hint} "
                                  "Download it again or pick the right file.") from exc
    if not isinstance(header, dict):
        raise WeightFileError(f"{path} is not a valid safetensors file (header is not a JSON object).")
    data_size = size - 8 - n
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if end > data_size:
        raise WeightFileError(f"{path} is truncated: tensors need {end} bytes of data but only {data_size} are "
                              "present. The download was probably interrupted; download it again.")
    return header


def open_safetensors(path: Path) -> LazyStateDict:
    """One ``.safetensors`` file, validated first; tensors memory-mapped and read on access."""
    from safetensors import safe_open

    header = _safetensors_header(path)
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own error types; report them as a file problem
        raise WeightFileError(f"{path} could not be opened as safetensors: {exc}. Download it again.") from exc
    entries = {}
    for key in handle.keys():
        info = header[key]
        dtype = SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"].lower())
        entries[key] = Entry(tuple(info["shape"]), dtype, (lambda k=key: handle.get_tensor(k)))
    return LazyStateDict(entries, str(path), header.get("__metadata__"))


def open_directory(path: Path) -> LazyStateDict:
    """Official layout: config.json + diffusion_pytorch_model*.safetensors (+ index json when sharded)."""
    index = path / OFFICIAL_DIT_INDEX
    if index.is_file():
        return open_index(index)
    files = sorted(path.glob(OFFICIAL_DIT_FILE_GLOB))
    if not files:
        present = sorted(p.name for p in path.iterdir())[:20]
        raise WeightFileError(f"{path} is a folder without {OFFICIAL_DIT_FILE_GLOB} files (found: {present}). "
                              "Point to the official model folder or to a single weight file.")
    return _merge([open_safetensors(f) for f in files], str(path))


def open_index(index: Path) -> LazyStateDict:
    """Sharded safetensors: ``*.index.json`` (``weight_map`` name -> shard file) and every shard it lists."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise WeightFileError(f"{index} is not a valid safetensors index (needs a 'weight_map'): {exc}") from exc
    shards = {}
    for name in sorted(set(weight_map.values())):
        shard = index.parent / name
        if not shard.is_file():
            raise WeightFileError(f"shard {shard} listed in {index} is missing; download all shards.")
        shards[name] = open_safetensors(shard)
    merged = _merge(list(shards.values()), str(index.parent))
    absent = sorted(k for k in weight_map if k not in merged)
    if absent:
        raise WeightFileError(f"{len(absent)} tensors listed in {index} are not in their shards (e.g. {absent[:5]}); "
                              "the shards do not match the index. Download them again.")
    return merged


def _merge(parts: list[LazyStateDict], source: str) -> LazyStateDict:
    """Union of shards; a tensor in two shards is an error."""
    entries: dict[str, Entry] = {}
    for part in parts:
        dup = set(entries) & set(part.keys())
        if dup:
            raise WeightFileError(f"{source}: tensor(s) {sorted(dup)[:5]} appear in more than one shard.")
        entries.update({k: part.entry(k) for k in part.keys()})
    return LazyStateDict(entries, source)


def open_torch(path: Path) -> LazyStateDict:
    """``.pth``/``.pt``/``.bin``/``.ckpt`` via ``torch.load(weights_only=True)`` (memory-mapped when possible);
    a state dict wrapped in ``state_dict``/``model``/... is unwrapped."""
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc) and "zip" not in str(exc):
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not any(phrase in str(exc) for phrase in WEIGHTS_ONLY_REJECTIONS):
            raise WeightFileError(f"{path} is not a PyTorch weight file or is damaged ({str(exc)[:200]}); "
                                  "download it again.") from exc
        raise WeightFileError(f"{path} contains Python objects besides tensors. For safety only plain tensor state "
                              "dicts are loaded (torch.load weights_only=True); use the .safetensors version of this "
                              "file or re-save its state_dict.") from exc
    except Exception as exc:  # zip/torch errors: all mean "this file cannot be used"
        other = _sniff(path)
        hint = f" It looks like {other}." if other and "PyTorch" not in other else ""
        raise WeightFileError(f"{path} could not be read as a PyTorch weight file ({type(exc).__name__}: "
                              f"{str(exc)[:300]}).{hint} Only plain tensor state dicts are loaded (weights_only); "
                              "download the file again or use the .safetensors version.") from exc
    for key in TORCH_CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and not any(
                isinstance(v, torch.Tensor) for v in obj.values()):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors.")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return LazyStateDict.from_tensors(tensors, str(path))


def open_gguf(path: Path) -> LazyStateDict:
    """``.gguf``: plain tensors come back dense, quantised ones as ``GGUFTensor`` (uint8 [rows, bytes])."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the gguf package raises ValueError/struct/OS errors on bad files
        raise WeightFileError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {str(exc)[:200]}). "
                              "Download it again.") from exc
    entries = {}
    for tensor in reader.tensors:
        qtype = tensor.tensor_type.name
        shape = gguf_logical_shape(reader, tensor)
        entries[tensor.name] = Entry(shape, gguf_dtype_name(qtype),
                                     (lambda t=tensor, s=shape, q=qtype: gguf_tensor(t, s, q)))
    return LazyStateDict(entries, str(path))


def open_state_dict(path) -> LazyStateDict:
    """Open any supported weight file or folder lazily (tensors are read on access)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightFileError(f"weight file {path} does not exist; check the path (or put the file in the "
                              "models folder and pick it again).")
    if path.is_dir():
        return open_directory(path)
    name = path.name.lower()
    if name.endswith(".index.json"):
        return open_index(path)
    if name.endswith(SAFETENSORS_SUFFIXES):
        return open_safetensors(path)
    if name.endswith(TORCH_SUFFIXES):
        return open_torch(path)
    if name.endswith(GGUF_SUFFIXES):
        return open_gguf(path)
    raise WeightFileError(f"{path}: unsupported file type '{path.suffix}'. Supported: "
                          f"{', '.join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES + GGUF_SUFFIXES)}, or an official model "
                          "folder.")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """Read every tensor of a weight file/folder into a dict (GGUF quantised tensors stay ``GGUFTensor``)."""
    lazy = open_state_dict(path)
    return {k: lazy[k] for k in lazy.keys()}
