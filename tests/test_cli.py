"""The m3el-hf command line: options from the dataclasses, help with examples, a mistake is one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import m3el_hf
from m3el_hf.arguments import dataclass_from_namespace
from m3el_hf.cli import COMMANDS, build_parser, main
from m3el_hf.data.synth import SynthConfig
from m3el_hf.evaluation.command import EvaluateConfig
from m3el_hf.tasks import TOPICS


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_explains_itself(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert COMMANDS[command].help.split(":")[0][:30] in " ".join(text.split())


def parse(argv: list[str]):
    return build_parser(argv).parse_args(argv)


def test_list_options_extend_and_keep_dataclass_defaults():
    args = parse(["evaluate", "--model", "a", "--model", "b", "c", "--data", "d", "--output", "o.json"])
    assert dataclass_from_namespace(EvaluateConfig, args).model == ("a", "b", "c")
    assert dataclass_from_namespace(SynthConfig, parse(["-q", "synth", "--out", "x"])).topics == TOPICS
    args = parse(["synth", "--out", "x", "--topics", "books", "--topics", "sports", "--no-overwrite"])
    config = dataclass_from_namespace(SynthConfig, args)
    assert (config.topics, config.overwrite, config.instances) == (("books", "sports"), False, 1000)


def test_bad_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--out", "x", "--format", "yaml"])
    assert "invalid choice: 'yaml'" in capsys.readouterr().err


def test_every_subcommand_shows_an_example_and_marks_required_options(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert f"Example:\n  m3el-hf {command}" in text, command
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "(required)" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(required, here or in --recipe)" in text and "replace the defaults shown below" in text
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"m3el-hf {m3el_hf.__version__}"


_RUN_AND_LIST_HEAVY = """
import json, sys
from m3el_hf.cli import main
seen = []
for argv in json.loads(sys.argv[1]):
    try:
        status = main(argv)
    except SystemExit as exit:
        status = exit.code
    seen.append([argv[0], status, sorted({"torch", "transformers"} & set(sys.modules))])
print(json.dumps(seen))
"""


def _fresh_cli(argvs: list[list[str]], cwd) -> list[list]:
    """Run each `argv` through `main` in one fresh interpreter; per command, its status and the heavy modules."""
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST_HEAVY, json.dumps(argvs)], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["synth", "--help"], ["prepare", "--help"], ["show", "--help"]])
def test_help_imports_neither_torch_nor_transformers(argv, tmp_path):
    assert _fresh_cli([argv], tmp_path) == [[argv[0], 0, []]]


def test_synth_prepare_and_show_run_without_torch_or_transformers(tmp_path):
    argvs = [
        ["-q", "synth", "--out", "raw", "--instances", "30", "--topics", "movies"],
        ["-q", "prepare", "--raw", "raw", "--out", "m3el", "--topics", "movies"],
        ["-q", "show", "m3el", "--config", "movies-I-T"],
    ]
    assert _fresh_cli(argvs, tmp_path) == [["-q", 0, []]] * 3
    assert (tmp_path / "m3el" / "prepare_report.json").is_file()


@pytest.fixture(scope="module")
def places(tiny_clip_path, movies_release, tmp_path_factory) -> dict[str, str]:
    """A raw release, its prepared folder, a checkpoint, a run folder (checkpoint in final/), a busy folder."""
    root = tmp_path_factory.mktemp("mistakes")
    run = root / "run"
    shutil.copytree(tiny_clip_path, run / "final")
    (root / "busy").mkdir()
    (root / "busy" / "x.txt").write_text("someone's work")
    (root / "empty" / "movies_candidates_images").mkdir(parents=True)  # a release whose records file is empty
    (root / "empty" / "movies.json").write_text("[]\n")
    (root / "entries" / tiny_clip_path.name).mkdir(parents=True)  # leaderboard entries of an earlier evaluation
    (root / "entries" / tiny_clip_path.name / "x.yaml").write_text("earlier")
    return {
        "empty": str(root / "empty"),
        "entries": str(root / "entries"),
        "label": tiny_clip_path.name,
        "raw": str(movies_release.parent / "raw"),
        "data": str(movies_release),
        "model": str(tiny_clip_path),
        "run": str(run),
        "busy": str(root / "busy"),
    }


MISTAKES = {
    "train, --model missing": (
        "train --recipe tiny-cpu --model {root}/nope --data {data} --output-dir {root}/o",
        "--model {root}/nope: no such folder here, and not a Hub model id",
    ),
    "train, --model a run folder": (
        "train --recipe tiny-cpu --model {run} --data {data} --output-dir {root}/o",
        "is not a checkpoint: it has no config.json; did you mean {run}/final?",
    ),
    "train, --model a Hub id, offline": (
        "train --recipe tiny-cpu --model someone/missing --data {data} --output-dir {root}/o",
        "Cannot load the checkpoint someone/missing",
    ),
    "train, --data the raw release": (
        "train --recipe tiny-cpu --model {model} --data {raw} --output-dir {root}/o",
        "--data {raw} is a raw M³EL release, not a prepared folder; prepare it first",
    ),
    "train, a task typo": (
        "train --recipe tiny-cpu --model {model} --data {data} --output-dir {root}/o --tasks T-X",
        "Unknown task 'T-X'; did you mean 'T-T'?",
    ),
    "train, --output-dir holds another run": (
        "train --recipe tiny-cpu --model {model} --data {data} --output-dir {busy}",
        "{busy} already exists and is not empty; pass --overwrite to replace it, --resume-from latest to continue "
        "it, or choose another folder.",
    ),
    "evaluate, a folder that is no checkpoint": (
        "evaluate --model {run} --data {data} --output {root}/r.json",
        "--model {run} is not a checkpoint",
    ),
    "evaluate, --data the raw release": (
        "evaluate --model {model} --data {raw} --output {root}/r.json",
        "is a raw M³EL release, not a prepared folder",
    ),
    "evaluate, --eval-results holds earlier entries": (
        "evaluate --model {model} --data {data} --output {root}/r.json --eval-results {entries} --dataset-id me/m3el",
        "{entries}/{label} already exists and is not empty; pass --overwrite to replace it, or choose another folder.",
    ),
    "evaluate, a topic typo": (
        "evaluate --model {model} --data {data} --output {root}/r.json --topics movie",
        "{data} has no topic(s) ['movie']; did you mean 'movies'? Its topics: movies.",
    ),
    "train, a topic typo": (
        "train --recipe tiny-cpu --model {model} --data {data} --output-dir {root}/o --topics movie",
        "{data} has no topic(s) ['movie']; did you mean 'movies'? Its topics: movies.",
    ),
    "train, a topic the data lacks": (
        "train --recipe tiny-cpu --model {model} --data {data} --output-dir {root}/o --topics sports",
        "{data} has no topic(s) ['sports']. Its topics: movies.",
    ),
    "prepare, a topic typo": (
        "prepare --raw {raw} --out {root}/p --topics movie",
        "Unknown topic(s) ['movie']; did you mean 'movies'? Choose from movies, common",
    ),
    "prepare, --raw a prepared folder": (
        "prepare --raw {data} --out {root}/p",
        "--raw {data} is a folder written by m3el-hf prepare, not the raw release",
    ),
    "prepare, an empty records file (even with --on-error skip)": (
        "prepare --raw {empty} --out {root}/p --topics movies --on-error skip",
        "{empty}/movies.json: the records file holds no record",
    ),
    "prepare, --out not empty": (
        "prepare --raw {raw} --out {busy} --topics movies",
        "{busy} already exists and is not empty; pass --overwrite to replace it, or choose another folder.",
    ),
    "synth, --out not empty": (
        "synth --out {busy}",
        "{busy} already exists and is not empty; pass --overwrite to replace it, or choose another folder.",
    ),
    "show, the raw release": ("show {raw}", "path {raw} is a raw M³EL release"),
    "show, a config typo": ("show {data} --config movie-T-T", "has no config 'movie-T-T'; did you mean 'movies-T-T'?"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_mistake_is_one_line_before_any_heavy_work(mistake, places, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv, expected = (text.format(root=tmp_path, **places) for text in MISTAKES[mistake])
    assert main(argv.split()) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert err.startswith(f"m3el-hf {argv.split()[0]}: error: ") and expected in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "p").exists()  # nothing written
