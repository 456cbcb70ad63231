"""HTTP requests with an overall deadline, a size cap and a stop flag (``http.client``, standard library only).

Every socket wait is cut into slices of at most :data:`SLICE` seconds: before each slice the monotonic clock is
checked against the request's deadline and the stop flag is read, so a server that trickles its reply (one byte
every few seconds) cannot stretch a request past its deadline, and Ctrl-C is honoured within a slice. A reply
body is read in chunks and refused as soon as it exceeds the cap (a declared ``Content-Length`` over the cap is
refused before reading); downloads stream into an open file instead of memory.
"""
from __future__ import annotations

import http.client
import math
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .errors import ComfyError, ReplyTooBig, ServerDown, Stopped, clean
from .replies import explain

SLICE = 0.25             # seconds one socket wait may last before the deadline and the stop flag are checked
CHUNK = 256 * 1024       # bytes per read or write
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an HTTP error reply kept for its message
SERVER_TROUBLE = {502, 503, 504}  # HTTP statuses that mean the server (or the proxy before it) is down


class _Expired(Exception):
    """The request's deadline passed."""


class _Bounded:
    """Socket mixin: every wait ends by ``deadline`` (monotonic seconds), and ``stop`` (a threading.Event) is
    checked at least every :data:`SLICE` seconds."""

    deadline = math.inf
    stop: threading.Event | None = None

    def _slice(self) -> float:
        if self.stop is not None and self.stop.is_set():
            raise Stopped()
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Expired()
        return min(left, SLICE)

    def _bounded(self, operation, *args):
        while True:
            self.settimeout(self._slice())
            try:
                return operation(*args)
            except TimeoutError:  # this slice passed without data: check the deadline and the stop flag again
                continue

    def recv_into(self, *args):
        return self._bounded(super().recv_into, *args)

    def recv(self, *args):
        return self._bounded(super().recv, *args)

    def send(self, *args):
        return self._bounded(super().send, *args)

    def sendall(self, data, flags=0):
        view = memoryview(data).cast("B")
        while view:
            sent = self.send(view[:CHUNK], flags)
            view = view[sent:]


class _Socket(_Bounded, socket.socket):
    pass


class _SSLSocket(_Bounded, ssl.SSLSocket):
    pass


def _connect(host: str, port: int, deadline: float, stop) -> _Socket:
    """A TCP connection to ``host:port`` that honours ``deadline``; the last connection error is raised."""
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = _Socket(family, kind, proto)
        sock.deadline, sock.stop = deadline, stop
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:
            error = err
            sock.close()
    raise error


@dataclass(frozen=True)
class Server:
    """A server address, checked: ``http`` or ``https``, a host, an optional port and base path."""

    url: str
    scheme: str
    host: str
    port: int
    base: str

    @classmethod
    def parse(cls, url: str) -> "Server":
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ComfyError(f"--server {url!r} is not an http:// or https:// address; give one such as "
                             "http://127.0.0.1:8188")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ComfyError(f"--server {url!r} has an invalid port; give one such as http://127.0.0.1:8188") from None
        return cls(f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}", parts.scheme, parts.hostname, port,
                   parts.path.rstrip("/"))

    @property
    def short(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Body:
    """A request body sent in chunks: ``parts`` are bytes or file paths (read as they are sent)."""

    parts: tuple

    def length(self) -> int:
        return sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self.parts)

    def chunks(self):
        for part in self.parts:
            if isinstance(part, Path):
                yield from _file_chunks(part)
            else:
                yield part


def _file_chunks(path: Path):
    """A local file in chunks; a read error is the user's to fix (ComfyError), not the server's."""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                yield chunk
    except OSError as err:
        raise ComfyError(f"cannot read {path} ({err.strerror or err})") from None


def _open(server: Server, deadline: float, stop) -> http.client.HTTPConnection:
    sock = _connect(server.host, server.port, deadline, stop)
    if server.scheme == "https":
        context = ssl.create_default_context()
        context.sslsocket_class = _SSLSocket
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        wrapped = context.wrap_socket(sock, server_hostname=server.host)
        wrapped.deadline, wrapped.stop = deadline, stop
        sock = wrapped
        conn = http.client.HTTPSConnection(server.host, server.port, context=context)
    else:
        conn = http.client.HTTPConnection(server.host, server.port)
    conn.sock = sock
    return conn


def request(server: Server, method: str, path: str, *, body: Body | None = None, headers: dict | None = None,
            timeout: float, max_bytes: int | None, stop=None, sink=None, timeout_option: str = "--timeout",
            cap_option: str = "--max-reply-mb"):
    """``method path`` on ``server``; the reply body (bytes), or its length when it was written to ``sink`` (an
    open binary file).

    The whole request (connect, send, every read) ends within ``timeout`` seconds; a body over ``max_bytes``
    (None: no cap) is refused. Raises :class:`ServerDown` when the server cannot be reached, drops the connection,
    misses the deadline or answers 502/503/504; :class:`ComfyError` for any other HTTP error or a reply over the
    cap; :class:`Stopped` when ``stop`` is set.
    """
    what = f"{method} {path}"
    deadline = time.monotonic() + timeout
    received = [0, None]  # bytes read so far, declared length
    conn = None
    try:
        conn = _open(server, deadline, stop)
        conn.putrequest(method, server.base + path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(body.length()))
        conn.endheaders()
        for chunk in body.chunks() if body is not None else ():
            conn.send(chunk)
        reply = conn.getresponse()
        if not 200 <= reply.status < 300:
            detail = _read(reply, ERROR_BODY_LIMIT, None, received, truncate=True)
            raise _http_error(what, reply.status, detail)
        return _read(reply, max_bytes, sink, received)
    except ReplyTooBig as err:
        raise ReplyTooBig(f"{what}: {err} (raise {cap_option} if this reply is expected)") from None
    except _Expired:
        got = f" (got {received[0]} of {received[1]} bytes)" if received[1] is not None else (
            f" (got {received[0]} bytes)" if received[0] else "")
        raise ServerDown(f"{what}: no complete reply from {server.short} within {timeout:g} s{got}; the server is "
                         f"stuck or too slow (raise {timeout_option} if it is just slow)") from None
    except ConnectionRefusedError:
        raise ServerDown(f"cannot reach ComfyUI at {server.url} (connection refused); start it or check "
                         "--server") from None
    except socket.gaierror as err:
        raise ServerDown(f"cannot find the host of {server.url} ({clean(err)}); check --server") from None
    except http.client.IncompleteRead as err:
        raise ServerDown(f"{what}: {server.short} closed the connection after {len(err.partial) + received[0]} "
                         "bytes of the reply") from None
    except (http.client.HTTPException, OSError) as err:
        raise ServerDown(f"{what}: the connection to {server.short} failed ({clean(err) or type(err).__name__})") \
            from None
    except ValueError as err:  # http.client refuses a malformed request line or header
        raise ComfyError(f"{what}: cannot send this request ({clean(err)})") from None
    finally:
        if conn is not None:
            conn.close()


def _read(reply, max_bytes: int | None, sink, received: list, truncate: bool = False):
    """The body of ``reply`` in chunks: into ``sink`` (returns the length) or into memory (returns bytes)."""
    declared = reply.getheader("Content-Length")
    if declared is not None and declared.strip().isdigit():
        received[1] = int(declared)
        if max_bytes is not None and received[1] > max_bytes and not truncate:
            raise _too_big(reply, received[1], max_bytes)
    kept = []
    while chunk := reply.read1(CHUNK):
        received[0] += len(chunk)
        if max_bytes is not None and received[0] > max_bytes:
            if truncate:
                kept.append(chunk[: max(0, max_bytes - (received[0] - len(chunk)))])
                break
            raise _too_big(reply, received[0], max_bytes, at_least=True)
        if sink is not None:
            try:
                sink.write(chunk)
            except OSError as err:  # disk full, folder gone: the user's to fix, not the server's
                raise ComfyError(f"cannot write the download ({err.strerror or err})") from None
        else:
            kept.append(chunk)
    return received[0] if sink is not None else b"".join(kept)


def _too_big(reply, size: int, cap: int, at_least: bool = False) -> ReplyTooBig:
    more = "more than " if at_least else ""
    return ReplyTooBig(f"the reply is {more}{_mb(size)}, over the {_mb(cap)} cap")


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB" if size >= 2**20 / 10 else f"{size} bytes"


def _http_error(what: str, status: int, detail: bytes) -> ComfyError:
    kind = ServerDown if status in SERVER_TROUBLE else ComfyError
    return kind(f"{what} -> HTTP {status}: {explain(detail.decode('utf-8', 'replace'))}")
