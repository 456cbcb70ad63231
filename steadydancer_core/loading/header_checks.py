"""Checks of what a weight file says about itself, before anything is allocated from it.

A safetensors header is JSON a file's author controls: its size, its nesting, every entry's dtype, shape and data
offsets are checked here (``check_safetensors_header``) against the file's real size and sane bounds, so a hostile
or damaged header ends as one ``WeightFileError`` naming the file and the fix, never as a KeyError, a RecursionError
or a huge allocation. ``bounded_json`` parses any JSON text a file carries (headers, index files, config metadata,
quantisation markers) with a size and nesting limit; ``check_shard_name`` keeps an index's shards inside its folder.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from .errors import WeightFileError

MAX_HEADER_BYTES = 16 << 20        # a 14B DiT's header is ~0.2 MB; the safetensors library itself stops at 100 MB
MAX_JSON_BYTES = 16 << 20          # index files, config metadata, quantisation markers
MAX_JSON_DEPTH = 16                # real headers nest 3 deep, quantisation metadata 4
MAX_TENSOR_DIMS = 8                # real tensors have at most 5 dimensions
MAX_DIM_SIZE = (1 << 31) - 1       # one dimension (umT5's vocabulary, 256384, is the largest real one)
# bits per element of every safetensors dtype
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
              "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
              "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
METADATA_KEY = "__metadata__"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` in JSON text (strings ignored), without parsing it."""
    bare = _STRING.sub('""', text).encode("utf-8", "surrogatepass")
    codes = np.frombuffer(bare, np.uint8)
    step = np.zeros(codes.shape, np.int64)
    step[(codes == ord("[")) | (codes == ord("{"))] = 1
    step[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def bounded_json(text: str | bytes, where: str, fix: str, max_bytes: int = MAX_JSON_BYTES,
                 max_depth: int = MAX_JSON_DEPTH):
    """Parse JSON a file carries; ``WeightFileError`` ("{where} ...; {fix}") when it is too large, too deeply
    nested or not JSON."""
    if len(text) > max_bytes:
        raise WeightFileError(f"{where} holds {len(text)} bytes of JSON, more than the {max_bytes} read; {fix}")
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        depth = json_depth(text)
        if depth > max_depth:
            raise WeightFileError(f"{where} nests its JSON {depth} levels deep (at most {max_depth} are read); {fix}")
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise WeightFileError(f"{where} is not valid JSON ({type(exc).__name__}: {str(exc)[:80]}); {fix}") from None


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(name: str, info, data_size: float) -> str | None:
    """What is wrong with one tensor entry of a safetensors header, or None."""
    if not isinstance(info, dict):
        return f"entry {name!r} is a {type(info).__name__}, not a tensor description"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        return f"tensor {name!r} has an unknown dtype {dtype!r}"
    if not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS or \
            not all(_int(d) and 0 <= d <= MAX_DIM_SIZE for d in shape):
        return (f"tensor {name!r} has an invalid shape {str(shape)[:60]} (at most {MAX_TENSOR_DIMS} dimensions of "
                f"0..{MAX_DIM_SIZE})")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(o) for o in offsets) or \
            not 0 <= offsets[0] <= offsets[1] <= data_size:
        return f"tensor {name!r} has invalid data_offsets {str(offsets)[:60]} (two ascending integers >= 0)"
    need = math.ceil(math.prod(shape) * DTYPE_BITS[dtype] / 8)
    if offsets[1] - offsets[0] != need:
        return (f"tensor {name!r} ({dtype} {shape}) needs {need} bytes but its data_offsets span "
                f"{offsets[1] - offsets[0]}")
    return None


def check_safetensors_header(header, data_size: int, path) -> dict:
    """Every entry of a parsed safetensors header checked against the file's ``data_size`` bytes of tensor data:
    ``__metadata__`` a JSON object of strings, every other entry a dict with a known ``dtype``, a ``shape`` of at
    most ``MAX_TENSOR_DIMS`` sizes, and ``data_offsets`` inside the data that match the shape, no two tensors
    overlapping. Returns ``header``; raises ``WeightFileError`` naming the first problem and the fix."""
    fix = "the file is damaged or not a safetensors file; download it again"
    if not isinstance(header, dict):
        raise WeightFileError(f"{path} is not a valid safetensors file (its header is a {type(header).__name__}, not "
                              f"a JSON object); {fix}")
    metadata = header.get(METADATA_KEY, {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightFileError(f"{path}: the header's {METADATA_KEY} must map names to strings; {fix}")
    spans = []
    for name, info in header.items():
        if name == METADATA_KEY:
            continue
        problem = _entry_problem(name, info, math.inf)
        if problem is not None:
            raise WeightFileError(f"{path} is not a valid safetensors file: {problem}; {fix}")
        if info["data_offsets"][1] > info["data_offsets"][0]:
            spans.append((info["data_offsets"][0], info["data_offsets"][1], name))
    end = max((stop for _, stop, _ in spans), default=0)
    if end > data_size:
        raise WeightFileError(f"{path} is truncated: tensors need {end} bytes of data but only {data_size} are "
                              "present. The download was probably interrupted; download it again.")
    spans.sort()
    for (_, end, first), (start, _, second) in zip(spans, spans[1:]):
        if start < end:
            raise WeightFileError(f"{path} is not a valid safetensors file: tensors {first!r} and {second!r} share "
                                  f"bytes; {fix}")
    return header


def check_shard_name(name, index: Path) -> Path:
    """The shard file an index names, inside the index's folder: a relative ``.safetensors`` path without ``..``
    (links inside the folder, as in a Hugging Face cache, are followed as usual)."""
    fix = "the index must name .safetensors files in its own folder; download the model folder again"
    if not isinstance(name, str) or not name:
        raise WeightFileError(f"{index} names a shard {str(name)[:60]!r}, not a file name; {fix}")
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            raise WeightFileError(f"{index} names the shard {name[:120]!r} outside its folder; {fix}")
    if not name.lower().endswith(".safetensors"):
        raise WeightFileError(f"{index} names the shard {name[:120]!r}, not a .safetensors file; {fix}")
    return index.parent / name
