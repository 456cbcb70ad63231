"""Queue photo / driving-video pairs through one or several running ComfyUIs with an API-format SteadyDancer
workflow.

    python scripts/queue_batch.py --pair photo.png dance.mp4 --pair me.jpg tiktok.mp4
    python scripts/queue_batch.py --pairs pairs.csv --workflow workflows/api/steadydancer_24gb_fp8_distill.json \
        --server http://gpu1:8188 --server http://gpu2:8188 --download results/

pairs.csv: one ``photo,video[,prompt]`` per line (paths relative to the csv; quote a prompt that holds commas:
``me.png,dance.mp4,"a woman, dancing"``). For each pair the files are uploaded (POST /upload/image; ComfyUI keeps
any different file of the same name and renames the upload), the workflow's LoadImage / LoadVideo inputs point at
them, the prompt (SteadyDancerSampler), seed and output prefix (SaveVideo, or DecodeVideo writing the file) are set,
the job is queued (POST /prompt) and followed (one progress line per change, over the websocket when
``websocket-client`` is installed, else /history is polled), then the written videos are listed from /history and
optionally downloaded (GET /view, streamed to disk) into ``--download``, as ``DOWNLOAD/<subfolder>/<filename>``.

Several ``--server`` options spread the pairs: one worker per server, the next pair to the first free server; a
pair whose server fails (unreachable, connection dropped, no reply in time, job forgotten) is retried once on
another server, and a server is dropped after ``--max-server-failures`` such failures in a row. The ledger
(``DOWNLOAD/queue_batch_ledger.jsonl`` or ``--ledger``) records each pair's state; rerunning the same command
skips the finished pairs and picks up the jobs still running. docs/batch.md describes it all.

Safety: every request has an overall deadline and a size cap; every reply is checked (a bad one fails that pair,
the batch goes on); server text is cleaned of control characters and escape codes before it is printed. A
download never leaves ``--download`` and never replaces a file (``name-1.mp4``, ...); Ctrl-C leaves no partial
download. Python standard library only; ``websocket-client`` is optional. Exit status: 0 when every pair produced
a video, 1 when some failed, 2 when the batch could not start or go on, 130 after Ctrl-C.
"""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from comfy_queue.client import MB, Client, Limits
from comfy_queue.errors import ComfyError, Console, clean
from comfy_queue.files import download_target, save_new
from comfy_queue.ledger import DEFAULT_NAME, Ledger
from comfy_queue.options import DEFAULT_SERVER, build_parser
from comfy_queue.pairs import check_workflow, keyed, prepare, read_pairs
from comfy_queue.progress import node_titles
from comfy_queue.replies import run_failure, saved_files
from comfy_queue.scheduler import Batch, Result, run_all
from comfy_queue.transport import Server

# what other code (the tests, the workflow checks) imports from the script
__all__ = ["ComfyError", "download_target", "main", "prepare", "read_pairs", "run_failure", "save_new",
           "saved_files"]


def _load_workflow(path: str) -> dict:
    try:
        template = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ComfyError(f"cannot read --workflow {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise ComfyError(f"--workflow {path} is not JSON ({clean(err, 120)}); give an API-format workflow") from None
    check_workflow(template)
    return template


def _servers(urls: list[str] | None) -> list[Server]:
    servers = []
    for url in urls or [DEFAULT_SERVER]:
        server = Server.parse(url)
        if server.url not in [s.url for s in servers]:
            servers.append(server)
    return servers


def _limits(args) -> Limits:
    return Limits(timeout=args.timeout, transfer_timeout=args.transfer_timeout,
                  max_reply=max(1024, int(args.max_reply_mb * MB)),
                  max_download=None if args.max_download_mb == 0 else max(1, int(args.max_download_mb * MB)),
                  poll=args.poll)


def _reachable(servers: list[Server], limits: Limits, console: Console, stop) -> list[Server]:
    """The servers that answer (checked side by side); the others are named and left out."""
    answers = {}

    def check(server):
        try:
            Client(server, limits, stop).get_json("/object_info/SteadyDancerSampler")
            answers[server.url] = None
        except ComfyError as err:
            answers[server.url] = str(err)
        except Exception as err:  # a reply no check foresaw: this server is left out, the others still run
            answers[server.url] = f"unexpected {type(err).__name__}: {clean(err)}"

    threads = [threading.Thread(target=check, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    if len(servers) > 1:
        for server in servers:
            if answers.get(server.url):
                console.say(f"leaving out {server.short}: {answers[server.url]}", error=True)
    alive = [s for s in servers if answers.get(s.url, "no answer") is None]
    if not alive:
        raise ComfyError("; ".join(answers.get(s.url) or "no answer" for s in servers))
    return alive


def _short(url) -> str:
    try:
        return Server.parse(url).short if isinstance(url, str) else ""
    except ComfyError:
        return clean(url, 40)


def summary(results: dict, pairs: list) -> list[str]:
    """The summary table (pair, server, status, seconds, output) as lines."""
    rows = [("pair", "server", "status", "seconds", "output")]
    for pair in pairs:
        result = results.get(pair.index) or Result(pair, status="not run")
        seconds = "" if result.seconds is None else f"{result.seconds:.1f}"
        output = ", ".join(result.outputs) if result.outputs else result.error
        rows.append((f"{pair.index} {clean(pair.name, 50)}", clean(result.server, 40), result.status, seconds,
                     clean(output, 200)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]


def main(argv=None) -> int:
    console = Console()
    args = build_parser().parse_args(argv)
    stop = threading.Event()
    ledger = None
    try:
        try:
            rows = read_pairs(args)
            if not rows:
                raise ComfyError("give --pair PHOTO VIDEO (repeatable) or --pairs FILE.csv")
            template = _load_workflow(args.workflow)
            servers = _servers(args.server)
            limits = _limits(args)
            folder = Path(args.download) if args.download else None
            if folder is not None and folder.exists() and not folder.is_dir():
                raise ComfyError(f"--download {folder} is a file; give a folder")
            ledger = Ledger(Path(args.ledger) if args.ledger else (folder / DEFAULT_NAME if folder else None))
            pairs = keyed(rows, args.prompt, args.seed, template)
        except (ComfyError, ValueError, OSError) as err:
            console.say(f"error: {clean(err, 1000)}", error=True)
            return 2
        batch = Batch(template, node_titles(template), args.prefix, args.seed, folder, ledger, limits,
                      args.max_server_failures, console, stop)
        try:
            return _run(pairs, servers, batch)
        except OSError as err:  # the ledger could not be written (disk full, folder removed)
            console.say(f"error: {clean(err, 300)}; the batch stopped", error=True)
            return 2
    except KeyboardInterrupt:
        stop.set()
        where = f"; run the same command again to resume from {ledger.path}" if ledger and ledger.path else ""
        console.say(f"stopped by Ctrl-C{where}", error=True)
        return 130
    finally:
        if ledger is not None:
            ledger.close()


def _run(pairs: list, servers: list[Server], batch: Batch) -> int:
    results, todo = {}, []
    for pair in pairs:
        record = batch.ledger.get(pair.key)
        if record and record.get("status") == "done":
            seconds, outputs = record.get("seconds"), record.get("outputs")
            results[pair.index] = Result(pair, _short(record.get("server")), "done earlier",
                                         seconds if isinstance(seconds, (int, float)) else None,
                                         [str(o) for o in outputs] if isinstance(outputs, list) else [])
            continue
        todo.append(pair)
    batch.ledger.update_many([(p.key, {"status": "pending", "index": p.index, "photo": str(p.photo),
                                       "video": str(p.video), "prompt": p.prompt})
                              for p in todo if batch.ledger.get(p.key) is None])
    if results:
        batch.console.say(f"{len(results)} of {len(pairs)} pairs done earlier (ledger {batch.ledger.path}); "
                          f"{len(todo)} to run")
    if todo:
        try:
            alive = _reachable(servers, batch.limits, batch.console, batch.stop)
        except ComfyError as err:
            batch.console.say(f"error: {err}", error=True)
            return 2
    try:
        if todo:
            run_all(todo, alive, batch, len(pairs), results)
    finally:
        for line in summary(results, pairs):
            batch.console.say(line)
    done = sum(r.status in ("done", "done earlier") for r in results.values())
    batch.console.say(f"{done} of {len(pairs)} pairs done")
    if batch.stop.is_set():  # a worker could not go on (the ledger could not be written): said above
        return 2
    return 0 if done == len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
