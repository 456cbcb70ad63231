"""The model file table is consistent, and everything that names a model file follows it: the CLI's --models lookup,
the tiny kit, the DWPose defaults, the documentation's table and extra_model_paths.yaml sections."""
from __future__ import annotations

import re
from argparse import Namespace
from pathlib import Path

import pytest

import steadydancer_core as sd
from steadydancer_core import model_files, models_folder, tiny_kit
from steadydancer_core.cli_options import CLIError

TABLE = sd.MODEL_FILE_TABLE
SINGLE_FILES = [f for f in TABLE if f.kind == "file"]
HF_RESOLVE = re.compile(r"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/main/([\w./-]+/)?[\w.-]+")


def test_every_role_has_a_preferred_single_file_and_unique_preferences():
    for role in sd.MODEL_ROLES:
        entries = sd.model_files_for(role)
        assert entries and any(f.kind == "file" for f in entries), role
        ranks = [f.rank for f in entries]
        assert len(set(ranks)) == len(ranks) and ranks == sorted(ranks), (role, ranks)
        assert sd.preferred_file_name(role) == next(f.name for f in entries if f.kind == "file")
    assert {f.role for f in TABLE} == set(sd.MODEL_ROLES)
    assert len({f.key for f in TABLE}) == len(TABLE)
    assert len({f.name for f in SINGLE_FILES}) == len(SINGLE_FILES)


def test_urls_are_hugging_face_downloads_of_the_named_file():
    for info in TABLE:
        assert set(info.folders) <= set(sd.MODEL_ROLES[info.role].folders), info.key
        if info.kind != "file":
            assert info.url is None
            assert info.repo or info.source, info.key
            continue
        assert HF_RESOLVE.fullmatch(info.url), info.url
        assert info.url.endswith("/" + info.subfolder + info.name) and f"/{info.repo}/" in info.url
        assert info.page.startswith(f"https://huggingface.co/{info.repo}")


@pytest.mark.parametrize("bad, problem", [
    (dict(role="unet"), "role must be one of"),
    (dict(repo="not a repo"), "is not owner/name"),
    (dict(subfolder="no_slash"), "ends with '/'"),
    (dict(repo="", subfolder="", source=""), "needs a repo or a source"),
    (dict(folders=("checkpoints",)), "folders must be among"),
    (dict(kind="folder"), "needs its marker"),
    (dict(name="a/b.safetensors"), "without '/'"),
])
def test_a_bad_entry_is_refused_on_construction(bad, problem):
    fields = dict(key="x", role="vae", name="x.safetensors", size="1 GB", rank=0, repo="owner/repo",
                  subfolder="dir/")
    with pytest.raises(ValueError, match=problem):
        sd.ModelFileInfo(**{**fields, **bad})


def _make(root: Path, folder: str, info) -> Path:
    """An empty stand-in for ``info`` in ``root/folder``; returns the path --models should find."""
    base = root / folder
    if info.kind == "gguf":
        path = base / f"{info.contains}-14B-Q4_K_M.gguf"
    elif info.kind == "folder":
        (base / info.name).mkdir(parents=True)
        (base / info.name / info.marker).write_text("{}")
        return base / info.name
    else:
        path = base / info.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize("option", list(models_folder.OPTION_ROLES))
def test_models_lookup_finds_each_entry_in_each_of_its_folders(tmp_path, option):
    role = sd.MODEL_ROLES[models_folder.OPTION_ROLES[option]]
    findable = [f for f in sd.model_files_for(role.key) if f.kind != "comfy_quant"]
    for info in findable:
        for folder in role.search_dirs:
            root = tmp_path / f"{info.key}-{folder}"
            expected = _make(root, folder, info)
            assert models_folder._find(root, option) == expected, (info.key, folder)
    # all of them in the last folder: the preferred one wins
    root = tmp_path / "all"
    paths = [_make(root, role.search_dirs[-1], info) for info in findable]
    assert models_folder._find(root, option) == paths[0]


def test_models_lookup_names_what_it_looked_for_where(tmp_path):
    for option, role_key in models_folder.OPTION_ROLES.items():
        with pytest.raises(CLIError) as err:
            models_folder._find(tmp_path, option)
        message = str(err.value)
        assert "\n" not in message and f"--{option.replace('_', '-')} PATH" in message
        assert sd.MODEL_ROLES[role_key].title in message
        for info in sd.model_files_for(role_key):
            if info.kind != "comfy_quant":
                assert info.looked_for in message
        for folder in sd.MODEL_ROLES[role_key].search_dirs:
            assert str(tmp_path / folder) in message


def test_explicit_paths_win_over_models(tmp_path):
    root = tmp_path / "models"
    for info in SINGLE_FILES:
        _make(root, info.folders[0], info)
    args = Namespace(models=str(root), video="dance.mp4", dit="mine.gguf", vae=None, t5=None, clip_vision=None,
                     detector=None, pose_model="my_pose.onnx")
    models_folder.resolve_models(args)
    assert (args.dit, args.pose_model) == ("mine.gguf", "my_pose.onnx")
    assert Path(args.t5).name == sd.preferred_file_name("t5")
    assert Path(args.detector) == root / "dwpose" / sd.preferred_file_name("detector")


def test_the_kit_writes_exactly_the_tables_single_files():
    written = [rel for rel, _ in tiny_kit._model_plan(0)]
    assert sorted(written) == sorted(f"{f.folders[0]}/{f.name}" for f in SINGLE_FILES)
    assert tiny_kit.DIT_FP8 == sd.model_file_info("dit_fp8").name
    assert tiny_kit.ESTIMATOR_FILE == sd.model_file_info("pose_model").name


def test_the_kit_folder_is_a_models_folder_for_the_cli(tmp_path):
    """Every role the CLI needs resolves to the table's preferred file in a tree laid out like the kit's."""
    for rel, _ in tiny_kit._model_plan(0):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    for option, role in models_folder.OPTION_ROLES.items():
        assert models_folder._find(tmp_path, option).name == sd.preferred_file_name(role)


def test_pose_defaults_are_the_tables_names():
    assert sd.preferred_file_name("detector") == "yolox_l.onnx"
    assert sd.preferred_file_name("pose_model") == "dw-ll_ucoco_384.onnx"


def test_rendered_table_has_a_row_per_entry_with_its_source():
    lines = sd.render_model_table().splitlines()
    assert lines[0] == "| file | ComfyUI folder | size (about) | source (Hugging Face) |"
    rows = lines[2:]
    assert len(rows) == len(TABLE)
    for info, row in zip(TABLE, rows):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 4, row
        assert (f"`{info.name}`" if info.kind == "file" else info.label) in cells[0]
        assert cells[1].startswith(f"`models/{info.folders[0]}`") and cells[2] == info.size
        assert (info.url or info.page or info.source) in cells[3]
    with_notes = sd.render_model_table(notes=True).splitlines()
    assert all(row.count("|") == 6 for row in with_notes)


def test_extra_model_paths_section():
    text = sd.extra_model_paths_yaml("/data/models", "mine", ["vae", "dwpose"])
    assert text == "mine:\n    base_path: /data/models\n    vae: vae\n    dwpose: dwpose\n"
    keys = [line.split(":")[0].strip() for line in sd.extra_model_paths_yaml("/x").splitlines()[2:]]
    assert keys == list(model_files.all_model_folders())
    assert set(keys) == {d for role in sd.MODEL_ROLES.values() for d in role.folders}


def test_tooltips_name_the_files_and_folders():
    tip = sd.model_role_tooltip("t5")
    assert "models/text_encoders" in tip
    assert tip.index(sd.model_file_info("t5_fp8").name) < tip.index(sd.model_file_info("t5_fp16").name)
    assert "Optional" in sd.model_role_tooltip("lora") and "Optional" not in sd.model_role_tooltip("dit")
    assert sd.model_file_info("dit_official").label not in sd.model_role_tooltip("dit")   # nodes pick files
