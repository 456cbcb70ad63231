"""The documentation's generated parts (scripts/build_docs.py) are current, and the generator touches nothing else."""
from __future__ import annotations

import re
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


# ------------------------------------------------------------------------------------------- pages and links
README_MAX_LINES = 200
# the generated blocks each page must carry (the reference parts written from the code)
PAGE_BLOCKS = {
    "README.md": ("model-table", "onnxruntime-gpu"),
    "docs/options.md": ("option-tables",),
    "docs/nodes.md": ("node-reference",),
    "docs/cli.md": ("cli-reference", "public-api", "tiny-kit-comfyui"),
}
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path) -> set:
    anchors, seen = set(), {}
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path) -> list:
    return [t for t in _LINK.findall(_FENCE.sub("", path.read_text(encoding="utf-8")))
            if not re.match(r"[a-z]+:", t)]


def test_the_readme_is_a_short_front_door():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", sorted(PAGE_BLOCKS))
def test_pages_carry_their_generated_reference(page):
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    for name in PAGE_BLOCKS[page]:
        assert f"<!-- generated: {name} " in text, f"{page} lacks the generated block {name}"


@pytest.mark.parametrize("path", build_docs.doc_files(), ids=lambda p: p.name)
def test_every_link_points_at_a_page_and_heading_that_exist(path):
    for target in _links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{path.name} links to {target}, which does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{path.name} links to {target}: no such heading in {linked.name}"


def test_the_readme_links_every_docs_page():
    linked = {(REPO_ROOT / t.partition("#")[0]).resolve() for t in _links(REPO_ROOT / "README.md")}
    missing = [p.name for p in sorted((REPO_ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert not missing, f"README.md does not link {missing}"


def test_the_slug_follows_github():
    assert _slug("What `offload = auto` chooses") == "what-offload--auto-chooses"
    assert _slug("The command line's `--models DIR`") == "the-command-lines---models-dir"
    assert _slug("ComfyUI without its window: the tiny kit and `queue_batch`") == \
        "comfyui-without-its-window-the-tiny-kit-and-queue_batch"
