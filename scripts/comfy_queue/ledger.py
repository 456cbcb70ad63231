"""The batch ledger: one JSON line per change of a pair's state, so a batch stopped by Ctrl-C or a crash resumes
without redoing finished pairs.

The file starts with ``{"queue_batch_ledger": 1}``; each further line is the whole latest record of one pair
(``key``, ``status`` pending / running / done / failed, ``server``, ``prompt_id``, ``downloaded``, ``outputs``,
``seconds``, ``error``, ``at``); the last line of a key wins. Lines are appended with one write each and flushed
to disk, so the file is consistent after any stop: a line cut short by a crash is ignored when read.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .errors import ComfyError

HEADER = {"queue_batch_ledger": 1}
STATUSES = ("pending", "running", "done", "failed")
DEFAULT_NAME = "queue_batch_ledger.jsonl"

try:
    import fcntl
except ImportError:  # Windows: no lock; two runs on one ledger are the user's to avoid
    fcntl = None


class Ledger:
    """Thread-safe pair records, kept in memory and, when ``path`` is given, appended to that file."""

    def __init__(self, path: Path | None = None):
        self.path = None if path is None else Path(path)
        self.records: dict[str, dict] = {}
        self.skipped_lines = 0
        self._lock = threading.Lock()
        self._fd = None
        if self.path is not None:
            self._open()

    def _open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not path.exists()
            if fresh:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            else:
                self._read(path)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except FileExistsError:
            raise ComfyError(f"{path} appeared while the batch started; run again") from None
        except OSError as err:
            raise ComfyError(f"cannot use the ledger {path} ({err.strerror or err}); pass --ledger elsewhere") \
                from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ComfyError(f"the ledger {path} is in use by another queue_batch run; wait for it to end or "
                                 "pass another --ledger") from None
        self._fd = fd
        if fresh:
            self._append(HEADER)
        elif path.stat().st_size and not _ends_with_newline(path):
            os.write(fd, b"\n")  # a line cut short by a crash stays alone on its line

    def _read(self, path: Path) -> None:
        with open(path, "rb") as handle:
            lines = handle.read().split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if header != HEADER:
            raise ComfyError(f"{path} exists and is not a queue_batch ledger; it is left alone: pass --ledger with "
                             "another file name")
        for line in lines[1:]:
            record = _record(line)
            if record is None:
                self.skipped_lines += bool(line.strip())
                continue
            self.records[record["key"]] = record

    def _append(self, *records: dict) -> None:
        data = "".join(json.dumps(r, ensure_ascii=True, separators=(",", ":")) + "\n" for r in records).encode()
        while data:
            data = data[os.write(self._fd, data):]
        os.fsync(self._fd)

    def get(self, key: str) -> dict | None:
        with self._lock:
            record = self.records.get(key)
            return None if record is None else dict(record)

    def update(self, key: str, **fields) -> dict:
        """Merge ``fields`` into the record of ``key`` and append the result; returns a copy of it."""
        return self.update_many([(key, fields)])[0]

    def update_many(self, changes: list) -> list[dict]:
        """:meth:`update` for several (key, fields) at once, in one write."""
        with self._lock:
            records = []
            for key, fields in changes:
                if fields.get("status", "pending") not in STATUSES:
                    raise ValueError(f"unknown status {fields['status']!r}")
                records.append({**self.records.get(key, {"status": "pending"}), **fields, "key": key,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
            if self._fd is not None and records:
                self._append(*records)
            for record in records:
                self.records[record["key"]] = record
            return [dict(r) for r in records]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # also releases the lock
                self._fd = None


def _record(line: bytes) -> dict | None:
    try:
        record = json.loads(line)
    except (RecursionError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("key"), str) or \
            record.get("status") not in STATUSES:
        return None
    return record


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"
