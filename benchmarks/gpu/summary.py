"""The GPU suite's summary: one table of every part's status and figures, read from ``gpu_<part>.json``, and
``gpu_summary.json`` beside them. Parts that left no JSON (killed by their timeout, or not run) are listed with
the exit code the suite recorded.

    python benchmarks/gpu/summary.py --parts matmul,dit,... [--rc dit=124 ...] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import RESULTS, write

RC_MEANING = {124: "timed out", 137: "killed (timeout or out of memory)", 127: "command not found"}


def rows(folder: Path, parts: list[str], codes: dict) -> list[dict]:
    table = []
    for part in parts:
        path = folder / f"gpu_{part}.json"
        code = codes.get(part)
        if code == "skip":
            table.append({"part": part, "status": "skipped: out of the suite's time budget", "seconds": None,
                          "summary": ""})
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            status = "not run" if code is None else RC_MEANING.get(int(code), f"exit code {code}, no result")
            table.append({"part": part, "status": status, "seconds": None, "summary": ""})
            continue
        table.append({"part": part, "status": data.get("status", "?"), "seconds": data.get("wall_seconds"),
                      "summary": data.get("summary", "")})
    return table


def print_table(table: list[dict]) -> None:
    width = max(len(r["part"]) for r in table)
    print(f"{'part'.ljust(width)}  {'status':<8}  {'s':>6}  figures / reason")
    for r in table:
        status = r["status"].split(":")[0]
        seconds = f"{r['seconds']:.0f}" if r["seconds"] is not None else "-"
        detail = r["summary"] if r["status"] == "ok" else "; ".join(x for x in (r["status"], r["summary"]) if x)
        print(f"{r['part'].ljust(width)}  {status:<8}  {seconds:>6}  {detail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", required=True)
    p.add_argument("--rc", action="append", default=[], metavar="PART=CODE")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--setup", default="", help="one line on how the environment was set up")
    args = p.parse_args(argv)
    codes = dict(item.split("=", 1) for item in args.rc)
    folder = Path(args.out)
    table = rows(folder, [x for x in args.parts.split(",") if x], codes)
    print_table(table)
    write(folder, "summary", {"setup": args.setup, "parts": table})
    return 0 if all(r["status"] == "ok" or r["status"].startswith("skipped") for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
