"""Put the quality reports of several runs side by side:

    python -m steadydancer_core.quality a.quality.json b.quality.json --labels "cache off" "cache on" --out cmp

prints the Markdown table and writes ``cmp.md`` and ``cmp.png`` (never over existing files). Errors are one line
(exit code 2)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..safe_write import write_beside
from .compare import compare_reports
from .files import save_png
from .result import QualityReport


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None) -> int:
    p = _Parser(prog="python -m steadydancer_core.quality",
                description="Compare quality reports (the .quality.json files written beside videos).")
    p.add_argument("reports", nargs="+", type=Path, help="report JSON files")
    p.add_argument("--labels", nargs="+", help="a name per report (default: each report's label or file name)")
    p.add_argument("--out", type=Path, help="write OUT.md (the table) and OUT.png (the curves)")
    args = p.parse_args(argv)
    try:
        reports = []
        for path in args.reports:
            report = QualityReport.from_json(path.read_text())
            report.label = report.label or path.name.removesuffix(".quality.json")
            reports.append(report)
        comparison = compare_reports(reports, args.labels)
        outputs = (args.out.with_name(args.out.name + ".md"), args.out.with_name(args.out.name + ".png")) \
            if args.out else ()
        for path in outputs:
            if path.exists():
                raise FileExistsError(f"{path} exists; choose another --out")
    except (OSError, ValueError) as err:
        print(f"{p.prog}: error: {err}", file=sys.stderr)
        return 2
    print(comparison.table)
    if outputs:
        try:      # through a temporary file, never over a file that appeared meanwhile
            write_beside(outputs[0], lambda tmp: tmp.write_text(comparison.table + "\n"))
            write_beside(outputs[1], lambda tmp: save_png(comparison.plot(), tmp))
        except OSError as err:
            print(f"{p.prog}: error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {outputs[0]} and {outputs[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
