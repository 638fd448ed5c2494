"""m3el-hf index build and m3el-hf link: what they write and print, and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from m3el_hf.cli import main
from m3el_hf.modeling.tiny import build_tiny_clip


def test_index_build_then_link_prints_ranked_entities(tiny_clip_path, movies_release, tmp_path, capsys):
    out = tmp_path / "index-movies"
    args = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--config", "movies-kb"]
    assert main([*args, "--out", str(out), "--modality", "T"]) == 0
    printed = capsys.readouterr().out
    assert f"Wrote {out}:" in printed and "modality T, 0 left out" in printed
    meta = json.loads((out / "index.json").read_text())
    assert meta["modality"] == "T" and meta["entities"] > 0

    link = ["link", "--model", str(tiny_clip_path), "--mention", "Paris", "--sentence", "Paris premiere screenplay"]
    assert main([*link, "--index", str(out), "--top-k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["rank"] for line in lines] == [1, 2, 3]
    assert lines[0]["score"] >= lines[1]["score"] >= lines[2]["score"]
    assert main([*link, "--kb", str(movies_release), "--config", "movies-kb", "--modality", "T", "--top-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [row.split()[1] for row in table] == [line["qid"] for line in lines]  # the same entities, from the KB

    assert main([*args, "--out", str(out)]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main([*link, "--index", str(out), "--kb", str(movies_release)]) == 2
    assert "Pass --index DIR (built by m3el-hf index build) or --kb DATA, one of them." in capsys.readouterr().err


def test_an_index_of_another_checkpoint_is_used_only_when_asked(tiny_clip_path, movies_release, tmp_path, capsys):
    out = tmp_path / "index"
    build = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--config", "movies-kb"]
    assert main(["-q", *build, "--out", str(out), "--modality", "T"]) == 0
    other = str(build_tiny_clip(tmp_path / "seed-1", seed=1))
    link = ["-q", "link", "--model", other, "--index", str(out), "--mention", "Paris", "--top-k", "3"]
    assert main(link) == 2
    assert f"The index {out} was built by '{tiny_clip_path}', not by '{other}'" in capsys.readouterr().err
    assert main([*link, "--allow-other-checkpoint"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["1.", "2.", "3."]


_LINK_AND_LIST_MODULES = """
import json, sys
from m3el_hf.cli import main
status = main(json.loads(sys.argv[1]))
print(json.dumps([status, sorted(sys.modules)]))
"""


@pytest.mark.slow
def test_link_imports_only_what_linking_needs(tiny_clip_path, movies_release, tmp_path):
    out = tmp_path / "index"
    build = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--config", "movies-kb"]
    assert main(["-q", *build, "--out", str(out)]) == 0
    link = ["-q", "link", "--model", str(tiny_clip_path), "--index", str(out), "--mention", "Paris"]
    done = subprocess.run(
        [sys.executable, "-c", _LINK_AND_LIST_MODULES, json.dumps(link)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status, modules = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == 0 and {"torch", "transformers", "faiss", "m3el_hf.linking.index"} <= set(modules)
    # No training, evaluation, Hub or data-preparation code, no MTEB, PEFT or gradio, and no `datasets` (nor
    # the pandas it brings): an index is read with pyarrow and FAISS alone.
    unneeded = ("m3el_hf.training", "m3el_hf.evaluation", "m3el_hf.hub", "m3el_hf.data.prepare", "datasets", "pandas")
    unneeded += ("mteb", "peft", "gradio", "matplotlib")
    assert [m for m in modules if m.split(".")[0] in unneeded or m.startswith(unneeded)] == []
