"""Writes the generated parts of the documentation from the code, so a fact written in the code is not retyped.

A Markdown file (``README.md`` or any ``docs/*.md``) marks a generated part with a pair of comments::

    <!-- generated: model-table (scripts/build_docs.py) -->
    ...replaced by the block's text...
    <!-- end generated: model-table -->

The blocks (:data:`BLOCKS`) are rendered from the code: the model file table, the ``--models`` lookup, the
``extra_model_paths.yaml`` sections, the option tables, the node reference, the CLI's arguments and the
onnxruntime-gpu builds (``doc_reference.py``). Text outside the markers is never touched.

    python scripts/build_docs.py            # rewrite the generated parts
    python scripts/build_docs.py --check    # exit 1 if one is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import doc_reference  # noqa: E402  (scripts/doc_reference.py)
import steadydancer_core as sd  # noqa: E402
from steadydancer_core import models_folder, tiny_kit  # noqa: E402


def _yaml(text: str) -> str:
    return "```yaml\n" + text + "```\n"


def _tiny_kit_comfyui() -> str:
    """The commands that write the tiny kit, add it to ComfyUI and run a bundled workflow headless."""
    kit = "steadydancer-tiny"
    inputs = f"{kit}/input/{tiny_kit.PHOTO_FILE} {kit}/input/{tiny_kit.VIDEO_FILE}"
    return ("```bash\n"
            f"python -m steadydancer_core.tiny_kit {kit}/models --inputs {kit}/input\n"
            f"cat > {kit}/extra_model_paths.yaml <<EOF\n"
            + tiny_kit.kit_extra_model_paths(f"$PWD/{kit}/models") +
            "EOF\n"
            "python ComfyUI/main.py --cpu --listen 127.0.0.1 --port 8188 \\\n"
            f"    --extra-model-paths-config {kit}/extra_model_paths.yaml &\n"
            "python scripts/queue_batch.py --workflow workflows/api/steadydancer_24gb_fp8_distill.json \\\n"
            f"    --pair {inputs} \\\n"
            "    --download results/\n"
            "```\n")


BLOCKS = {
    # the model files: name, ComfyUI folder, size, source with its download link, what each is for
    "model-table": lambda: sd.render_model_table(notes=True),
    # what the CLI's --models DIR looks for, where, in order
    "models-lookup": models_folder.describe_lookup,
    # an extra_model_paths.yaml section for models kept outside ComfyUI's models folder
    "extra-model-paths": lambda: _yaml(sd.extra_model_paths_yaml("/path/to/my/models", "my_models")),
    # where comfyui_controlnet_aux keeps the DWPose files it downloaded (listed with models/dwpose)
    "controlnet-aux-dirs": lambda: "".join(f"- `{d}/`\n" for d in sd.CONTROLNET_AUX_DWPOSE_DIRS),
    # the section that adds the tiny kit (written to steadydancer-tiny/models) to ComfyUI
    "tiny-kit-extra-model-paths": lambda: _yaml(tiny_kit.kit_extra_model_paths("$PWD/steadydancer-tiny/models")),
    # the tiny kit added to ComfyUI and a bundled workflow queued headless
    "tiny-kit-comfyui": _tiny_kit_comfyui,
    # every option: name, CLI flag, type, default, range, what 0 means, front ends, level, help
    "option-tables": doc_reference.option_tables,
    # every node: display name, description, sockets, widgets (default, range, tooltip), outputs (tooltips)
    "node-reference": doc_reference.node_reference,
    # every argument of python -m steadydancer_core.cli, group by group
    "cli-reference": doc_reference.cli_reference,
    # the onnxruntime-gpu build for each CUDA version of torch
    "onnxruntime-gpu": doc_reference.onnxruntime_gpu,
    # the stable names at the roots of steadydancer_core and pose
    "public-api": doc_reference.public_api,
}

_START = re.compile(r"<!-- generated: ([\w-]+)(?: \([^)]*\))? -->\n")


def render(text: str, where: str = "") -> str:
    """``text`` with every generated part replaced by its block's current text."""
    out, pos = [], 0
    for start in _START.finditer(text):
        if start.start() < pos:
            continue
        name = start.group(1)
        if name not in BLOCKS:
            raise KeyError(f"{where}: unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        end_marker = f"<!-- end generated: {name} -->"
        end = text.find(end_marker, start.end())
        if end < 0:
            raise ValueError(f"{where}: generated block {name!r} has no closing '{end_marker}'")
        out += [text[pos:start.end()], BLOCKS[name]()]
        pos = end
    return "".join(out) + text[pos:]


def doc_files() -> list[Path]:
    return [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        new = render(text, str(path.relative_to(REPO)))
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(REPO)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
