"""Queue photo / driving-video pairs through a running ComfyUI with an API-format SteadyDancer workflow.

    python scripts/queue_batch.py --pair photo.png dance.mp4 --pair me.jpg tiktok.mp4
    python scripts/queue_batch.py --pairs pairs.csv --workflow workflows/api/steadydancer_24gb_fp8_distill.json \
        --server http://127.0.0.1:8188 --download results/

pairs.csv: one ``photo,video[,prompt]`` per line (paths relative to the csv; quote a prompt that holds commas:
``me.png,dance.mp4,"a woman, dancing"``). For each pair the files are uploaded (POST /upload/image; ComfyUI keeps
any different file of the same name and renames the upload), the workflow's LoadImage / LoadVideo inputs point at
them, the prompt (SteadyDancerSampler) and the SaveVideo prefix are set, the job is queued (POST /prompt) and
followed over the websocket (per-step progress; with no ``websocket-client`` installed, /history is polled), then
the written videos are listed from /history and optionally downloaded (GET /view) into ``--download``, as
``DOWNLOAD/<subfolder>/<filename>``. A download never leaves that folder (a name with ``..``, an absolute name or
one that resolves outside it fails that pair) and never replaces a file: an existing name gets a numeric suffix
(``name-1.mp4``, ``name-2.mp4``, ...). A job the server no longer knows (in neither /queue nor /history, e.g. after
a restart) and a reply that is not JSON fail that pair; the next pair still runs. Python standard library only;
``websocket-client`` is optional. Exit status: 0 when every pair produced a video, 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import mimetypes
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path, PurePosixPath, PureWindowsPath

DEFAULT_WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "api" / "steadydancer_basic_dance.json"
POLL_SECONDS = 1.0
MAX_SUFFIX = 9999  # name-1 ... name-9999, then the download fails


class ComfyError(RuntimeError):
    pass


class Client:
    """Minimal ComfyUI HTTP client (urllib)."""

    def __init__(self, server: str, timeout: float = 60.0):
        self.server = server.rstrip("/")
        self.timeout = timeout
        self.client_id = uuid.uuid4().hex

    def _request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.server + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")
            raise ComfyError(f"{method} {path} -> HTTP {err.code}: {_explain(detail)}") from None
        except urllib.error.URLError as err:
            raise ComfyError(f"cannot reach ComfyUI at {self.server} ({err.reason}); start it or pass --server") from None

    def get_json(self, path: str) -> dict:
        return _json_object("GET", path, self._request("GET", path))

    def post_json(self, path: str, payload: dict) -> dict:
        body = json.dumps(payload).encode()
        return _json_object("POST", path, self._request("POST", path, body, {"Content-Type": "application/json"})
                            or b"{}")

    def upload(self, path: Path, subfolder: str = "steadydancer") -> str:
        """Upload an image or video into ComfyUI's input folder; returns the name the loader nodes take."""
        boundary = uuid.uuid4().hex
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
             f"Content-Type: {mime}\r\n\r\n").encode() + path.read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n{subfolder}\r\n'.encode(),
            # no overwrite: ComfyUI reuses an identical file and renames the upload next to a different one
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\nfalse\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        try:
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            reply = _json_object("POST", "/upload/image",
                                 self._request("POST", "/upload/image", b"".join(parts), headers))
            name, folder = reply.get("name"), reply.get("subfolder")
            if not isinstance(name, str) or not name:
                raise ComfyError(f"POST /upload/image: the reply names no file: {str(reply)[:200]}")
        except ComfyError as err:
            raise ComfyError(f"uploading {path}: {err}") from None
        return f"{folder}/{name}" if folder else name

    def queue(self, prompt: dict) -> str:
        reply = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if reply.get("node_errors"):
            raise ComfyError("workflow rejected: " + _node_errors(reply["node_errors"]))
        if not isinstance(reply.get("prompt_id"), str):
            raise ComfyError(f"POST /prompt: the reply has no prompt_id: {str(reply)[:200]}")
        return reply["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def queued(self, prompt_id: str) -> bool:
        """Whether ``prompt_id`` is running or waiting in ComfyUI's queue (GET /queue)."""
        reply = self.get_json("/queue")
        for key in ("queue_running", "queue_pending"):
            for item in reply.get(key) or []:
                if isinstance(item, (list, tuple)) and len(item) > 1 and item[1] == prompt_id:
                    return True
        return False

    def known(self, prompt_id: str) -> bool:
        """Whether ComfyUI still knows the job: queued, running or in /history (history read last, so a job
        finishing between the two requests is still found)."""
        return self.queued(prompt_id) or self.history(prompt_id) is not None

    def view(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request("GET", f"/view?{query}")

    def wait(self, prompt_id: str, log=print, poll: float | None = None) -> tuple[dict, dict]:
        """Follow the job (websocket when available) until it is in /history.

        Raises :class:`ComfyError` when the server no longer knows the job (in neither /queue nor /history, e.g.
        after a restart) instead of waiting for it forever.

        Returns (history entry, run facts): ``facts`` has ``node_seconds`` (node id -> seconds from its start to the
        next node's start, as seen over the websocket), ``cached`` (node ids ComfyUI took from its cache),
        ``previews`` (binary preview frames received) and ``seconds`` (queue to finish); only ``seconds`` without
        a websocket.
        """
        start = time.monotonic()
        facts = {"node_seconds": {}, "cached": [], "previews": 0}
        try:
            import websocket  # websocket-client
        except ImportError:
            websocket = None
        if websocket is not None:
            url = self.server.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
            try:
                ws = websocket.create_connection(url, timeout=self.timeout)
            except (OSError, websocket.WebSocketException) as err:
                log(f"  websocket unavailable ({err}); polling /history")
            else:
                try:
                    _follow(ws, prompt_id, log, facts, lambda: self.known(prompt_id))
                finally:
                    ws.close()
        while True:
            entry = self.history(prompt_id)
            if entry is None and not self.known(prompt_id):
                raise ComfyError(f"ComfyUI no longer knows prompt {prompt_id}: it is in neither /queue nor /history "
                                 "(was the server restarted, or the job deleted from the queue?)")
            if entry and ((entry.get("status") or {}).get("completed") is not None or entry.get("outputs")):
                facts["seconds"] = time.monotonic() - start
                return entry, facts
            time.sleep(POLL_SECONDS if poll is None else poll)


def _json_object(method: str, path: str, raw: bytes) -> dict:
    """The JSON object in a reply, or a :class:`ComfyError` saying what came instead."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ComfyError(f"{method} {path}: the reply is not JSON: {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise ComfyError(f"{method} {path}: expected a JSON object, got {str(data)[:200]}")
    return data


def _follow(ws, prompt_id: str, log, facts: dict, still_known=None) -> None:
    """Read websocket messages of ``prompt_id`` until it ends; per-step progress is logged, times go in ``facts``.

    Returns early (the caller then polls /history) when the connection closes, or when a receive times out and
    ``still_known()`` says the server has forgotten the job.
    """
    import websocket

    current, since = None, time.monotonic()

    def close_node():
        if current is not None:
            facts["node_seconds"][current] = facts["node_seconds"].get(current, 0.0) + time.monotonic() - since

    while True:
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            if still_known is not None and not still_known():
                return
            continue
        except (websocket.WebSocketConnectionClosedException, OSError) as err:
            log(f"  websocket closed ({err or 'by the server'}); polling /history")
            return
        if not isinstance(raw, str):
            facts["previews"] += 1  # binary frame: a latent preview image
            continue
        try:
            msg = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(msg, dict):
            continue
        data = msg.get("data") or {}
        if not isinstance(data, dict):
            continue
        if data.get("prompt_id") not in (None, prompt_id):
            continue
        kind = msg.get("type")
        if kind == "execution_cached":
            facts["cached"].extend(data.get("nodes", []))
        elif kind == "executing":
            close_node()
            current, since = data.get("node"), time.monotonic()
            if current is None:
                return
        elif kind == "progress":
            log(f"  node {data.get('node', current)}: {data['value']}/{data['max']}")
        elif kind in ("execution_error", "execution_interrupted", "execution_success"):
            close_node()
            if kind != "execution_success":
                return
            current = None


def _explain(text: str) -> str:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text[:500]
    if not isinstance(data, dict):
        return text[:500]
    message = data.get("error", {}).get("message", "") if isinstance(data.get("error"), dict) else str(data)
    if data.get("node_errors"):
        message += " " + _node_errors(data["node_errors"])
    return message


def _node_errors(errors: dict) -> str:
    if not isinstance(errors, dict):
        return str(errors)[:500]
    lines = []
    for node_id, info in errors.items():
        if not isinstance(info, dict):
            lines.append(f"node {node_id}: {str(info)[:200]}")
            continue
        for e in info.get("errors", []):
            if not isinstance(e, dict):
                lines.append(f"node {node_id} ({info.get('class_type')}): {str(e)[:200]}")
                continue
            lines.append(f"node {node_id} ({info.get('class_type')}): {e.get('message')} {e.get('details', '')}".strip())
    return "; ".join(lines)


def run_failure(status: dict) -> str:
    """The reason a finished job failed, from its /history status messages."""
    messages = {m[0]: (m[1] if isinstance(m[1], dict) else {}) for m in status.get("messages") or []
                if isinstance(m, (list, tuple)) and len(m) == 2}
    if "execution_interrupted" in messages:
        data = messages["execution_interrupted"]
        return f"interrupted (POST /interrupt) while running {data.get('node_type') or 'the queue'}"
    err = messages.get("execution_error", {})
    message = str(err.get("exception_message") or "no message").strip()
    return f"{err.get('node_type') or 'the job'} failed: {message}"


def describe_run(prompt: dict, facts: dict) -> str:
    """One line: total seconds, then each executed node's seconds (slowest first), cached nodes, previews."""
    parts = [f"{facts['seconds']:.1f} s"]
    timed = sorted(facts.get("node_seconds", {}).items(), key=lambda kv: -kv[1])
    if timed:
        parts.append(", ".join(f"{prompt.get(n, {}).get('class_type', n)} {t:.1f} s" for n, t in timed))
    if facts.get("cached"):
        parts.append(f"{len(facts['cached'])} cached")
    if facts.get("previews"):
        parts.append(f"{facts['previews']} previews")
    return "; ".join(parts)


def find_nodes(prompt: dict, class_type: str) -> list[str]:
    return [k for k, v in prompt.items() if v.get("class_type") == class_type]


def prepare(template: dict, photo: str, video: str, prompt_text: str | None, prefix: str, seed: int | None) -> dict:
    """The workflow for one pair: loaders, prompt, seed and output prefix set."""
    prompt = copy.deepcopy(template)
    images, videos = find_nodes(prompt, "LoadImage"), find_nodes(prompt, "LoadVideo")
    if len(images) != 1 or len(videos) != 1:
        raise ComfyError(f"the workflow needs exactly one LoadImage and one LoadVideo node, found {len(images)} and "
                         f"{len(videos)}")
    prompt[images[0]]["inputs"]["image"] = photo
    prompt[videos[0]]["inputs"]["file"] = video
    for node_id in find_nodes(prompt, "SteadyDancerSampler"):
        if prompt_text:
            prompt[node_id]["inputs"]["prompt"] = prompt_text
        if seed is not None:
            prompt[node_id]["inputs"]["seed"] = seed
    for node_id in find_nodes(prompt, "SaveVideo"):
        prompt[node_id]["inputs"]["filename_prefix"] = prefix
    return prompt


def read_pairs(args) -> list[tuple[Path, Path, str | None]]:
    pairs = [(Path(p), Path(v), None) for p, v in (args.pair or [])]
    if args.pairs:
        base = Path(args.pairs).parent
        with open(args.pairs, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            try:
                for row in reader:
                    row = [field.strip() for field in row]
                    if not any(row) or row[0].startswith("#"):
                        continue
                    where = f"{args.pairs}, line {reader.line_num}"
                    if len(row) < 2 or not row[0] or not row[1]:
                        raise ComfyError(f"{where}: each line needs photo,video[,prompt]; got {row}")
                    if len(row) > 3:
                        raise ComfyError(f"{where}: {len(row)} fields, expected photo,video[,prompt]; put a prompt "
                                         'that contains commas in double quotes: photo.png,dance.mp4,"a, b"')
                    prompt = row[2] if len(row) > 2 and row[2] else None
                    pairs.append((base / row[0], base / row[1], prompt))
            except csv.Error as err:
                raise ComfyError(f"{args.pairs}, line {reader.line_num}: {err}") from None
    for photo, video, _ in pairs:
        for path in (photo, video):
            if not path.is_file():
                raise ComfyError(f"file not found: {path}")
    return pairs


def saved_files(entry: dict) -> list[dict]:
    files = []
    outputs = entry.get("outputs")
    for output in (outputs.values() if isinstance(outputs, dict) else ()):
        if not isinstance(output, dict):
            continue
        for key in ("images", "videos", "gifs"):
            for item in output.get(key) or []:
                if isinstance(item, dict) and item.get("type") == "output":
                    files.append(item)
    return files


def _shown(item: dict) -> str:
    return "/".join(str(p) for p in (item.get("subfolder"), item.get("filename")) if p)


def download_target(folder: Path, item: dict) -> Path:
    """``folder/<subfolder>/<filename>`` for an output the server listed; a :class:`ComfyError` for any name that
    is absolute, has a ``..`` part or resolves (through links too) outside ``folder``."""
    filename, subfolder = item.get("filename"), item.get("subfolder") or ""

    def refuse(why: str) -> ComfyError:
        return ComfyError(f"refusing to download {_shown(item)!r} from the server: {why}")

    if not isinstance(filename, str) or not filename or not isinstance(subfolder, str):
        raise refuse("it has no file name")
    if "\0" in filename + subfolder:
        raise refuse("the name holds a NUL character")
    if re.search(r"[\\/]", filename) or filename in (".", ".."):
        raise refuse("the file name is not a plain name")
    for part in (subfolder, filename):
        if PurePosixPath(part).is_absolute() or PureWindowsPath(part).anchor:
            raise refuse("the name is absolute")
    parts = [p for p in re.split(r"[\\/]", subfolder) if p not in ("", ".")]
    if ".." in parts:
        raise refuse("the subfolder has a '..' part")
    root = Path(folder).resolve()
    target = root.joinpath(*parts, filename)
    if not target.resolve().is_relative_to(root):
        raise refuse(f"it resolves outside {folder}")
    return target


def _file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def save_new(target: Path, data: bytes) -> Path:
    """Write ``data`` at ``target``, or at ``target`` with the first free numeric suffix (``name-1.mp4``, ...);
    never over an existing file. Written under a temporary name beside it first; returns the path written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _file_mode())
        for n in range(MAX_SUFFIX + 1):
            candidate = target if n == 0 else target.with_name(f"{target.stem}-{n}{target.suffix}")
            try:
                os.link(tmp, candidate)  # fails, without replacing anything, when the name is taken
                return candidate
            except FileExistsError:
                continue
            except OSError:  # no hard links on this file system: exclusive create instead
                try:
                    with open(candidate, "xb") as handle:
                        handle.write(data)
                    return candidate
                except FileExistsError:
                    continue
        raise ComfyError(f"{target}: this name and its suffixes -1 ... -{MAX_SUFFIX} are all taken")
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def download(client: Client, folder: Path, item: dict) -> Path:
    """Fetch one listed output into ``folder`` (see :func:`download_target` and :func:`save_new`)."""
    target = download_target(folder, item)
    try:
        return save_new(target, client.view(item))
    except (ComfyError, OSError) as err:
        raise ComfyError(f"downloading {_shown(item)} to {target}: {err}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Queue SteadyDancer photo/video pairs through ComfyUI's HTTP API.")
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--workflow", default=str(DEFAULT_WORKFLOW), help="API-format workflow JSON")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("PHOTO", "VIDEO"))
    parser.add_argument("--pairs", help="csv file: photo,video[,prompt] per line")
    parser.add_argument("--prompt", help="prompt for every pair without its own")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--prefix", default="steadydancer/batch", help="SaveVideo filename prefix")
    parser.add_argument("--download", help=(
        "folder to copy the finished videos into, as DOWNLOAD/<subfolder>/<filename>; an existing file is never "
        "replaced: the download gets a numeric suffix (name-1.mp4, name-2.mp4, ...), and a name from the server "
        "that would land outside this folder fails that pair"))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")
    args = parser.parse_args(argv)
    try:
        pairs = read_pairs(args)
        if not pairs:
            parser.error("give --pair PHOTO VIDEO (repeatable) or --pairs FILE.csv")
        template = json.loads(Path(args.workflow).read_text())
        client = Client(args.server, args.timeout)
        client.get_json("/object_info/SteadyDancerSampler")
    except (ComfyError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failures = 0
    for index, (photo, video, own_prompt) in enumerate(pairs, start=1):
        label = f"[{index}/{len(pairs)}] {photo.name} + {video.name}"
        try:
            prompt = prepare(template, client.upload(photo), client.upload(video), own_prompt or args.prompt,
                             f"{args.prefix}_{index:03d}", args.seed)
            prompt_id = client.queue(prompt)
            print(f"{label}: queued {prompt_id}")
            entry, facts = client.wait(prompt_id)
            print(f"{label}: {describe_run(prompt, facts)}")
            status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
            if status.get("status_str") == "error":
                raise ComfyError(run_failure(status))
            files = saved_files(entry)
            if not files:
                raise ComfyError("finished without writing a video")
            for item in files:
                print(f"{label}: wrote output/{_shown(item)}")
                if args.download:
                    print(f"{label}: downloaded {download(client, Path(args.download), item)}")
        except (ComfyError, OSError) as err:
            failures += 1
            print(f"{label}: FAILED: {err}", file=sys.stderr)
    print(f"{len(pairs) - failures} of {len(pairs)} pairs done")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
