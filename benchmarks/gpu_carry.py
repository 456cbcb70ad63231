"""Make ``.gpu-carry/`` (git-ignored): what ``benchmarks/gpu_proof.py`` needs on the GPU machine beside the working
tree, which the device command names in its ``carry`` (see docs/gpu_proof.md).

  fixtures/  the reference-fixture files the gpu-marked fidelity tests read, copied from a fixture root
             (``--fixtures``; default STEADYDANCER_FIXTURES, else ../shared/fixtures beside the checkout)
  wheels/    with ``--download``: the small wheels the machine lacks (``benchmarks/gpu/carry.py`` WHEELS), fetched
             with ``pip download`` for the machine's Python and platform; ``--wheel FILE`` adds a wheel you have

Lists every file with its size and fails (exit 2) when the folder is over the limit that leaves room for the tree.

    python benchmarks/gpu_carry.py [--fixtures DIR] [--download] [--wheel FILE ...] [--dest .gpu-carry]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
import carry  # noqa: E402

MIB = 1 << 20


def default_fixtures() -> Path:
    env = os.environ.get("STEADYDANCER_FIXTURES")
    return Path(env) if env else REPO.parent / "shared" / "fixtures"


def copy_fixtures(source: Path, dest: Path) -> list[str]:
    """Copy FIXTURE_FILES from ``source`` to ``dest`` (same relative paths). Returns the files missing there."""
    missing = []
    for name in carry.FIXTURE_FILES:
        src = source / name
        if not src.is_file():
            missing.append(name)
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    return missing


def download_wheels(dest: Path) -> int:
    platforms = [x for p in carry.DEVICE_PLATFORMS for x in ("--platform", p)]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           carry.DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(dest), *carry.WHEELS]
    print(" ".join(["python", *cmd[1:]]))
    return subprocess.run(cmd).returncode


def listing(root: Path) -> tuple[list[str], int]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    return [f"{p.stat().st_size / MIB:8.2f} MiB  {p.relative_to(root)}" for p in files], total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", type=Path, default=None, help="fixture root to copy from")
    p.add_argument("--download", action="store_true", help=f"pip download {' '.join(carry.WHEELS)}")
    p.add_argument("--wheel", action="append", type=Path, default=[], help="a wheel file to carry")
    p.add_argument("--dest", type=Path, default=REPO / carry.CARRY_DIR, help="the carry folder")
    args = p.parse_args(argv)
    source = args.fixtures or default_fixtures()
    if not source.is_dir():
        print(f"gpu_carry: fixture root {source} not found; pass --fixtures DIR (the official reference fixtures)",
              file=sys.stderr)
        return 2
    missing = copy_fixtures(source, args.dest / carry.FIXTURES_SUBDIR)
    if missing:
        print(f"gpu_carry: {source} lacks {', '.join(missing)}; the gpu fidelity tests would fail", file=sys.stderr)
        return 2
    wheels = args.dest / carry.WHEELS_SUBDIR
    for wheel in args.wheel:
        if wheel.suffix != ".whl" or not wheel.is_file():
            print(f"gpu_carry: {wheel} is not a wheel file", file=sys.stderr)
            return 2
        wheels.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel, wheels / wheel.name)
    if args.download:
        wheels.mkdir(parents=True, exist_ok=True)
        if download_wheels(wheels) != 0:
            print("gpu_carry: pip download failed (is a package index reachable?)", file=sys.stderr)
            return 2
    lines, total = listing(args.dest)
    print("\n".join(lines))
    print(f"{total / MIB:8.2f} MiB in {args.dest} (limit {carry.CARRY_LIMIT_MIB} MiB)")
    if total > carry.CARRY_LIMIT_MIB * MIB:
        print(f"gpu_carry: {args.dest} is over {carry.CARRY_LIMIT_MIB} MiB: the device would refuse the tree",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
