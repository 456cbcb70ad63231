"""queue_batch's command-line options.

========================================================================================================
THE ONE PLACE queue_batch's options are defined (name, type, default, help): ``OPTIONS`` below. The parser,
``--help`` and the option list in docs/batch.md are built from it (a test checks the page lists them all).
========================================================================================================
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "api" / "steadydancer_basic_dance.json"
MAX_SEED = 2**64 - 1


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds or MB, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _size_or_zero(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _positive(text)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**64-1, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


@dataclass(frozen=True)
class Option:
    flag: str
    kwargs: dict


OPTIONS = (
    Option("--server", dict(action="append", metavar="URL", help=(
        f"ComfyUI address (default {DEFAULT_SERVER}); repeat it to spread the pairs over several servers: each "
        "runs one pair at a time, and the next pair goes to the first free one"))),
    Option("--workflow", dict(metavar="FILE", default=str(DEFAULT_WORKFLOW), help=(
        "API-format workflow JSON (ComfyUI's Export (API)) with one Load Image and one Load Video node "
        "(default workflows/api/steadydancer_basic_dance.json)"))),
    Option("--pair", dict(nargs=2, action="append", metavar=("PHOTO", "VIDEO"), help=(
        "a photo and its driving video; repeat it for more pairs"))),
    Option("--pairs", dict(metavar="FILE.csv", help=(
        "csv file with one photo,video[,prompt] per line, paths relative to the csv; put a prompt that contains "
        'commas in double quotes: me.png,dance.mp4,"a woman, dancing"'))),
    Option("--prompt", dict(metavar="TEXT", help="prompt for every pair without its own (default: the workflow's)")),
    Option("--seed", dict(type=_seed, metavar="N", help=(
        "sampler seed for every pair, 0 to 2**64-1 (default: the workflow's)"))),
    Option("--prefix", dict(default="steadydancer/batch", help=(
        "SaveVideo file name prefix; pair N saves as PREFIX_NNN (default steadydancer/batch)"))),
    Option("--download", dict(metavar="FOLDER", help=(
        "folder to copy the finished videos into, as FOLDER/<subfolder>/<filename>; an existing file is never "
        "replaced (the download gets a numeric suffix: name-1.mp4, ...), and a name from the server that would "
        "land outside this folder fails that pair. The batch ledger is kept here too"))),
    Option("--ledger", dict(metavar="FILE", help=(
        "the batch's ledger (JSON lines): a rerun of the same command skips the pairs it lists as done, and picks "
        "up the jobs still running on a server (default FOLDER/queue_batch_ledger.jsonl with --download, none "
        "without)"))),
    Option("--timeout", dict(type=_positive, default=60.0, metavar="SECONDS", help=(
        "the most one API request may take, from connecting to the last byte of the reply (default 60)"))),
    Option("--transfer-timeout", dict(type=_positive, default=600.0, metavar="SECONDS", help=(
        "the most one upload or download may take (default 600)"))),
    Option("--max-reply-mb", dict(type=_positive, default=8.0, metavar="MB", help=(
        "largest JSON reply accepted from a server (default 8)"))),
    Option("--max-download-mb", dict(type=_size_or_zero, default=0.0, metavar="MB", help=(
        "largest video accepted for download; 0: no limit (default 0)"))),
    Option("--poll", dict(type=_positive, default=1.0, metavar="SECONDS", help=(
        "seconds between /history checks while a job runs (default 1)"))),
    Option("--max-server-failures", dict(type=_count, default=2, metavar="N", help=(
        "stop using a server after N failures in a row (unreachable, connection dropped, no reply in time, job "
        "forgotten); its pair is retried once on another server (default 2)"))),
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        print(f"error: {message}; see --help", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="queue_batch.py", description=(
        "Queue SteadyDancer photo/video pairs through ComfyUI's HTTP API, on one or several servers; a rerun "
        "resumes from the ledger. Exit status: 0 when every pair produced a video, 1 when some failed, 2 when "
        "the batch could not start or go on (an option, a file, no server, the ledger), 130 after Ctrl-C."))
    for option in OPTIONS:
        parser.add_argument(option.flag, **option.kwargs)
    return parser


def options_markdown() -> str:
    """The options as a Markdown table (docs/batch.md holds a copy; a test keeps the two equal)."""
    rows = ["| option | what it does |", "|---|---|"]
    for action in build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        metavar = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar or ()) or \
            action.dest.upper()
        rows.append(f"| `{action.option_strings[-1]} {metavar}` | {action.help.replace('|', '/')} |")
    return "\n".join(rows) + "\n"
