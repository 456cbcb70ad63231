"""The documentation's generated parts (scripts/build_docs.py) are current, and the generator touches nothing else."""
from __future__ import annotations

import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import build_docs  # noqa: E402


@pytest.mark.parametrize("path", build_docs.doc_files(), ids=lambda p: p.name)
def test_generated_parts_are_current(path):
    text = path.read_text(encoding="utf-8")
    assert build_docs.render(text, path.name) == text, f"run: python scripts/build_docs.py ({path.name} is stale)"


def test_the_model_page_embeds_the_model_table():
    text = (REPO_ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    for name in ("model-table", "extra-model-paths", "models-lookup", "controlnet-aux-dirs"):
        assert f"<!-- generated: {name} " in text and f"<!-- end generated: {name} -->" in text
    assert build_docs.BLOCKS["model-table"]() in text


def test_render_replaces_only_the_marked_part():
    text = ("before\n<!-- generated: controlnet-aux-dirs -->\nstale\n<!-- end generated: controlnet-aux-dirs -->\n"
            "after\n")
    out = build_docs.render(text)
    assert out.startswith("before\n<!-- generated: controlnet-aux-dirs -->\n- `ckpts/")
    assert out.endswith("<!-- end generated: controlnet-aux-dirs -->\nafter\n") and "stale" not in out
    assert build_docs.render(out) == out


def test_render_refuses_unknown_or_unclosed_blocks():
    with pytest.raises(KeyError, match="unknown generated block 'nope'"):
        build_docs.render("<!-- generated: nope -->\n<!-- end generated: nope -->\n", "x.md")
    with pytest.raises(ValueError, match="no closing"):
        build_docs.render("<!-- generated: model-table -->\nno end\n", "x.md")


def test_the_tiny_kit_section_lists_the_folders_the_kit_writes():
    block = build_docs.BLOCKS["tiny-kit-extra-model-paths"]()
    assert "steadydancer_tiny:\n    base_path: $PWD/steadydancer-tiny/models\n" in block
    assert "ComfyUI/models" not in block      # a folder of its own, never the one holding real downloads
