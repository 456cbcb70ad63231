"""Running the batch over one or several servers: one worker thread per server takes the next pair; a pair whose
server fails (unreachable, connection dropped, deadline missed, job forgotten) is retried once on another server;
a server is dropped after ``max_failures`` such failures in a row. Each pair's state goes to the ledger."""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .client import Client, Limits
from .errors import ComfyError, Console, ServerDown, Stopped, clean
from .files import download, shown
from .ledger import Ledger
from .pairs import Pair, prepare
from .progress import describe_run
from .transport import Server

ATTEMPTS = 2  # a pair runs at most on this many servers (the first, then once elsewhere)


@dataclass
class Batch:
    """What every pair shares: the workflow (and its node titles), the prefix and seed, where downloads go, the
    ledger, the request limits, when to drop a server, where lines are printed and the stop flag."""

    template: dict
    titles: dict
    prefix: str
    seed: int | None
    download: Path | None
    ledger: Ledger
    limits: Limits
    max_failures: int
    console: Console
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class Result:
    """How a pair ended: status done / failed / stopped / done earlier."""

    pair: Pair
    server: str = ""
    status: str = "stopped"
    seconds: float | None = None
    outputs: list = field(default_factory=list)
    error: str = ""


@dataclass
class _Task:
    pair: Pair
    home: str | None = None                     # the server that holds its job from before a stop
    tried: list = field(default_factory=list)   # servers it failed on
    errors: list = field(default_factory=list)


class Board:
    """The pairs not yet taken and the servers still up; a worker takes the next pair it has not failed."""

    def __init__(self, pairs: list[Pair], servers: list[str], stop: threading.Event, homes: dict | None = None):
        self._pending = deque(_Task(p, (homes or {}).get(p.key)) for p in pairs)
        self._alive = set(servers)
        self._running = 0
        self._stop = stop
        self._cond = threading.Condition()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def take(self, server: str) -> _Task | None:
        """The next pair for ``server``: first a pair whose job it already holds, then the next pair it has not
        failed and no other live server holds; None when it has nothing left to do (or the batch stops)."""
        with self._cond:
            while not self._stop.is_set() and server in self._alive:
                mine = [t for t in self._pending if t.home == server and server not in t.tried]
                free = [t for t in self._pending if server not in t.tried and t.home not in self._alive]
                task = (mine or free or [None])[0]
                if task is not None:
                    self._pending.remove(task)
                    self._running += 1
                    return task
                if self._running == 0 and not any(t.home in self._alive for t in self._pending):
                    return None
                self._cond.wait(0.5)
            return None

    def done(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def retry(self, task: _Task, server: str, error: str) -> bool:
        """Put ``task`` back for another server; False when it has had its tries or no other server is up."""
        with self._cond:
            self._running -= 1
            task.tried.append(server)
            task.errors.append(error)
            task.home = None
            again = len(task.tried) < ATTEMPTS and any(s not in task.tried for s in self._alive)
            if again:
                self._pending.appendleft(task)
            self._cond.notify_all()
            return again

    def drop(self, server: str) -> list[_Task]:
        """Take ``server`` out; returns the pending pairs no server left can run."""
        with self._cond:
            self._alive.discard(server)
            orphans = [t for t in self._pending if all(s in t.tried for s in self._alive)]
            for task in orphans:
                self._pending.remove(task)
            self._cond.notify_all()
            return orphans

    def leftover(self) -> list[_Task]:
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
            return left


def label(pair: Pair, total: int) -> str:
    return f"[{pair.index}/{total}] {pair.name}"


def run_pair(client: Client, pair: Pair, batch: Batch, log) -> list[str]:
    """Upload, queue, follow and download one pair on ``client``'s server; returns its outputs (local paths, or
    ``output/...`` names on the server without ``--download``). A job this server took before a stop is picked
    up again instead of being queued twice."""
    record = batch.ledger.get(pair.key) or {}
    prompt_id, downloaded = None, {}
    if record.get("status") == "running" and record.get("server") == client.server.url and \
            isinstance(record.get("prompt_id"), str) and client.known(record["prompt_id"]):
        prompt_id = record["prompt_id"]
        downloaded = dict(record.get("downloaded") or {})
        log(f"picking up prompt {prompt_id}, queued before the batch stopped")
    if prompt_id is None:
        prompt = prepare(batch.template, client.upload(pair.photo), client.upload(pair.video), pair.prompt,
                         f"{batch.prefix}_{pair.index:03d}", batch.seed)
        client.listen(log)
        prompt_id = client.queue(prompt)
        batch.ledger.update(pair.key, status="running", server=client.server.url, prompt_id=prompt_id,
                            downloaded={}, error=None)
        log(f"queued {prompt_id}")
    entry, facts = client.wait(prompt_id, log, batch.titles)
    log(f"finished in {describe_run(batch.titles, facts)}")
    if entry.error:
        raise ComfyError(entry.error)
    if not entry.files:
        raise ComfyError("finished without writing a video")
    outputs = []
    for item in entry.files:
        name = shown(item)
        if batch.download is None:
            log(f"wrote output/{name}")
            outputs.append(f"output/{name}")
            continue
        if name not in downloaded:
            path = download(client, batch.download, item)
            downloaded[name] = str(path)
            batch.ledger.update(pair.key, downloaded=downloaded)
            log(f"wrote output/{name}, downloaded {path}")
        outputs.append(downloaded[name])
    return outputs


def work(server: Server, board: Board, batch: Batch, results: dict, total: int, show_server: bool) -> None:
    """One server's worker: takes pairs until none is left for it, the batch stops or the server is dropped."""
    client = Client(server, batch.limits, batch.stop)
    try:
        _work(client, board, batch, results, total, show_server)
    except Exception as err:  # the ledger cannot be written (disk full...) or a bug: stop, never hang the others
        batch.console.say(f"error: {server.short}: {type(err).__name__}: {clean(err)}; stopping the batch", True)
        batch.stop.set()
        board.wake()
    finally:
        client.close()


def _work(client: Client, board: Board, batch: Batch, results: dict, total: int, show_server: bool) -> None:
    server = client.server
    failures = 0
    while (task := board.take(server.url)) is not None:
        pair, start = task.pair, time.monotonic()
        tag = label(pair, total) + (f" @ {server.short}" if show_server else "")

        def log(text, error=False, tag=tag):
            batch.console.say(f"{tag}: {text}", error)

        def finish(status, outputs=(), error=""):
            seconds = time.monotonic() - start
            results[pair.index] = Result(pair, server.short, status, seconds, list(outputs), error)
            if status in ("done", "failed"):
                batch.ledger.update(pair.key, status=status, server=server.url, outputs=list(outputs),
                                    seconds=round(seconds, 2), error=error or None)
        try:
            outputs = run_pair(client, pair, batch, log)
        except Stopped:
            finish("stopped")
            board.done()
            return
        except ServerDown as err:
            failures += 1
            if board.retry(task, server.url, str(err)):
                log(f"{err}; retrying on another server", error=True)
                batch.ledger.update(pair.key, status="pending", error=str(err))
            else:
                reason = "; then ".join(task.errors)
                log(f"FAILED: {reason}", error=True)
                finish("failed", error=reason)
            if failures >= batch.max_failures:
                batch.console.say(f"dropping {server.short} after {failures} failures in a row: {err}", error=True)
                for orphan in board.drop(server.url):
                    _orphaned(orphan, batch, results, total)
                return
            continue
        except ComfyError as err:
            failures = 0
            log(f"FAILED: {err}", error=True)
            finish("failed", error=str(err))
        except Exception as err:  # a bug or an unforeseen reply: this pair fails, the batch goes on
            failures = 0
            log(f"FAILED: unexpected {type(err).__name__}: {clean(err)}", error=True)
            finish("failed", error=f"unexpected {type(err).__name__}: {clean(err)}")
        else:
            failures = 0
            finish("done", outputs)
        board.done()


def _orphaned(task: _Task, batch: Batch, results: dict, total: int) -> None:
    reason = "; then ".join(task.errors + ["no server left to run it on"])
    batch.console.say(f"{label(task.pair, total)}: FAILED: {reason}", error=True)
    results[task.pair.index] = Result(task.pair, "", "failed", None, [], reason)
    batch.ledger.update(task.pair.key, status="failed", error=reason)


def run_all(pairs: list[Pair], servers: list[Server], batch: Batch, total: int, results: dict) -> None:
    """Run ``pairs`` over ``servers`` (one worker each), filling ``results`` (pair index -> :class:`Result`).
    Ctrl-C sets the stop flag, waits for the workers to leave every file and the ledger consistent, then raises
    KeyboardInterrupt."""
    records = {p.key: batch.ledger.get(p.key) or {} for p in pairs}
    homes = {key: r.get("server") for key, r in records.items() if r.get("status") == "running" and r.get("prompt_id")}
    board = Board(pairs, [s.url for s in servers], batch.stop, homes)
    workers = [threading.Thread(target=work, args=(s, board, batch, results, total, len(servers) > 1),
                                daemon=True, name=f"queue_batch {s.short}") for s in servers]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            while worker.is_alive():
                worker.join(0.2)
    except KeyboardInterrupt:
        batch.stop.set()
        board.wake()
        batch.console.say("stopping: abandoning the current step on each server, no partial download is kept "
                          "(jobs already queued go on running there; Ctrl-C again quits at once)", error=True)
        for worker in workers:
            while worker.is_alive():
                worker.join(0.2)
        raise
    for task in board.leftover():  # every server dropped before these ran
        _orphaned(task, batch, results, total)
