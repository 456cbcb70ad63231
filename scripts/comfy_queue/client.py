"""A ComfyUI HTTP client whose every request is bounded (deadline, size cap, stop flag) and whose every reply is
checked before use (see ``transport.py`` and ``replies.py``)."""
from __future__ import annotations

import json
import mimetypes
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import replies
from .errors import ComfyError, ServerDown, Stopped, clean
from .progress import follow
from .transport import Body, Server, request
from .wsock import open_websocket

MB = 2**20
QUIET_CHECK = 5.0  # seconds without a websocket message before the job is looked for in /queue


@dataclass(frozen=True)
class Limits:
    """How long a request may take and how big a reply may be.

    ``timeout``: seconds for each API request (connect, send, the whole reply); ``transfer_timeout``: seconds for
    each upload or download; ``max_reply``: bytes of a JSON reply; ``max_download``: bytes of a download (None:
    no cap); ``poll``: seconds between /history polls.
    """

    timeout: float = 60.0
    transfer_timeout: float = 600.0
    max_reply: int = 8 * MB
    max_download: int | None = None
    poll: float = 1.0

    def __post_init__(self):
        for name in ("timeout", "transfer_timeout", "poll"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0, got {getattr(self, name)}")
        if self.max_reply < 1024 or (self.max_download is not None and self.max_download < 1):
            raise ValueError("the size caps must be at least 1 KB")


class Client:
    """One ComfyUI server. ``stop`` (a threading.Event) abandons any request within a fraction of a second."""

    def __init__(self, server: Server | str, limits: Limits = Limits(), stop: threading.Event | None = None):
        self.server = server if isinstance(server, Server) else Server.parse(server)
        self.limits = limits
        self.stop = stop
        self.client_id = uuid.uuid4().hex
        self._ws = None

    def _call(self, method: str, path: str, body: Body | None = None, headers: dict | None = None,
              stoppable: bool = True) -> dict:
        raw = request(self.server, method, path, body=body, headers=headers, timeout=self.limits.timeout,
                      max_bytes=self.limits.max_reply, stop=self.stop if stoppable else None)
        return replies.parse_object(f"{method} {path}", raw or b"{}")

    def get_json(self, path: str) -> dict:
        return self._call("GET", path)

    def post_json(self, path: str, payload: dict, stoppable: bool = True) -> dict:
        return self._call("POST", path, Body((json.dumps(payload).encode(),)), {"Content-Type": "application/json"},
                          stoppable)

    def upload(self, path: Path, subfolder: str = "steadydancer") -> str:
        """Upload an image or video into ComfyUI's input folder (streamed from disk); returns the name the loader
        nodes take. ComfyUI reuses an identical file and renames the upload next to a different one."""
        boundary = uuid.uuid4().hex
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        safe_name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        body = Body((
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{safe_name}"\r\n'
             f"Content-Type: {mime}\r\n\r\n").encode(), Path(path), b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n{subfolder}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\nfalse\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ))
        what = "POST /upload/image"
        try:
            raw = request(self.server, "POST", "/upload/image", body=body,
                          headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                          timeout=self.limits.transfer_timeout, max_bytes=self.limits.max_reply, stop=self.stop,
                          timeout_option="--transfer-timeout")
            return replies.upload_name(what, replies.parse_object(what, raw))
        except ComfyError as err:
            raise type(err)(f"uploading {path}: {err}") from None

    def queue(self, prompt: dict) -> str:
        """Queue the workflow; returns its prompt id. Not abandoned on a stop (it ends within ``timeout``), so a
        job the server took is always known to the caller, and the ledger."""
        reply = self.post_json("/prompt", {"prompt": prompt, "client_id": self.client_id}, stoppable=False)
        return replies.prompt_id("POST /prompt", reply)

    def history(self, prompt_id: str) -> replies.Entry | None:
        path = f"/history/{urllib.parse.quote(prompt_id, safe='')}"
        return replies.history_entry(f"GET {path}", self.get_json(path), prompt_id)

    def queued(self, prompt_id: str) -> bool:
        """Whether ``prompt_id`` is running or waiting in ComfyUI's queue (GET /queue)."""
        return prompt_id in replies.queued_ids("GET /queue", self.get_json("/queue"))

    def known(self, prompt_id: str) -> bool:
        """Whether ComfyUI still knows the job: queued, running or in /history (history read last, so a job
        finishing between the two requests is still found)."""
        return self.queued(prompt_id) or self.history(prompt_id) is not None

    def view(self, item: dict, sink) -> int:
        """Stream one output file (GET /view) into the open binary file ``sink``; returns its size."""
        query = urllib.parse.urlencode({k: str(item.get(k, "")) for k in ("filename", "subfolder", "type")})
        return request(self.server, "GET", f"/view?{query}", timeout=self.limits.transfer_timeout,
                       max_bytes=self.limits.max_download, stop=self.stop, sink=sink,
                       timeout_option="--transfer-timeout", cap_option="--max-download-mb")

    def _pause(self, seconds: float) -> None:
        if self.stop is not None:
            if self.stop.wait(seconds):
                raise Stopped()
        else:
            time.sleep(seconds)

    def wait(self, prompt_id: str, log=print, titles: dict | None = None) -> tuple[replies.Entry, dict]:
        """Follow the job (over the websocket when ``websocket-client`` is installed) until it is in /history.

        Raises :class:`ServerDown` when the server no longer knows the job (in neither /queue nor /history, e.g.
        after a restart) instead of waiting for it forever.

        Returns (history entry, run facts): ``facts`` has ``node_seconds`` (node id -> seconds from its start to the
        next node's start, as seen over the websocket), ``cached`` (node ids ComfyUI took from its cache),
        ``previews`` (binary preview frames received) and ``seconds`` (from here to the end); only ``seconds``
        without a websocket. ``titles`` (node id -> title) names the nodes in the progress lines.
        """
        start = time.monotonic()
        facts = {"node_seconds": {}, "cached": [], "previews": 0}
        self._follow_socket(prompt_id, log, facts, titles or {})
        while True:
            entry = self.history(prompt_id)
            if entry is None and not self.known(prompt_id):
                raise ServerDown(f"{self.server.short} no longer knows prompt {prompt_id}: it is in neither /queue "
                                 "nor /history (was the server restarted, or the job deleted from the queue?)")
            if entry is not None and entry.finished:
                facts["seconds"] = time.monotonic() - start
                return entry, facts
            self._pause(self.limits.poll)

    def listen(self, log=print) -> None:
        """Open the websocket (when ``websocket-client`` is installed) before a job is queued, so none of its
        messages is missed; :meth:`wait` reads it and closes it."""
        if self._ws is not None:
            return
        try:
            import websocket  # websocket-client, optional
        except ImportError:
            return
        try:
            self._ws = open_websocket(websocket, self.server, self.client_id, self.limits.timeout,
                                      self.limits.max_reply, self.stop)
        except (OSError, websocket.WebSocketException) as err:
            log(f"websocket unavailable ({clean(err, 200)}); polling /history")

    def close(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def _follow_socket(self, prompt_id: str, log, facts: dict, titles: dict) -> None:
        late = self._ws is None  # opened after the job was queued (a job picked up again): it may be over already
        self.listen(log)
        ws, self._ws = self._ws, None
        if ws is None:
            return
        try:
            if late and not self.queued(prompt_id):
                return
            follow(ws, prompt_id, log, facts, titles, still_running=lambda: self.queued(prompt_id),
                   stop=self.stop, quiet_seconds=QUIET_CHECK)
        finally:
            ws.close()
