"""ComfyUI's JSON replies, checked before use: a reply nested too deeply, of the wrong type or missing a field
raises :class:`ComfyError` (that pair fails, the batch goes on); server text is cleaned and shortened."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import ComfyError, clean

MAX_DEPTH = 64                                   # nesting levels a reply may have (ComfyUI's stay under 12)
MAX_FILES = 100                                  # output files one job may list
PROMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # ComfyUI's prompt ids are UUIDs
OUTPUT_KEYS = ("images", "videos", "gifs")       # where a node's /history outputs list the files it wrote


def parse_object(what: str, raw: bytes) -> dict:
    """The JSON object in a reply, or a :class:`ComfyError` saying what came instead."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ComfyError(f"{what}: the reply is nested too deeply to read") from None
    except (UnicodeDecodeError, ValueError):
        raise ComfyError(f"{what}: the reply is not JSON: {clean(repr(raw[:200]), 200)}") from None
    if not isinstance(data, dict):
        raise ComfyError(f"{what}: expected a JSON object, got {_kind(data)}: {clean(data, 200)}")
    if too_deep(data, MAX_DEPTH):
        raise ComfyError(f"{what}: the reply is nested more than {MAX_DEPTH} levels deep")
    return data


def too_deep(data, limit: int) -> bool:
    """Whether ``data`` (parsed JSON) nests lists / objects more than ``limit`` levels (iterative walk)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _field(what: str, data: dict, key: str, kinds: tuple, default=None):
    value = data.get(key, default)
    if value is None and type(None) in kinds:
        return value
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        wanted = " or ".join(_kind(k()) if k is not type(None) else "null" for k in kinds)
        raise ComfyError(f"{what}: '{clean(key, 60)}' is {_kind(value)}, expected {wanted}")
    return value


# ---------------------------------------------------------------------------------------------------- replies
def upload_name(what: str, reply: dict) -> str:
    """The name the loader nodes take for an uploaded file (``subfolder/name``)."""
    name = _field(what, reply, "name", (str,), "")
    folder = _field(what, reply, "subfolder", (str, type(None)))
    if not name or len(name) > 255 or "\0" in name:
        raise ComfyError(f"{what}: the reply names no usable file: {clean(reply, 200)}")
    return f"{folder}/{name}" if folder else name


def prompt_id(what: str, reply: dict) -> str:
    """The prompt id in a POST /prompt reply; a rejected workflow raises with the server's reasons."""
    errors = reply.get("node_errors")
    if errors:
        raise ComfyError("workflow rejected: " + node_errors(errors))
    value = _field(what, reply, "prompt_id", (str,), None) if "prompt_id" in reply else None
    if not isinstance(value, str) or not PROMPT_ID.fullmatch(value):
        raise ComfyError(f"{what}: the reply has no usable prompt_id: {clean(reply, 200)}")
    return value


def queued_ids(what: str, reply: dict) -> set:
    """The prompt ids running or waiting in a GET /queue reply."""
    ids = set()
    for key in ("queue_running", "queue_pending"):
        for item in _field(what, reply, key, (list, type(None))) or ():
            if isinstance(item, list) and len(item) > 1 and isinstance(item[1], str):
                ids.add(item[1])
    return ids


@dataclass(frozen=True)
class Entry:
    """A job's /history entry: ``finished`` once ComfyUI says it completed (or listed outputs); ``error`` the
    reason it failed (None when it did not); ``files`` the output files it lists."""

    finished: bool
    error: str | None
    files: tuple


def history_entry(what: str, reply: dict, prompt: str) -> Entry | None:
    """The entry of ``prompt`` in a GET /history/ID reply (None while it is not there)."""
    entry = _field(what, reply, prompt, (dict, type(None)))
    if entry is None:
        return None
    status = _field(what, entry, "status", (dict, type(None))) or {}
    completed = _field(what, status, "completed", (bool, type(None)))
    status_str = _field(what, status, "status_str", (str, type(None)))
    messages = _field(what, status, "messages", (list, type(None))) or []
    outputs = _field(what, entry, "outputs", (dict, type(None))) or {}
    for node, output in outputs.items():
        if not isinstance(output, dict):
            raise ComfyError(f"{what}: the outputs of node {clean(node, 60)} are {_kind(output)}, expected an object")
        for key in OUTPUT_KEYS:
            _field(what, output, key, (list, type(None)))
    files = tuple(saved_files(entry))
    if len(files) > MAX_FILES:
        raise ComfyError(f"{what}: the job lists {len(files)} output files, more than the {MAX_FILES} a batch "
                         "takes from one job")
    error = run_failure(status) if status_str == "error" else None
    return Entry(completed is not None or bool(outputs) or status_str == "error", error, files)


def saved_files(entry: dict) -> list[dict]:
    """The output files (``type`` "output", not previews) a /history entry lists."""
    files = []
    outputs = entry.get("outputs")
    for output in (outputs.values() if isinstance(outputs, dict) else ()):
        if not isinstance(output, dict):
            continue
        for key in OUTPUT_KEYS:
            items = output.get(key)
            for item in (items if isinstance(items, list) else ()):
                if isinstance(item, dict) and item.get("type") == "output":
                    files.append(item)
    return files


# ---------------------------------------------------------------------------------------------- server text
def explain(text: str) -> str:
    """The message of an HTTP error reply (ComfyUI's ``{"error": {"message"}, "node_errors"}`` or any text)."""
    try:
        data = json.loads(text)
    except (RecursionError, ValueError):
        return clean(text, 500)
    if not isinstance(data, dict) or too_deep(data, MAX_DEPTH):
        return clean(text, 500)
    error = data.get("error")
    if isinstance(error, dict):
        message = clean(error.get("message", ""), 300)
    else:
        message = clean(error if isinstance(error, str) else data, 300)
    if data.get("node_errors"):
        message += " " + node_errors(data["node_errors"])
    return message


def node_errors(errors) -> str:
    """ComfyUI's per-node validation errors on one line."""
    if not isinstance(errors, dict):
        return clean(errors, 500)
    lines = []
    for node_id, info in list(errors.items())[:20]:
        node_id = clean(node_id, 40)
        if not isinstance(info, dict):
            lines.append(f"node {node_id}: {clean(info, 200)}")
            continue
        kind = clean(info.get("class_type"), 60)
        found = info.get("errors")
        for e in (found if isinstance(found, list) else [found])[:10]:
            if not isinstance(e, dict):
                lines.append(f"node {node_id} ({kind}): {clean(e, 200)}")
                continue
            text = f"{clean(e.get('message'), 200)} {clean(e.get('details', ''), 200)}".strip()
            lines.append(f"node {node_id} ({kind}): {text}")
    return "; ".join(lines)


def run_failure(status: dict) -> str:
    """The reason a finished job failed, from its /history status messages."""
    found = status.get("messages") if isinstance(status.get("messages"), list) else []
    messages = {m[0]: (m[1] if isinstance(m[1], dict) else {}) for m in found
                if isinstance(m, (list, tuple)) and len(m) == 2 and isinstance(m[0], str)}
    if "execution_interrupted" in messages:
        data = messages["execution_interrupted"]
        return f"interrupted (POST /interrupt) while running {clean(data.get('node_type') or 'the queue', 80)}"
    err = messages.get("execution_error", {})
    message = clean(err.get("exception_message") or "no message")
    return f"{clean(err.get('node_type') or 'the job', 80)} failed: {message}"
