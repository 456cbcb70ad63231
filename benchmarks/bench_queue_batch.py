"""queue_batch against hostile replies: peak memory of a big download and of a huge /history reply, and how long a
trickled reply holds a request.

A small local server stands in for ComfyUI (one job per run, finished at once). Three cases, each running
``scripts/queue_batch.py`` (or ``--script``, e.g. an older copy, for comparison) in a fresh process whose peak
resident memory (ru_maxrss) is recorded:
- ``download``: GET /view answers a ``--view-mb`` MB video (streamed by the server, never held in its memory);
- ``huge_history``: GET /history answers ``--history-mb`` MB of JSON (a finished job listing no video);
- ``trickle``: GET /history promises 1 MB and sends one byte every ``--trickle-every`` s, run with
  ``--timeout --trickle-timeout``; the run is ended after ``--give-up`` s if still going.
Results go to ``benchmarks/results/queue_batch.json``.

    python benchmarks/bench_queue_batch.py [--view-mb 1536 --history-mb 300 --script OLD/queue_batch.py]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import resource, runpy, sys
script = sys.argv[1]
sys.path.insert(0, str(__import__('pathlib').Path(script).parent))
sys.argv = [script] + sys.argv[2:]
try:
    runpy.run_path(script, run_name='__main__')
except SystemExit:
    pass
print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""
WORKFLOW = {"1": {"class_type": "LoadImage", "inputs": {}}, "2": {"class_type": "LoadVideo", "inputs": {}},
            "3": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "x"}}}


def serve(mode: str, args) -> ThreadingHTTPServer:
    """A ComfyUI stand-in whose /view or /history answers as ``mode`` says."""
    def finished(prompt_id):
        return {prompt_id: {"outputs": {"3": {"images": [{"filename": "big.mp4", "subfolder": "", "type": "output"}]}},
                            "status": {"status_str": "success", "completed": True}}}

    class Handler(BaseHTTPRequestHandler):
        def _json(self, payload):
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._json({"name": "f", "subfolder": ""} if self.path.startswith("/upload") else
                       {"prompt_id": "job0", "node_errors": {}})

        def do_GET(self):
            try:
                self._get()
            except OSError:
                pass

        def _get(self):
            if self.path.startswith("/history/") and mode == "huge_history":
                size = int(args.history_mb * 2**20)
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                entry = json.dumps({"job0": {"outputs": {}, "status": {"status_str": "success", "completed": True}}})
                head, tail = entry[:-2].encode() + b', "pad": "', b'"}}'
                self.wfile.write(head)
                left, chunk = size - len(head) - len(tail), b"x" * 2**20
                while left > 0:
                    self.wfile.write(chunk[:left])
                    left -= len(chunk)
                self.wfile.write(tail)
            elif self.path.startswith("/history/") and mode == "trickle":
                self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                for _ in range(2**20):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(args.trickle_every)
            elif self.path.startswith("/history/"):
                self._json(finished("job0"))
            elif self.path.startswith("/view"):
                size = int(args.view_mb * 2**20)
                self.send_response(200)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                chunk = b"\0" * 2**20
                for start in range(0, size, len(chunk)):
                    self.wfile.write(chunk[: size - start])
            else:
                self._json({"queue_running": [], "queue_pending": []} if self.path == "/queue" else {})

        def log_message(self, *a):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def run_case(mode: str, args, folder: Path) -> dict:
    httpd = serve(mode, args)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    (folder / "p.png").write_bytes(b"p")
    (folder / "v.mp4").write_bytes(b"v")
    (folder / "wf.json").write_text(json.dumps(WORKFLOW))
    out = folder / f"out_{mode}"
    cmd = [sys.executable, "-c", CHILD, str(args.script), "--server", url, "--workflow", str(folder / "wf.json"),
           "--pair", str(folder / "p.png"), str(folder / "v.mp4"), "--download", str(out)]
    if mode == "trickle":
        cmd += ["--timeout", str(args.trickle_timeout)]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.give_up)
        seconds, finished, err = time.monotonic() - start, True, done.stderr
    except subprocess.TimeoutExpired as timeout:
        seconds, finished = time.monotonic() - start, False
        err = timeout.stderr.decode() if isinstance(timeout.stderr, bytes) else (timeout.stderr or "")
    finally:
        httpd.shutdown()
        httpd.server_close()
    rss = [int(line.split()[1]) for line in err.splitlines() if line.startswith("MAXRSS_KB")]
    lines = [line for line in err.splitlines() if line and not line.startswith("MAXRSS_KB")]
    written = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix == ".mp4") \
        if out.exists() else 0
    return {"case": mode, "seconds": round(seconds, 2), "finished": finished,
            "peak_rss_mb": round(rss[0] / 1024, 1) if rss else None, "downloaded_mb": round(written / 2**20, 1),
            "message": lines[-1][:300] if lines else ""}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", type=Path, default=ROOT / "scripts" / "queue_batch.py")
    parser.add_argument("--view-mb", type=float, default=1536)
    parser.add_argument("--history-mb", type=float, default=300)
    parser.add_argument("--trickle-every", type=float, default=2.0)
    parser.add_argument("--trickle-timeout", type=float, default=5.0)
    parser.add_argument("--give-up", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "queue_batch.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("download", "huge_history", "trickle"):
            results.append(run_case(mode, args, Path(tmp)))
            print(json.dumps(results[-1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"script": str(args.script.name), "view_mb": args.view_mb,
                                    "history_mb": args.history_mb, "trickle_every_s": args.trickle_every,
                                    "trickle_timeout_s": args.trickle_timeout, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
