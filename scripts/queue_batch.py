"""Queue photo / driving-video pairs through a running ComfyUI with an API-format SteadyDancer workflow.

    python scripts/queue_batch.py --pair photo.png dance.mp4 --pair me.jpg tiktok.mp4
    python scripts/queue_batch.py --pairs pairs.csv --workflow workflows/api/steadydancer_24gb_fp8_distill.json \
        --server http://127.0.0.1:8188 --download results/

pairs.csv: one ``photo,video[,prompt]`` per line (paths relative to the csv). For each pair the files are uploaded
(POST /upload/image), the workflow's LoadImage / LoadVideo inputs point at them, the prompt (SteadyDancerSampler)
and the SaveVideo prefix are set, the job is queued (POST /prompt) and followed over the websocket (per-step
progress; with no ``websocket-client`` installed, /history is polled), then the written videos are listed from
/history and optionally downloaded (GET /view). Python standard library only; ``websocket-client`` is optional.
Exit status: 0 when every pair produced a video, 1 otherwise.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import mimetypes
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

DEFAULT_WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "api" / "steadydancer_basic_dance.json"
POLL_SECONDS = 1.0


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

    def get_json(self, path: str):
        return json.loads(self._request("GET", path))

    def post_json(self, path: str, payload: dict):
        body = json.dumps(payload).encode()
        return json.loads(self._request("POST", path, body, {"Content-Type": "application/json"}) or b"{}")

    def upload(self, path: Path, subfolder: str = "steadydancer") -> str:
        """Upload an image or video into ComfyUI's input folder; returns the name the loader nodes take."""
        boundary = uuid.uuid4().hex
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
             f"Content-Type: {mime}\r\n\r\n").encode() + path.read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n{subfolder}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        reply = json.loads(self._request("POST", "/upload/image", b"".join(parts),
                                         {"Content-Type": f"multipart/form-data; boundary={boundary}"}))
        return f"{reply['subfolder']}/{reply['name']}" if reply.get("subfolder") else reply["name"]

    def queue(self, prompt: dict) -> str:
        reply = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if reply.get("node_errors"):
            raise ComfyError("workflow rejected: " + _node_errors(reply["node_errors"]))
        return reply["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def view(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
        return self._request("GET", f"/view?{query}")

    def wait(self, prompt_id: str, log=print) -> tuple[dict, dict]:
        """Follow the job (websocket when available) until it is in /history.

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
                    _follow(ws, prompt_id, log, facts)
                finally:
                    ws.close()
        while True:
            entry = self.history(prompt_id)
            if entry and (entry.get("status", {}).get("completed") is not None or entry.get("outputs")):
                facts["seconds"] = time.monotonic() - start
                return entry, facts
            time.sleep(POLL_SECONDS)


def _follow(ws, prompt_id: str, log, facts: dict) -> None:
    """Read websocket messages of ``prompt_id`` until it ends; per-step progress is logged, times go in ``facts``."""
    import websocket

    current, since = None, time.monotonic()

    def close_node():
        if current is not None:
            facts["node_seconds"][current] = facts["node_seconds"].get(current, 0.0) + time.monotonic() - since

    while True:
        try:
            raw = ws.recv()
        except websocket.WebSocketTimeoutException:
            continue
        if not isinstance(raw, str):
            facts["previews"] += 1  # binary frame: a latent preview image
            continue
        msg = json.loads(raw)
        data = msg.get("data", {})
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
    message = data.get("error", {}).get("message", "") if isinstance(data.get("error"), dict) else str(data)
    if data.get("node_errors"):
        message += " " + _node_errors(data["node_errors"])
    return message


def _node_errors(errors: dict) -> str:
    lines = []
    for node_id, info in errors.items():
        for e in info.get("errors", []):
            lines.append(f"node {node_id} ({info.get('class_type')}): {e.get('message')} {e.get('details', '')}".strip())
    return "; ".join(lines)


def run_failure(status: dict) -> str:
    """The reason a finished job failed, from its /history status messages."""
    messages = dict((kind, data) for kind, data in status.get("messages", []))
    if "execution_interrupted" in messages:
        data = messages["execution_interrupted"]
        return f"interrupted (POST /interrupt) while running {data.get('node_type') or 'the queue'}"
    err = messages.get("execution_error", {})
    return f"{err.get('node_type')} failed: {err.get('exception_message', '').strip()}"


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
        with open(args.pairs, newline="") as handle:
            for row in csv.reader(handle):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 2:
                    raise ComfyError(f"{args.pairs}: each line needs photo,video[,prompt]; got {row}")
                pairs.append((base / row[0].strip(), base / row[1].strip(), row[2].strip() if len(row) > 2 else None))
    for photo, video, _ in pairs:
        for path in (photo, video):
            if not path.is_file():
                raise ComfyError(f"file not found: {path}")
    return pairs


def saved_files(entry: dict) -> list[dict]:
    files = []
    for output in entry.get("outputs", {}).values():
        for item in output.get("images", []) + output.get("videos", []) + output.get("gifs", []):
            if item.get("type") == "output":
                files.append(item)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Queue SteadyDancer photo/video pairs through ComfyUI's HTTP API.")
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--workflow", default=str(DEFAULT_WORKFLOW), help="API-format workflow JSON")
    parser.add_argument("--pair", nargs=2, action="append", metavar=("PHOTO", "VIDEO"))
    parser.add_argument("--pairs", help="csv file: photo,video[,prompt] per line")
    parser.add_argument("--prompt", help="prompt for every pair without its own")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--prefix", default="steadydancer/batch", help="SaveVideo filename prefix")
    parser.add_argument("--download", help="folder to copy the finished videos into")
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
            status = entry.get("status", {})
            if status.get("status_str") == "error":
                raise ComfyError(run_failure(status))
            files = saved_files(entry)
            if not files:
                raise ComfyError("finished without writing a video")
            for item in files:
                where = "/".join(p for p in (item.get("subfolder"), item["filename"]) if p)
                print(f"{label}: wrote output/{where}")
                if args.download:
                    target = Path(args.download) / item["filename"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(client.view(item))
                    print(f"{label}: downloaded {target}")
        except (ComfyError, OSError) as err:
            failures += 1
            print(f"{label}: FAILED: {err}", file=sys.stderr)
    print(f"{len(pairs) - failures} of {len(pairs)} pairs done")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
