"""json_files: the package's own JSON files carry a format_version, and every reader refuses another one."""

from __future__ import annotations

import json
import shutil

import pytest

from m3el_hf.cli import main
from m3el_hf.json_files import FORMAT_VERSION, FormatVersionError, read_json, write_json


def test_write_then_read_gives_the_payload_back(tmp_path):
    payload = {"records": [{"a": 1.5, "b": None}], "name": "Zoë"}
    path = write_json(tmp_path / "sub" / "x.json", payload, ensure_ascii=False)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw == {"format_version": FORMAT_VERSION, **payload} and next(iter(raw)) == "format_version"
    assert read_json(path) == payload
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # written atomically: no temporary file left
    with pytest.raises(ValueError, match="already has a 'format_version' key"):
        write_json(tmp_path / "y.json", {"format_version": 2})


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ({"records": []}, "no format_version"),
        ({"format_version": 2, "records": []}, "format_version 2"),
        ({"format_version": "1"}, "format_version '1'"),
        ({"format_version": True}, "format_version True"),
    ],
)
def test_a_missing_or_unknown_version_is_refused_in_one_line(tmp_path, content, found):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(FormatVersionError) as error:
        read_json(path)
    assert str(error.value) == (
        f"{path} has {found}; this m3el-hf reads format_version 1: write the file again with it."
    )
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(("text", "match"), [("[1, 2]", "holds a JSON list"), ("{", "is not valid JSON")])
def test_a_file_that_is_no_json_object_is_refused(tmp_path, text, match):
    (tmp_path / "x.json").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        read_json(tmp_path / "x.json")


def test_the_cli_reports_another_version_in_one_line_with_status_2(tiny_clip_path, tmp_path, capsys):
    """push-dataset reads prepare_report.json, push-model training_summary.json: both refuse another version."""
    data = tmp_path / "m3el"
    data.mkdir()
    (data / "prepare_report.json").write_text(json.dumps({"format_version": 7, "audit": {}}), encoding="utf-8")
    model = shutil.copytree(tiny_clip_path, tmp_path / "model")
    (model / "training_summary.json").write_text(json.dumps({"format_version": 0, "steps": 1}), encoding="utf-8")
    for argv, path, found in (
        (["push-dataset", str(data), "--repo", "me/m3el"], data / "prepare_report.json", 7),
        (["push-model", str(model), "--repo", "me/clipnd", "--license", "mit"], model / "training_summary.json", 0),
    ):
        assert main([*argv, "--dry-run", str(tmp_path / "staged")]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"m3el-hf {argv[0]}: error: {path} has format_version {found}; this m3el-hf reads format_version 1: "
            "write the file again with it.\n"
        )
        assert not (tmp_path / "staged").exists()
