"""The m3el-hf command line: every subcommand builds, options come from the dataclasses."""

from __future__ import annotations

import pytest

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


def test_list_options_extend_and_keep_dataclass_defaults():
    parser = build_parser()
    args = parser.parse_args(["evaluate", "--model", "a", "--model", "b", "c", "--data", "d", "--output", "o.json"])
    assert dataclass_from_namespace(EvaluateConfig, args).model == ("a", "b", "c")
    assert dataclass_from_namespace(SynthConfig, parser.parse_args(["synth", "--out", "x"])).topics == TOPICS
    args = parser.parse_args(["synth", "--out", "x", "--topics", "books", "--topics", "sports", "--no-overwrite"])
    config = dataclass_from_namespace(SynthConfig, args)
    assert (config.topics, config.overwrite, config.instances) == (("books", "sports"), False, 1000)


def test_bad_choice_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--out", "x", "--format", "yaml"])
    assert "invalid choice: 'yaml'" in capsys.readouterr().err
