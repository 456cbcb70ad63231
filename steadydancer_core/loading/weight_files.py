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

import pickle
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import WeightFileError
from .header_checks import (
    MAX_HEADER_BYTES,
    MAX_JSON_BYTES,
    bounded_json,
    check_safetensors_header,
    check_shard_name,
)
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
# phrases (lower case) of torch's messages (2.4 ... 2.13) when weights_only=True refuses a pickle that holds
# non-tensor objects: matched case-insensitively
WEIGHTS_ONLY_REJECTIONS = ("allowed global", "unsupported global", "unsupported class", "is not an allowed")
WEIGHTS_ONLY_FAILED = "weights only load failed"   # any refusal; a file starting as a pickle then holds objects
# lines of torch's messages never quoted to the user: they advise loading the file unsafely
UNSAFE_ADVICE = ("weights_only", "weights only", "trust", "arbitrary code", "safe_globals", "documentation")
UNPICKLER_PREFIX = "weightsunpickler error:"
REASON_CHARS = 160
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
    """Read and validate the header (``header_checks``) before handing the file to safetensors."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) < 8:
            raise WeightFileError(f"{path} is empty or truncated ({size} bytes); download it again.")
        (n,) = struct.unpack("<Q", raw_len)
        if n > size - 8 or n > MAX_HEADER_BYTES:
            other = _sniff(path)
            if other:
                raise WeightFileError(f"{path} is not a safetensors file: it looks like {other}. "
                                      "Use the matching file extension or the right file.")
            if n > MAX_HEADER_BYTES:
                raise WeightFileError(f"{path} is not a safetensors file or is damaged: its header length field is "
                                      f"over the {MAX_HEADER_BYTES >> 20} MB a header may take. Download it again "
                                      "or pick the right file.")
            raise WeightFileError(f"{path} is truncated or not a safetensors file: its header claims {n} bytes but "
                                  f"the file has {size}. Download it again.")
        raw = f.read(n)
    other = _sniff(path) if not raw.lstrip()[:1] == b"{" else None
    hint = f" (it looks like {other})" if other else ""
    header = bounded_json(raw, f"the header of {path}{hint}", "the file is damaged or not a safetensors file; "
                          "download it again or pick the right file", max_bytes=MAX_HEADER_BYTES)
    return check_safetensors_header(header, size - 8 - n, path)


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
    """Sharded safetensors: ``*.index.json`` (``weight_map`` name -> shard file) and every shard it lists, each a
    ``.safetensors`` file inside the index's folder."""
    fix = "it needs a 'weight_map' of tensor names to shard files; download the model folder again"
    try:
        if index.stat().st_size > MAX_JSON_BYTES:
            raise WeightFileError(f"{index} is larger than the {MAX_JSON_BYTES >> 20} MB an index may take; {fix}")
        text = index.read_bytes()
    except OSError as exc:
        raise WeightFileError(f"{index} cannot be read ({exc.strerror or exc}); check the file") from None
    data = bounded_json(text, f"the safetensors index {index}", fix)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) for k in weight_map):
        raise WeightFileError(f"{index} is not a valid safetensors index; {fix}")
    shards = {}
    names = list(weight_map.values())
    for name in [v for v in names if not isinstance(v, str)][:1] + sorted(set(v for v in names if isinstance(v, str))):
        shard = check_shard_name(name, index)                 # a name that is not a string raises here
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


def _refused_by_weights_only(exc: Exception, path: Path) -> bool:
    """True when torch's safe reader refused the file for holding Python objects (not for being damaged)."""
    text = str(exc).lower()
    if any(phrase in text for phrase in WEIGHTS_ONLY_REJECTIONS):
        return True
    return WEIGHTS_ONLY_FAILED in text and _sniff(path) == dict(FILE_MAGIC)[b"\x80"]


def _reason(exc: Exception) -> str:
    """The first line of a reader's message that gives no unsafe advice, cut at a word, at most REASON_CHARS."""
    reason = "no details"
    for line in str(exc).splitlines():
        line = line.strip()
        if line.lower().startswith(UNPICKLER_PREFIX):
            line = line[len(UNPICKLER_PREFIX):].strip()
        if line and not any(a in line.lower() for a in UNSAFE_ADVICE):
            reason = line
            break
    if len(reason) > REASON_CHARS:                     # whole sentences when one fits, else cut at a word
        head = reason[:REASON_CHARS]
        reason = head[:head.rfind(". ") + 1] if ". " in head else head.rsplit(" ", 1)[0] + " ..."
    return reason.rstrip(".")


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
        if not _refused_by_weights_only(exc, path):
            raise WeightFileError(f"{path} is not a PyTorch weight file or is damaged ({_reason(exc)}); download it "
                                  "again or use its .safetensors version.") from exc
        raise WeightFileError(f"{path} contains Python objects besides tensors (a pickle); the pack never runs "
                              "them: use the .safetensors version of this file (or re-save its state_dict as "
                              ".safetensors).") from exc
    except Exception as exc:  # zip/torch errors: all mean "this file cannot be used"
        other = _sniff(path)
        hint = f" It looks like {other}." if other and "PyTorch" not in other else ""
        raise WeightFileError(f"{path} could not be read as a PyTorch weight file ({type(exc).__name__}: "
                              f"{_reason(exc)}).{hint} Only plain tensor state dicts are loaded; download the file "
                              "again or use its .safetensors version.") from exc
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
