"""The reference parts of the documentation, rendered from the code (used by ``build_docs.py``):

- ``option_tables``: every option of ``steadydancer_core.option_tables.TABLES`` (name, CLI flag, type, default,
  range, what 0 means, front ends, level, help);
- ``node_reference``: every node of the pack, read from its definition under the stand-in ComfyUI host (display
  name, description, sockets, widgets with default / range / tooltip, outputs with their tooltips);
- ``cli_reference``: every argument of ``python -m steadydancer_core.cli``, group by group, from its parser (the
  content of ``--help``, independent of the terminal's width and of the Python version's help layout);
- ``onnxruntime_gpu``: which ``onnxruntime-gpu`` build goes with which CUDA (``pose.ORT_GPU_FOR_CUDA``);
- ``public_api``: the names exported at the roots of ``steadydancer_core`` and ``pose`` (their ``__all__``).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import pose  # noqa: E402
import steadydancer_core  # noqa: E402
from steadydancer_core import cli_options  # noqa: E402
from steadydancer_core.option_tables import TABLES  # noqa: E402

# the nodes in the order a workflow uses them (others, if any, follow in the pack's order)
NODE_ORDER = ("ExtractPose", "AlignPose", "LoadSteadyDancerModel", "LoadSteadyDancerModelMultiGPU", "SteadyDancerLoRA",
              "SteadyDancerSampler", "SteadyDancerSamplerOptions", "DecodeVideo", "SteadyDancerQualityReport")
NONE_CHOICE = "None"


def cell(text) -> str:
    """``text`` as one Markdown table cell (pipes escaped, line breaks joined)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def number(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{int(value)}" if value.is_integer() and abs(value) < 1e15 else f"{value:g}"
    return str(value)


def shown_default(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""` (empty)'
    return f"`{number(value)}`"


def _table(header: tuple, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- option tables
def _range(row) -> str:
    if row.kind == "choice":
        return ", ".join(f"`{c}`" for c in row.choices)
    if row.kind in ("bool", "text"):
        return row.range_text() if row.kind == "text" else "true / false"
    text = row.range_text().removeprefix("an integer ").removeprefix("a number ")
    return text + (f" {row.unit}" if row.unit else "")


def option_tables() -> str:
    """One table per option table, in the order of ``TABLES``, then the LoRA strength (a row of its own: the loader
    and the LoRA node show it per LoRA, the CLI as ``--lora PATH:STRENGTH``)."""
    out = []
    for title, rows in [(t.title, list(t)) for t in TABLES] + [("LoRA strength", [steadydancer_core.LORA_STRENGTH])]:
        cells = [(f"`{r.name}`", f"`{r.flag}`" if "cli" in r.fronts else "—", r.kind, shown_default(r.default),
                  _range(r), r.zero or "", ", ".join(r.fronts), r.level, r.help) for r in rows]
        out.append(f"### {title}\n\n" + _table(
            ("option", "CLI", "type", "default", "accepts", "0 means", "shown on", "level", "what it does"), cells))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- node reference
def _pack_nodes() -> tuple[dict, dict]:
    """({node type: class}, {node type: display name}) of the pack, loaded under the stand-in host with an empty
    models folder (so file lists are empty)."""
    import comfy_standin

    with tempfile.TemporaryDirectory() as tmp:
        comfy_standin.install(Path(tmp))
        try:
            pack = comfy_standin.load_pack()
            return dict(pack.NODE_CLASS_MAPPINGS), dict(pack.NODE_DISPLAY_NAME_MAPPINGS)
        finally:
            comfy_standin.uninstall()


WIDGET_KINDS = {"INT": "int", "FLOAT": "float", "STRING": "text", "BOOLEAN": "bool"}


def _widget(name: str, kind, options: dict) -> tuple:
    tooltip = options.get("tooltip", "")
    if isinstance(kind, list):
        if not kind or kind == [NONE_CHOICE]:       # a list of model files (empty here)
            what = "file" + (f" or `{NONE_CHOICE}`" if kind else "")
            return (f"`{name}`", what, shown_default(options.get("default")), "the files found", tooltip)
        return (f"`{name}`", "choice", shown_default(options.get("default", kind[0])),
                ", ".join(f"`{c}`" for c in kind), tooltip)
    if kind in ("INT", "FLOAT"):
        accepts = f"{number(options.get('min'))} .. {number(options.get('max'))}"
        if options.get("step") is not None:
            accepts += f", step {number(options['step'])}"
    else:
        accepts = "multiline text" if options.get("multiline") else ("true / false" if kind == "BOOLEAN" else "text")
    return (f"`{name}`", WIDGET_KINDS[kind], shown_default(options.get("default")), accepts, tooltip)


def _node(type_name: str, cls, display: str) -> str:
    spec = cls.INPUT_TYPES()
    sockets, widgets = [], []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
            if isinstance(kind, list) or (kind in WIDGET_KINDS and not options.get("forceInput")):
                widgets.append(_widget(name, kind, options))
            else:
                sockets.append((f"`{name}`", f"`{kind}`", "yes" if section == "required" else "optional",
                                options.get("tooltip", "")))
    names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
    tips = getattr(cls, "OUTPUT_TOOLTIPS", ()) or ()
    outputs = [(f"`{n}`", f"`{t}`", tips[i] if i < len(tips) else "")
               for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
    parts = [f"### {display}\n", f"`{type_name}`, category *{cls.CATEGORY}*. {getattr(cls, 'DESCRIPTION', '')}\n"]
    if sockets:
        parts.append("Inputs:\n\n" + _table(("input", "type", "required", "what"), sockets))
    if widgets:
        parts.append("Widgets:\n\n" + _table(("widget", "type", "default", "accepts", "what"), widgets))
    parts.append("Outputs:\n\n" + _table(("output", "type", "what"), outputs))
    return "\n".join(parts)


def node_reference() -> str:
    classes, displays = _pack_nodes()
    order = [n for n in NODE_ORDER if n in classes] + [n for n in classes if n not in NODE_ORDER]
    return "\n".join(_node(n, classes[n], displays.get(n, n)) for n in order)


# ---------------------------------------------------------------------------------------------- CLI reference
def _argument(action) -> tuple:
    flags = ", ".join(f"`{f}`" for f in action.option_strings)
    if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
        value = ""
    elif action.choices:
        value = " / ".join(f"`{c}`" for c in action.choices)
    else:
        value = f"`{action.metavar or action.dest.upper()}`"
    required = " (required)" if action.required else ""
    # older Pythons' BooleanOptionalAction appends its own default; the help already states it
    text = (action.help or "").replace(" (default: %(default)s)", "").replace("%%", "%")
    return (flags, value, text + required)


def cli_reference() -> str:
    parser = cli_options.build_parser()
    out = [f"`{cli_options.PROG} --help` lists the same arguments. {parser.description}\n"]
    for group in parser._action_groups:              # argparse keeps its groups only here
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and a.option_strings
                   and not isinstance(a, argparse._HelpAction)]
        if actions:
            rows = [_argument(a) for a in actions]
            out.append(f"**{group.title}**\n\n" + _table(("argument", "value", "what"), rows))
    return "\n".join(out)


# --------------------------------------------------------------------------------------------- onnxruntime-gpu
def onnxruntime_gpu() -> str:
    """The onnxruntime-gpu build for each CUDA major version of torch."""
    lines = [f'- torch built for CUDA {major} (`python -c "import torch; print(torch.version.cuda)"` prints '
             f'{major}.x): `pip install "onnxruntime-gpu{spec}"`' for major, spec in pose.ORT_GPU_FOR_CUDA.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------- public API
def public_api() -> str:
    """The stable names of both packages, in the order of their ``__all__``."""
    rows = [(f"`{package.__name__}`", ", ".join(f"`{n}`" for n in package.__all__))
            for package in (steadydancer_core, pose)]
    return _table(("package", "names"), rows)
