"""The batch's pairs: read from ``--pair`` / ``--pairs``, each with a key that names the work (photo and video
contents, prompt, seed, workflow), and the workflow filled in for one pair."""
from __future__ import annotations

import copy
import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ComfyError


@dataclass(frozen=True)
class Pair:
    """One job of the batch: ``index`` is its 1-based place, ``key`` identifies its work in the ledger."""

    index: int
    photo: Path
    video: Path
    prompt: str | None
    key: str

    @property
    def name(self) -> str:
        return f"{self.photo.name} + {self.video.name}"


def read_pairs(args) -> list[tuple[Path, Path, str | None]]:
    """(photo, video, prompt or None) from ``args.pair`` and the csv ``args.pairs`` (paths relative to it)."""
    pairs = [(Path(p), Path(v), None) for p, v in (args.pair or [])]
    if args.pairs:
        base = Path(args.pairs).parent
        try:
            with open(args.pairs, newline="", encoding="utf-8-sig") as handle:
                reader = csv.reader(handle, skipinitialspace=True)
                try:
                    for row in reader:
                        pairs += _row(args.pairs, reader.line_num, [field.strip() for field in row], base)
                except csv.Error as err:
                    raise ComfyError(f"{args.pairs}, line {reader.line_num}: {err}") from None
        except UnicodeDecodeError:
            raise ComfyError(f"{args.pairs} is not UTF-8 text; save the csv as UTF-8") from None
        except OSError as err:
            raise ComfyError(f"cannot read --pairs {args.pairs}: {err.strerror or err}") from None
    for photo, video, _ in pairs:
        for path in (photo, video):
            if not path.is_file():
                raise ComfyError(f"file not found: {path}")
    return pairs


def _row(name: str, line: int, row: list, base: Path) -> list:
    if not any(row) or row[0].startswith("#"):
        return []
    where = f"{name}, line {line}"
    if len(row) < 2 or not row[0] or not row[1]:
        raise ComfyError(f"{where}: each line needs photo,video[,prompt]; got {row}")
    if len(row) > 3:
        raise ComfyError(f"{where}: {len(row)} fields, expected photo,video[,prompt]; put a prompt that contains "
                         'commas in double quotes: photo.png,dance.mp4,"a, b"')
    return [(base / row[0], base / row[1], row[2] if len(row) > 2 and row[2] else None)]


def file_digest(path: Path, cache: dict) -> str:
    """SHA-256 of a file's contents (each file read once per batch)."""
    key = str(Path(path).resolve())
    if key not in cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        cache[key] = digest.hexdigest()
    return cache[key]


def keyed(rows: list, prompt: str | None, seed: int | None, template: dict) -> list[Pair]:
    """The batch's pairs with their ledger keys: a hash of the photo's and video's contents, the prompt the pair
    runs with, the seed and the workflow; a repeated identical pair gets ``#2``, ``#3``, ... so each runs."""
    workflow = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    digests, seen, pairs = {}, {}, []
    for index, (photo, video, own) in enumerate(rows, start=1):
        text = own or prompt
        work = json.dumps([file_digest(photo, digests), file_digest(video, digests), text, seed, workflow])
        base = hashlib.sha256(work.encode()).hexdigest()[:24]
        seen[base] = seen.get(base, 0) + 1
        key = base if seen[base] == 1 else f"{base}#{seen[base]}"
        pairs.append(Pair(index, Path(photo), Path(video), text, key))
    return pairs


def find_nodes(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if isinstance(v, dict) and v.get("class_type") == class_type]


def check_workflow(template) -> None:
    """A one-line :class:`ComfyError` unless ``template`` is an API-format workflow with one LoadImage and one
    LoadVideo node."""
    if not isinstance(template, dict) or not template or not all(
            isinstance(v, dict) and isinstance(v.get("inputs", {}), dict) for v in template.values()):
        raise ComfyError("the workflow is not in ComfyUI's API format (node id -> {class_type, inputs}); export it "
                         "with 'Export (API)' or use one from workflows/api/")
    images, videos = find_nodes(template, "LoadImage"), find_nodes(template, "LoadVideo")
    if len(images) != 1 or len(videos) != 1:
        raise ComfyError(f"the workflow needs exactly one LoadImage and one LoadVideo node, found {len(images)} and "
                         f"{len(videos)}")


def prepare(template: dict, photo: str, video: str, prompt_text: str | None, prefix: str, seed: int | None) -> dict:
    """The workflow for one pair: loaders, prompt, seed and output prefix set (SaveVideo's, and DecodeVideo's when
    it writes the file itself: output 'file')."""
    check_workflow(template)
    prompt = copy.deepcopy(template)
    prompt[find_nodes(prompt, "LoadImage")[0]].setdefault("inputs", {})["image"] = photo
    prompt[find_nodes(prompt, "LoadVideo")[0]].setdefault("inputs", {})["file"] = video
    for node_id in find_nodes(prompt, "SteadyDancerSampler"):
        if prompt_text:
            prompt[node_id].setdefault("inputs", {})["prompt"] = prompt_text
        if seed is not None:
            prompt[node_id].setdefault("inputs", {})["seed"] = seed
    for node_id in find_nodes(prompt, "SaveVideo"):
        prompt[node_id].setdefault("inputs", {})["filename_prefix"] = prefix
    for node_id in find_nodes(prompt, "DecodeVideo"):     # output 'file': DecodeVideo writes the mp4 itself
        inputs = prompt[node_id].setdefault("inputs", {})
        if inputs.get("output") == "file":
            inputs["filename_prefix"] = prefix
    return prompt
