"""A stand-in ComfyUI HTTP server for the queue_batch tests, on 127.0.0.1 and an ephemeral port, in a thread.

It answers POST /upload/image, POST /prompt, GET /queue, GET /history/ID, GET /view and GET /object_info/X. Each
POST /prompt takes the next scenario (a dict; an empty one when none is left):

- ``{}``: the job finishes after ``job_polls`` polls of /history (or ``job_seconds`` after it was queued) and
  lists one video, ``<prefix>_00001_.mp4`` in the prefix's folder, whose bytes name this server and the prefix;
- ``{"outputs": [item, ...]}``: lists these items instead (``files`` maps (subfolder, filename) to /view bytes);
- ``{"forget": True}``: never in /queue or /history (as after a restart);
- ``{"prompt_reply": text}``: POST /prompt answers that text;
- ``{"history": payload}``: GET /history/ID answers ``payload`` (any JSON value) once the job is finished;
- ``{"error": text}``: the job ends in an execution error whose exception message is ``text``;
- ``{"die": True}``: the server dies (stops listening) when the job is first polled;
- ``{"ws": "trickle"}`` / ``{"ws": "huge"}``: the websocket sends a message one byte every 0.3 s / a 100 MB one.

GET /ws?clientId=ID is a websocket: when a job is queued with that client id, it is sent the job's messages
(``executing``, ``progress`` twice per value together with ``progress_state``, ``executing`` None).

``raw[path]`` replaces the answer to a request path (before the query) with a function of the request handler
that writes raw bytes to the socket: :func:`trickle` and :func:`endless` are such writers.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

GIVE_UP_POLLS = 200  # a forgotten job ends after this many polls, so a regression fails, not hangs


class FakeComfy:
    def __init__(self, scenarios=(), files=None, job_polls: int = 2, job_seconds: float = 0.0, name: str = "fake"):
        self.scenarios = list(scenarios)
        self.files = dict(files or {})
        self.job_polls, self.job_seconds, self.name = job_polls, job_seconds, name
        self.jobs = {}        # prompt id -> {"scenario", "polls", "queued_at", "prompt"}
        self.prompts = []     # the workflows queued, in order
        self.views = []       # (subfolder, filename) of each GET /view
        self.raw = {}         # request path -> writer(handler)
        self.sockets = {}     # websocket client id -> its connection's file
        self.lock = threading.Lock()
        self.httpd = None
        self.url = None
        self.dead = threading.Event()

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                writer = fake.raw.get(urlparse(self.path).path)
                if writer is not None:
                    try:
                        writer(self)
                    except OSError:  # the client gave up: the point of most raw writers
                        pass
                    return
                status, payload = fake.handle(method, self.path, body)
                data = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if urlparse(self.path).path == "/ws":
                    return fake._websocket(self)
                self._reply("GET")

            def do_POST(self):
                self._reply("POST")

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return self.url

    def die(self) -> None:
        """Stop listening (later connections are refused); safe to call from a request handler."""
        if self.dead.is_set() or self.httpd is None:
            return
        self.dead.set()

        def down():
            self.httpd.shutdown()
            self.httpd.server_close()

        thread = threading.Thread(target=down, daemon=True)
        thread.start()
        if threading.current_thread() is threading.main_thread():
            thread.join(5)

    def stop(self) -> None:
        self.die()

    # ------------------------------------------------------------------------------------------- routes
    def _finished(self, job) -> bool:
        if self.job_seconds:
            return time.monotonic() - job["queued_at"] >= self.job_seconds
        return job["polls"] >= self.job_polls

    def handle(self, method, path, body):
        url = urlparse(path)
        with self.lock:
            if method == "GET" and url.path.startswith("/object_info/"):
                return 200, {}
            if method == "POST" and url.path == "/upload/image":
                name = re.search(rb'filename="([^"]+)"', body).group(1).decode()
                return 200, {"name": name, "subfolder": "steadydancer", "type": "input"}
            if method == "POST" and url.path == "/prompt":
                return self._queue(body)
            if method == "GET" and url.path == "/queue":
                pending = [[0, pid, {}, {}, []] for pid, job in self.jobs.items()
                           if not job["scenario"].get("forget") and not self._finished(job)]
                return 200, {"queue_running": [], "queue_pending": pending}
            if method == "GET" and url.path.startswith("/history/"):
                return self._history(url.path.rsplit("/", 1)[1])
            if method == "GET" and url.path == "/view":
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                where = (query.get("subfolder", ""), query.get("filename"))
                self.views.append(where)
                data = self.files.get(where)
                return (200, data) if data is not None else (404, {"error": "no such file"})
        return 404, {"error": "unknown"}

    def _queue(self, body):
        scenario = self.scenarios.pop(0) if self.scenarios else {}
        if "prompt_reply" in scenario:
            return 200, scenario["prompt_reply"]
        request = json.loads(body)
        prompt = request["prompt"]
        prompt_id = f"job{len(self.prompts)}"
        self.prompts.append(prompt)
        self.jobs[prompt_id] = {"scenario": scenario, "polls": 0, "queued_at": time.monotonic(), "prompt": prompt}
        sock = self.sockets.get(request.get("client_id"))
        if sock is not None:
            threading.Thread(target=_send_job, args=(sock, prompt_id, scenario.get("ws")), daemon=True).start()
        return 200, {"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}}

    def _websocket(self, handler):
        key = handler.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        handler.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        handler.wfile.flush()
        client = parse_qs(urlparse(handler.path).query).get("clientId", [""])[0]
        self.sockets[client] = handler.wfile
        try:
            while head := handler.rfile.read(2):  # hold the connection until the client closes it
                size = head[1] & 0x7F
                size = struct.unpack(">H", handler.rfile.read(2))[0] if size == 126 else size
                handler.rfile.read(4 + size)      # the mask and the (masked) payload
                if head[0] & 0x0F == 8:           # a close frame: answer it, as a server does
                    handler.wfile.write(_frame(b"\x03\xe8", opcode=8))
                    break
        except OSError:
            pass
        self.sockets.pop(client, None)

    def _history(self, prompt_id):
        job = self.jobs.get(prompt_id)
        if job is None:
            return 200, {}
        job["polls"] += 1
        scenario = job["scenario"]
        if scenario.get("die"):
            self.die()
            return 503, {"error": "going down"}
        if scenario.get("forget"):
            return 200, {} if job["polls"] < GIVE_UP_POLLS else {prompt_id: {"outputs": {}}}
        if not self._finished(job):
            return 200, {}
        if "history" in scenario:
            return 200, scenario["history"]
        if "error" in scenario:
            status = {"status_str": "error", "completed": False, "messages": [
                ["execution_error", {"node_type": "SteadyDancerSampler", "exception_message": scenario["error"]}]]}
            return 200, {prompt_id: {"outputs": {}, "status": status}}
        outputs = scenario.get("outputs")
        if outputs is None:
            prefix = next((n["inputs"]["filename_prefix"] for n in job["prompt"].values()
                           if n.get("class_type") == "SaveVideo"), "out")
            folder, _, stem = prefix.rpartition("/")
            outputs = [{"filename": f"{stem}_00001_.mp4", "subfolder": folder, "type": "output"}]
            self.files[(folder, outputs[0]["filename"])] = f"{self.name}:{prefix}".encode()
        return 200, {prompt_id: {"outputs": {"9": {"images": outputs}},
                                 "status": {"status_str": "success", "completed": True, "messages": []}}}


# ------------------------------------------------------------------------------------------------ raw writers
def trickle(total: int = 2**20, every: float = 0.3, headers_too: bool = False):
    """A writer that promises ``total`` bytes and sends one byte every ``every`` seconds (the status line and
    headers too, with ``headers_too``), until the client gives up."""
    def write(handler):
        head = f"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n\r\n".encode()
        if headers_too:
            for i in range(len(head)):
                handler.wfile.write(head[i:i + 1])
                handler.wfile.flush()
                time.sleep(every)
        else:
            handler.wfile.write(head)
        for _ in range(total):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(every)
    return write


def endless(declared: int | None = None, seconds: float = 10.0):
    """A writer that streams zeros as fast as the client reads for up to ``seconds`` (declaring ``declared``
    bytes in Content-Length, or no length: the body ends when the connection closes)."""
    def write(handler):
        handler.wfile.write(b"HTTP/1.0 200 OK\r\n")
        if declared is not None:
            handler.wfile.write(f"Content-Length: {declared}\r\n".encode())
        handler.wfile.write(b"\r\n")
        chunk, end = b"0" * 65536, time.monotonic() + seconds
        while time.monotonic() < end:
            handler.wfile.write(chunk)
    return write


# ------------------------------------------------------------------------------------------------ websocket
def _frame(payload: bytes, opcode: int = 1) -> bytes:
    size = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([size]) if size < 126 else (
        bytes([126]) + struct.pack(">H", size) if size < 65536 else bytes([127]) + struct.pack(">Q", size)))
    return head + payload


def _send_job(out, prompt_id: str, hostile: str | None) -> None:
    """The messages of one job (node "3" runs in weighted units), or a hostile message."""
    try:
        if hostile == "trickle":
            out.write(bytes([0x81, 126]) + struct.pack(">H", 1000))
            for _ in range(1000):
                out.write(b" ")
                out.flush()
                time.sleep(0.3)
        elif hostile == "huge":
            out.write(bytes([0x81, 127]) + struct.pack(">Q", 100 * 2**20))
            for _ in range(100 * 16):
                out.write(b" " * 65536)
        messages = [{"type": "executing", "data": {"node": "3", "prompt_id": prompt_id}}]
        for value in (0, 5, 5, 500, 1000):
            progress = {"node": "3", "value": value, "max": 1000, "prompt_id": prompt_id}
            messages += [{"type": "progress", "data": progress}, {"type": "progress_state", "data": {
                "prompt_id": prompt_id, "nodes": {"3": {**progress, "state": "running"}}}}]
        for message in messages:
            out.write(_frame(json.dumps(message).encode()))
        out.write(_frame(b"\x00" * 1000, opcode=2))  # a preview image
        out.write(_frame(json.dumps({"type": "executing", "data": {"node": None, "prompt_id": prompt_id}}).encode()))
        out.flush()
    except OSError:
        pass
