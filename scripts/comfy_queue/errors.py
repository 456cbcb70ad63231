"""The errors a batch can meet, and the cleaning of any text that came from a server before it is printed."""
from __future__ import annotations

import re
import sys
import threading
import unicodedata

SERVER_TEXT_LIMIT = 300  # characters of server text kept in a message


class ComfyError(RuntimeError):
    """A problem with one pair or one reply: the message says what happened, in one line."""


class ServerDown(ComfyError):
    """The server could not be reached, dropped the connection, did not answer in time or forgot the job: the pair
    may succeed on another server."""


class ReplyTooBig(ComfyError):
    """A reply over its size cap."""


class Stopped(Exception):
    """The batch is stopping (Ctrl-C): the current step was abandoned, nothing was left half-written."""


# ESC sequences: CSI (ESC [ ... final), OSC / DCS / PM / APC / SOS strings up to BEL or ST, two-byte escapes;
# then the 8-bit CSI / OSC introducers.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b[\]PX^_][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|[\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?")


def clean(text, limit: int = SERVER_TEXT_LIMIT, keep_spaces: bool = False) -> str:
    """``text`` made safe to print on one line: terminal escape sequences removed, every other control or format
    character (bidi overrides, zero-width marks, line separators) made a space, runs of white space collapsed
    (unless ``keep_spaces``: a table's alignment), and at most ``limit`` characters kept (an ellipsis marks a
    cut)."""
    text = str(text)[: limit * 8 + 64]  # bound the work on a huge text before the per-character pass
    text = _ESCAPES.sub("", text)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch for ch in text)
    text = text.rstrip() if keep_spaces else " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


class Console:
    """Thread-safe printing of whole lines, each cleaned with :func:`clean` (nothing from a server reaches the
    terminal raw)."""

    LINE_LIMIT = 2000

    def __init__(self):
        self._lock = threading.Lock()

    def say(self, text: str, error: bool = False) -> None:
        line = clean(text, self.LINE_LIMIT, keep_spaces=True)
        with self._lock:
            stream = sys.stderr if error else sys.stdout
            print(line, file=stream, flush=True)
