"""What a running job shows: one progress line per change, naming the node by its title (the workflow's
``_meta.title``, else its class type), as a percentage; and one line of timings when it ends."""
from __future__ import annotations

import json
import time

from .errors import Stopped, clean

SLICE = 0.5  # seconds one websocket wait lasts before the stop flag is checked


def node_titles(prompt: dict) -> dict:
    """Node id -> the name an artist sees: ``_meta.title``, else the class type, else the id."""
    titles = {}
    for node_id, node in prompt.items():
        meta = node.get("_meta") if isinstance(node, dict) else None
        title = meta.get("title") if isinstance(meta, dict) else None
        kind = node.get("class_type") if isinstance(node, dict) else None
        titles[str(node_id)] = clean(title or kind or node_id, 60)
    return titles


def progress_line(titles: dict, node, value, total) -> str | None:
    """``"<title> 42%"`` for a progress message; None when its numbers are not usable."""
    if isinstance(value, bool) or isinstance(total, bool) or not isinstance(value, (int, float)) \
            or not isinstance(total, (int, float)) or not total > 0:
        return None
    percent = int(max(0.0, min(1.0, value / total)) * 100)
    name = titles.get(str(node)) if node is not None else None
    return f"{name or clean(node if node is not None else 'job', 60)} {percent}%"


def follow(ws, prompt_id: str, log, facts: dict, titles: dict, still_running=None, stop=None,
           quiet_seconds: float = 60.0) -> None:
    """Read websocket messages of ``prompt_id`` until it ends; progress is logged (one line per change), node
    times go in ``facts``.

    Returns early (the caller then polls /history) when the connection closes, or when nothing arrived for
    ``quiet_seconds`` and ``still_running()`` says the job is no longer queued (it may have ended before the
    websocket connected). Raises :class:`Stopped` once ``stop`` is set. Only ``progress`` messages are read
    (``progress_state`` repeats them), and a line is printed only when its text changes.
    """
    import websocket

    current, since, last_line, quiet_since = None, time.monotonic(), None, time.monotonic()

    def close_node():
        if current is not None:
            facts["node_seconds"][current] = facts["node_seconds"].get(current, 0.0) + time.monotonic() - since

    mark = getattr(getattr(ws, "sock", None), "mark", None)  # the socket measures each message (wsock.py)
    ws.settimeout(SLICE)
    while True:
        if stop is not None and stop.is_set():
            raise Stopped()
        try:
            raw = ws.recv()
            if mark is not None:
                mark()
        except websocket.WebSocketTimeoutException:
            if time.monotonic() - quiet_since >= quiet_seconds:
                quiet_since = time.monotonic()
                if still_running is not None and not still_running():
                    return
            continue
        except (websocket.WebSocketException, OSError) as err:
            log(f"websocket closed ({clean(err, 200) or 'by the server'}); polling /history")
            return
        quiet_since = time.monotonic()
        if not isinstance(raw, str):
            facts["previews"] += 1  # binary frame: a latent preview image
            continue
        msg = _message(raw)
        data = msg.get("data") if msg else None
        if not isinstance(data, dict) or data.get("prompt_id") not in (None, prompt_id):
            continue
        kind = msg.get("type")
        if kind == "execution_cached":
            nodes = data.get("nodes")
            facts["cached"].extend(str(n) for n in (nodes if isinstance(nodes, list) else [])[:10000])
        elif kind == "executing":
            close_node()
            node = data.get("node")
            current, since = (None if node is None else clean(node, 60)), time.monotonic()
            if current is None:
                return
        elif kind == "progress":
            line = progress_line(titles, data.get("node", current), data.get("value"), data.get("max"))
            if line is not None and line != last_line:
                log(line)
                last_line = line
        elif kind in ("execution_error", "execution_interrupted", "execution_success"):
            close_node()
            if kind != "execution_success":
                return
            current = None


def _message(raw: str) -> dict | None:
    if len(raw) > 4 * 2**20:
        return None
    try:
        msg = json.loads(raw)
    except (RecursionError, ValueError):
        return None
    return msg if isinstance(msg, dict) else None


def describe_run(titles: dict, facts: dict) -> str:
    """One line: total seconds, then each executed node's seconds (slowest first, by title), cached nodes,
    previews."""
    parts = [f"{facts['seconds']:.1f} s"]
    timed = sorted(facts.get("node_seconds", {}).items(), key=lambda kv: -kv[1])
    if timed:
        parts.append(", ".join(f"{titles.get(str(n), clean(n, 60))} {t:.1f} s" for n, t in timed[:20]))
    if facts.get("cached"):
        parts.append(f"{len(facts['cached'])} cached")
    if facts.get("previews"):
        parts.append(f"{facts['previews']} previews")
    return "; ".join(parts)
