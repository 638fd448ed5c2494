"""Atomic writes: complete or absent, with the modes the umask gives, old content kept on failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from m3el_hf.atomic import atomic_write, process_umask, refuse_used_folder, replace_dir

PACKAGE = Path(__file__).resolve().parents[1] / "m3el_hf"


def staged(tmp_path: Path, name: str = "staging") -> Path:
    folder = tmp_path / name
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("new", encoding="utf-8")
    os.chmod(folder, 0o700)
    os.chmod(folder / "sub" / "a.txt", 0o600)
    return folder


def test_process_umask_matches_the_one_os_umask_reports() -> None:
    expected = os.umask(0o022)
    os.umask(expected)
    assert process_umask() == expected


@pytest.mark.parametrize("existing", ["folder", "file", "none"])
def test_replace_dir_publishes_with_umask_modes_and_replaces_what_was_there(tmp_path: Path, existing: str) -> None:
    out = tmp_path / "out"
    if existing == "folder":
        (out / "old").mkdir(parents=True)
    elif existing == "file":
        out.write_text("old", encoding="utf-8")
    replace_dir(staged(tmp_path), out, overwrite=True)
    assert (out / "sub" / "a.txt").read_text(encoding="utf-8") == "new" and not (out / "old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither staging nor the old copy is left
    umask = process_umask()
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "sub" / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replace_dir_refuses_to_overwrite_unless_told(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x", encoding="utf-8")
    with pytest.raises(FileExistsError, match=r"out already exists and is not empty; pass --overwrite"):
        replace_dir(staged(tmp_path), out, overwrite=False)
    assert (out / "keep.txt").read_text(encoding="utf-8") == "x"


@pytest.mark.parametrize("existing", ["folder", "file", "empty folder", "none"])
def test_a_used_folder_is_refused_in_one_wording(tmp_path: Path, existing: str) -> None:
    out = tmp_path / "out"
    if existing.endswith("folder"):
        out.mkdir()
    if existing == "folder":
        (out / "keep.txt").write_text("x", encoding="utf-8")
    elif existing == "file":
        out.write_text("x", encoding="utf-8")
    used = existing in ("folder", "file")
    assert refuse_used_folder(out, overwrite=True) is used
    if not used:
        assert refuse_used_folder(out, overwrite=False) is False
        return
    message = f"{out} already exists and is not empty; pass --overwrite to replace it, or choose another folder."
    with pytest.raises(FileExistsError) as refused:
        refuse_used_folder(out, overwrite=False)
    assert str(refused.value) == message
    with pytest.raises(FileExistsError) as refused:
        refuse_used_folder(out, overwrite=False, alternative="--resume-from latest to continue it")
    assert str(refused.value) == message.replace("it, or", "it, --resume-from latest to continue it, or")
    assert (tmp_path / "out").exists()


def test_no_other_module_words_the_refusal() -> None:
    wording = "already exists and is not empty"
    assert [p.name for p in sorted(PACKAGE.rglob("*.py")) if wording in p.read_text(encoding="utf-8")] == ["atomic.py"]


def test_replace_dir_leaves_hard_links_and_link_targets_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("mine", encoding="utf-8")
    os.chmod(outside, 0o600)
    folder = staged(tmp_path)
    os.link(outside, folder / "hard.txt")
    os.symlink(outside, folder / "soft.txt")
    replace_dir(folder, tmp_path / "out", overwrite=False)
    assert outside.stat().st_mode & 0o777 == 0o600


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "r.json"
    assert atomic_write(path, lambda tmp: tmp.write_text("one", encoding="utf-8")) == path
    assert path.stat().st_mode & 0o777 == 0o666 & ~process_umask()

    def broken(tmp: Path) -> None:
        tmp.write_text("half", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text(encoding="utf-8") == "one" and sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
