"""The CLI's arguments, derived from the option tables: every option is ``--kebab-case`` of its row's name, with the
row's default, range and help (``--help`` shows both), and is checked by the row (a bad value is a one-line error
naming the option). Only the file arguments (inputs, output, model files) are declared here.
"""
from __future__ import annotations

import argparse
import logging
import re

from .option import Option, OptionError, OptionTable
from .option_tables import (ALIGN, EXTRACT, LOADER, OUTPUT, PARALLEL, PHOTO, QUALITY, SAMPLER, TABLES,
                            VAE_TILING)
from . import WAN_FPS

log = logging.getLogger("steadydancer")

ATTENTION_PACKAGES = {"flash-attn": ("flash_attn", "flash-attn"), "sageattention": ("sageattention", "sageattention")}
PROG = "python -m steadydancer_core.cli"
# old spellings of file arguments, accepted for one version with a deprecation line: old -> new
DEPRECATED_FLAGS = {"--clip": "--clip-vision"}


class CLIError(ValueError):
    """A problem with the command line's inputs; the message says what to change."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Deprecated(argparse.Action):
    """Stores the value under the new name and says once that the old spelling goes away."""

    def __call__(self, parser, namespace, values, option_string=None):
        new = DEPRECATED_FLAGS[option_string]
        log.warning("%s is deprecated and will be removed in the next version; use %s", option_string, new)
        setattr(namespace, self.dest, values)


def _value_type(row: Option):
    """argparse ``type`` of a row: its check, with the row's message as argparse's error."""
    def parse(text: str):
        try:
            return row.check(text)
        except OptionError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    parse.__name__ = row.name      # argparse names the type in some messages
    return parse


def _help(row: Option) -> str:
    default = row.default if row.default != "" else '""'
    zero = f"; 0 = {row.zero}" if row.zero and "0 =" not in row.help else ""
    accepts = "" if row.kind in ("choice", "bool", "text") and not row.rule_text else f"{row.range_text()}{zero}; "
    return f"{row.help.rstrip('.')} ({accepts}default: {default})".replace("%", "%%")


def add_options(group, table: OptionTable) -> None:
    """One argument per row of ``table`` shown on the CLI."""
    for row in table.shown("cli"):
        flags = [row.flag]
        if row.kind == "bool":
            group.add_argument(*flags, dest=row.name, action=argparse.BooleanOptionalAction, default=row.default,
                               help=_help(row))
            continue
        extra = {"choices": row.choices} if row.kind == "choice" else {"metavar": row.name.upper()}
        group.add_argument(*flags, dest=row.name, type=_value_type(row), default=row.default, help=_help(row),
                           **extra)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=(
        "SteadyDancer: animate a photo with the motion of a driving video (the first frame is the photo). Every "
        "option has the name and default of the node widget it matches."))
    io = p.add_argument_group("inputs and output")
    io.add_argument("--photo", required=True,
                    help="the photo to animate (png/jpg/webp/bmp; transparency is composited on --background)")
    src = io.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", help="driving dance video (mp4/webm/mov/mkv/gif)")
    src.add_argument("--pose-dir", help="aligned pose frames: DIR/positive/* and DIR/negative/* (or images in DIR); "
                                        f"played at {WAN_FPS:g} fps unless --fps is given")
    io.add_argument("--out", required=True, help="output .mp4 (H.264); written beside, renamed when complete")
    io.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out (only once the new video is complete); without it, refused")
    add_options(io, OUTPUT)
    add_options(io, PHOTO)
    m = p.add_argument_group("model files and loading")
    m.add_argument("--models", metavar="DIR",
                   help="a ComfyUI models folder: every model file below is found there by its standard name")
    m.add_argument("--dit", help="SteadyDancer DiT (.safetensors / .gguf / official folder); overrides --models")
    m.add_argument("--vae", help="Wan 2.1 VAE; overrides --models")
    m.add_argument("--t5", help="umT5-XXL text encoder; overrides --models")
    m.add_argument("--clip-vision", dest="clip_vision", help="CLIP vision ViT-H encoder; overrides --models")
    m.add_argument("--clip", dest="clip_vision", action=_Deprecated, help=argparse.SUPPRESS)
    m.add_argument("--tokenizer", default=None, help="umT5 tokenizer when the t5 file carries none")
    m.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]",
                   help="a LoRA with its strength (default 1; repeatable, applied in order)")
    add_options(m, LOADER)
    add_options(p.add_argument_group("several GPUs (under torchrun --nproc_per_node N)"), PARALLEL)
    e = p.add_argument_group("poses (with --video)")
    e.add_argument("--detector", help="YOLOX person detector (ONNX); overrides --models")
    e.add_argument("--pose-model", help="DWPose whole-body model (ONNX); overrides --models")
    add_options(e, EXTRACT)
    add_options(e, ALIGN)
    add_options(p.add_argument_group("generation"), SAMPLER)
    add_options(p.add_argument_group("VAE tiling"), VAE_TILING)
    add_options(p.add_argument_group("quality report"), QUALITY)
    return p


_NAMES = {row.name: row.flag for table in TABLES for row in table.shown("cli")}


def flagged(text: str) -> str:
    """``text`` with option names written as CLI flags (``segment_overlap`` -> ``--segment-overlap``): every name
    with an underscore, and the first word (messages start with the option they are about)."""
    parts = re.split(r"(\W+)", text)
    return "".join(_NAMES[w] if w in _NAMES and ("_" in w or i == 0) else w for i, w in enumerate(parts))


def option_values(args, table: OptionTable) -> dict:
    """{name: value} of ``table``'s CLI options from parsed ``args``."""
    return {row.name: getattr(args, row.name) for row in table.shown("cli")}
