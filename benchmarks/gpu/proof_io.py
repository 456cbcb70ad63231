"""The GPU proof's files: the log (every line also on the console), the results folder's table, the archive, and
``collect`` (the figures of an archive into benchmarks/results). Pure Python (no torch).
"""
from __future__ import annotations

import json
import os
import re
import sys
import tarfile
import threading
import time
from pathlib import Path

ARCHIVE = "gpu_proof.tar.gz"
LOG = "gpu_proof.log"
ARCHIVE_ROOT = "gpu_proof"
PART_JSON = re.compile(r"^gpu_[a-z0-9_]+\.json$")


class Log:
    """Lines to the console and to one log file, each flushed at once (a killed run keeps what it wrote)."""

    def __init__(self, path: Path, start: float):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.start, self._lock = path, start, threading.Lock()
        self._file = open(path, "a", encoding="utf-8")

    def raw(self, text: str, also=None) -> None:
        with self._lock:
            for stream in (sys.stdout, self._file, also):
                if stream is not None:
                    stream.write(text if text.endswith("\n") else text + "\n")
                    stream.flush()

    def say(self, text: str) -> None:
        self.raw(f"[gpu_proof {time.monotonic() - self.start:4.0f}s] {text}")

    def close(self) -> None:
        self._file.close()


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def device_name(data: dict | None) -> str | None:
    if not data:
        return None
    return (data.get("environment") or {}).get("device") or data.get("device")


def table_rows(results: Path, names: list[str], estimates: dict) -> list[dict]:
    """One row per part from its ``gpu_<part>.json`` ("not run" when there is none)."""
    rows = []
    for name in names:
        data = read_json(results / f"gpu_{name}.json") or {}
        rows.append({"part": name, "status": data.get("status", "not run"), "seconds": data.get("wall_seconds"),
                     "estimate": estimates.get(name), "summary": data.get("summary", ""),
                     "tiny": data.get("tiny"), "device": device_name(data)})
    return rows


def table_lines(rows: list[dict]) -> list[str]:
    lines = [f"{'part':<11} {'status':<8} {'s':>5} {'est.':>5}  figures / reason"]
    for r in rows:
        word = r["status"].split(":")[0]
        secs = f"{r['seconds']:.0f}" if isinstance(r["seconds"], (int, float)) else "-"
        est = f"{r['estimate']:.0f}" if r["estimate"] is not None else "-"
        detail = r["summary"] if r["status"] == "ok" else "; ".join(x for x in (r["status"], r["summary"]) if x)
        lines.append(f"{r['part']:<11} {word:<8} {secs:>5} {est:>5}  {detail}")
    return lines


def all_good(rows: list[dict]) -> bool:
    return all(r["status"] == "ok" or r["status"].startswith("skipped") for r in rows)


def pack(results: Path, log: Path, out: Path) -> Path:
    """``results``/* and the log -> ``out``/gpu_proof.tar.gz (written beside, then renamed: never half a file)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / ARCHIVE
    tmp = out / (ARCHIVE + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(results.glob("*")) if results.is_dir() else []:
            if path.is_file() and not path.name.endswith(".tmp"):
                tar.add(path, arcname=f"{ARCHIVE_ROOT}/{path.name}")
        if log.is_file():
            tar.add(log, arcname=f"{ARCHIVE_ROOT}/{LOG}")
    os.replace(tmp, target)
    return target


def collect(archive: Path, dest: Path) -> tuple[list[str], list[str]]:
    """Copy the GPU figures of ``archive`` into ``dest``: every ``gpu_<part>.json`` that names a CUDA device and
    is not a ``--tiny`` result. Returns (written file names, "name: why not" for those left)."""
    written, left = [], []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rpartition("/")[2]
            if not member.isfile() or member.name != f"{ARCHIVE_ROOT}/{name}" or not PART_JSON.match(name):
                continue
            try:
                data = json.loads(tar.extractfile(member).read().decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                left.append(f"{name}: not JSON")
                continue
            device = device_name(data)
            if data.get("tiny"):
                left.append(f"{name}: a --tiny result")
            elif not device or device == "cpu":
                left.append(f"{name}: names no CUDA device")
            else:
                write_json(dest / name, data)
                written.append(name)
    return written, left
