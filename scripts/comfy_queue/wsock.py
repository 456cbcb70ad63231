"""ComfyUI's websocket through ``websocket-client`` (optional), on a socket of ours that bounds each message.

``websocket-client`` reads a frame of any size into memory and waits for each piece of it with a per-read
timeout, so a server that trickles a message, or sends a huge one, would hold or swell the batch. The socket
given to it here measures every message (from its first byte until :meth:`_Watch.mark` is called after it was
received): one that takes longer than ``limit_s`` or grows past ``cap`` bytes ends the connection (the caller
then polls /history), and the stop flag ends it at once.
"""
from __future__ import annotations

import socket
import ssl
import time

from .errors import Stopped
from .transport import Server


class _Watch:
    """Socket mixin: see the module's docstring."""

    cap = 8 * 2**20
    limit_s = 60.0
    stop = None
    got = 0
    since = 0.0

    def mark(self) -> None:
        """A whole message was received: the next one is measured from its first byte."""
        self.got = 0

    def recv(self, *args):
        if self.stop is not None and self.stop.is_set():
            raise Stopped()
        if self.got and time.monotonic() - self.since > self.limit_s:
            raise OSError(f"a websocket message took more than {self.limit_s:g} s to arrive")
        data = super().recv(*args)
        if not self.got:
            self.since = time.monotonic()
        self.got += len(data)
        if self.got > self.cap:
            raise OSError(f"a websocket message is over the {self.cap / 2**20:.1f} MB cap")
        return data


class _WatchedSocket(_Watch, socket.socket):
    pass


class _WatchedSSLSocket(_Watch, ssl.SSLSocket):
    pass


def open_websocket(websocket, server: Server, client_id: str, timeout: float, cap: int, stop):
    """A connected ``websocket.WebSocket`` for ComfyUI's ``/ws?clientId=...`` on ``server``; the handshake and
    each later message must arrive within ``timeout`` seconds and ``cap`` bytes. Raises OSError or
    ``websocket.WebSocketException`` when it cannot connect."""
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    sock = _WatchedSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
    if server.scheme == "https":
        context = ssl.create_default_context()
        context.sslsocket_class = _WatchedSSLSocket
        sock = context.wrap_socket(sock, server_hostname=server.host)
    sock.cap, sock.limit_s, sock.stop = cap, timeout, stop
    sock.settimeout(timeout)
    url = "ws" + server.url[len("http"):] + f"/ws?clientId={client_id}"  # http -> ws, https -> wss
    try:
        ws = websocket.create_connection(url, timeout=timeout, socket=sock, redirect_limit=0)
    except BaseException:
        sock.close()
        raise
    sock.mark()
    return ws
