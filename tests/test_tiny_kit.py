"""The tiny kit never replaces a file it did not write, writes through a temporary name and makes readable files."""
import json
import os
import stat
from pathlib import Path

import pytest

from steadydancer_core import tiny_kit
from steadydancer_core.tiny_kit import MANIFEST_FILE, KitConflictError


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one after it."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def test_refuses_a_real_file_under_a_kit_name_and_writes_nothing(tmp_path):
    models = tmp_path / "models"
    real = models / "vae" / tiny_kit.VAE_FILE
    real.parent.mkdir(parents=True)
    real.write_bytes(b"the user's real VAE")
    (models / "checkpoints").mkdir()
    before = _tree(models)
    with pytest.raises(KitConflictError) as err:
        tiny_kit.write_kit(models, tmp_path / "inputs")
    message = str(err.value)
    assert str(real) in message and "not written by the tiny kit" in message
    assert "empty folder of its own" in message and "extra_model_paths.yaml" in message
    assert _tree(models) == before  # nothing written, the real file intact
    assert not (models / MANIFEST_FILE).exists() and not (tmp_path / "inputs").exists()


def test_main_names_the_file_and_exits_1(tmp_path, capsys):
    inputs = tmp_path / "input"
    inputs.mkdir()
    (inputs / tiny_kit.PHOTO_FILE).write_bytes(b"my holiday photo")
    assert tiny_kit.main([str(tmp_path / "kit"), "--inputs", str(inputs)]) == 1
    err = capsys.readouterr().err
    assert str(inputs / tiny_kit.PHOTO_FILE) in err and "extra_model_paths.yaml" in err
    assert (inputs / tiny_kit.PHOTO_FILE).read_bytes() == b"my holiday photo"
    assert not (tmp_path / "kit").exists()


def test_rewrites_its_own_files_and_records_them(tmp_path):
    models = tmp_path / "kit"
    first = tiny_kit.write_kit(models, models / "input")
    manifest = json.loads((models / MANIFEST_FILE).read_text())
    assert manifest["written_by"] == tiny_kit.MANIFEST_TAG
    assert set(manifest["files"]) == {str(p.relative_to(models).as_posix()) for p in first.files}
    own = models / "diffusion_models" / "mine.safetensors"  # a file of the user's beside the kit's: left alone
    own.write_bytes(b"mine")
    again = tiny_kit.write_kit(models, models / "input")  # rerun over its own files: allowed
    assert again.files == first.files and own.read_bytes() == b"mine"
    assert not [p for p in models.rglob(".*") if p.name != MANIFEST_FILE]  # no temporary files left


def test_a_kit_file_the_user_changed_is_not_replaced(tmp_path):
    _, video = tiny_kit.write_inputs(tmp_path)
    tiny_kit.write_inputs(tmp_path)  # unchanged: replaced
    video.write_bytes(b"the user's own dance video")
    with pytest.raises(KitConflictError, match="changed since the tiny kit wrote it"):
        tiny_kit.write_inputs(tmp_path)
    assert video.read_bytes() == b"the user's own dance video"


def test_a_symlink_under_a_kit_name_is_refused(tmp_path):
    real = tmp_path / "real.png"
    real.write_bytes(b"real")
    inputs = tmp_path / "input"
    tiny_kit.write_inputs(inputs)
    (inputs / tiny_kit.PHOTO_FILE).unlink()
    (inputs / tiny_kit.PHOTO_FILE).symlink_to(real)
    with pytest.raises(KitConflictError, match="not a regular file"):
        tiny_kit.write_inputs(inputs)
    assert real.read_bytes() == b"real"


def test_an_unreadable_manifest_stops_the_kit(tmp_path):
    (tmp_path / MANIFEST_FILE).write_text("not json")
    with pytest.raises(KitConflictError, match="not a readable tiny-kit manifest"):
        tiny_kit.write_inputs(tmp_path)
    assert (tmp_path / MANIFEST_FILE).read_text() == "not json"


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_mode_open_would_give(tmp_path, umask, mask, mode):
    umask(mask)
    photo, video = tiny_kit.write_inputs(tmp_path)
    for path in (photo, video, tmp_path / MANIFEST_FILE):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_a_failed_write_leaves_neither_target_nor_temporary_file(tmp_path):
    folder = tiny_kit._KitFolder(tmp_path)

    def broken(path):
        path.write_bytes(b"half a file")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        folder.write("vae/x.safetensors", broken)
    assert list((tmp_path / "vae").iterdir()) == []
    assert not (tmp_path / MANIFEST_FILE).exists()


def test_a_file_appearing_during_the_write_is_not_replaced(tmp_path):
    folder = tiny_kit._KitFolder(tmp_path)
    target = tmp_path / "late.bin"

    def race(path):
        path.write_bytes(b"kit")
        target.write_bytes(b"user")  # appears after the check, before the rename

    with pytest.raises(KitConflictError, match="appeared while the kit was writing it"):
        folder.write("late.bin", race)
    assert target.read_bytes() == b"user"
    assert [p.name for p in tmp_path.iterdir()] == ["late.bin"]


def test_the_extra_model_paths_section_adds_a_folder_of_its_own_for_every_folder_the_kit_writes():
    section = tiny_kit.kit_extra_model_paths("/home/me/steadydancer-tiny/models")
    lines = section.splitlines()
    assert lines[0] == "steadydancer_tiny:"
    keys = dict(line.strip().split(": ", 1) for line in lines[1:])
    assert keys.pop("base_path") == "/home/me/steadydancer-tiny/models"
    kit_dirs = {rel.split("/", 1)[0] for rel, _ in tiny_kit._model_plan(0)}
    assert keys == {d: d for d in kit_dirs}
