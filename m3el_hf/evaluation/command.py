"""``m3el-hf evaluate``: evaluate one or more checkpoints on a prepared M³EL release and write one report."""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..atomic import refuse_used_folder
from ..benchmark import (
    BENCHMARK_SPLIT,
    HEADLINE_PROTOCOL,
    PROTOCOLS,
    Protocol,
    ranks_the_kb,
    write_eval_results,
)
from ..data.features import KB_SPLIT
from ..data.loading import load_topic_splits, resolve_topics
from ..data.prepare import is_synthetic, read_report
from ..json_files import read_json
from ..layout import REPORT_NAME
from ..locations import SUMMARY_NAME, check_checkpoint, check_prepared
from ..provenance import Provenance, check_publishable, make_provenance
from ..tasks import TASK_NAMES, TOPICS, check_topics, get_task
from .entity_text import FULL, EntityTextVariant
from .evaluator import evaluate_model
from .plots import plot_accuracy
from .results import EvaluationResult, format_table, percent, write_results

__all__ = ["EvaluateConfig", "run_evaluate", "trained_topics"]

logger = logging.getLogger(__name__)

_EXPORT_FOLDERS = ("final", "best")  # what `train` writes under a run folder: the run's name labels them


@dataclass(frozen=True)
class EvaluateConfig:
    """Options of ``m3el-hf evaluate``.

    >>> EvaluateConfig(model=("ckpt",), data="m3el", output=Path("results.json")).protocol
    ('candidates', 'candidates-leak-free')
    """

    model: tuple[str, ...] = field(
        metadata={
            "help": "Checkpoint folder(s) or Hub id(s), CLIP or CLIP_ND, each evaluated with its own config's "
            "templates and description augmentation; list several after one --model to compare them."
        }
    )
    data: str = field(metadata={"help": "Prepared M³EL folder or Hub dataset id."})
    output: Path = field(metadata={"help": "JSON file to write every model's records to."})
    data_revision: str | None = field(
        default=None,
        metadata={
            "help": "Branch, tag or commit of a Hub --data (default: main); the commit it resolves to is recorded "
            "in results.json and the leaderboard entries."
        },
    )
    model_name: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "Label of each --model in the report (default: the checkpoint's folder name, or its run "
            "folder's name for a trainer export such as run/final)."
        },
    )
    topics: tuple[str, ...] | None = field(
        default=None, metadata={"help": "Topics to evaluate (default: every topic the data has)."}
    )
    tasks: tuple[str, ...] = field(default=TASK_NAMES, metadata={"help": "Tasks to evaluate."})
    split: str = field(default="test", metadata={"help": "Split of the instances to evaluate."})
    protocol: tuple[Protocol, ...] = field(
        default=("candidates", "candidates-leak-free"),
        metadata={
            "help": "candidates: rank each mention's candidate list (M³EL's, the headline); kb: rank the topic's "
            "whole KB; *-leak-free: the same for the tasks with a mention image, without the instances whose "
            "mention image is a copy or near-duplicate of the gold's (counted as leaked)."
        },
    )
    metrics: tuple[Literal["accuracy", "hits@1", "hits@3", "hits@5", "mrr", "mr"], ...] = field(
        default=("accuracy",),
        metadata={"help": "Metrics the tables show (the JSON holds all of them); mr: mean rank, lower is better."},
    )
    batch_size: int = field(default=64, metadata={"help": "Texts or images per encoder forward pass."})
    ties: Literal["expected", "pessimistic"] = field(
        default="expected",
        metadata={"help": "Tied scores: expected value under random tie-breaking, or counted as errors."},
    )
    entity_text: str = field(
        default=FULL,
        metadata={
            "help": "Entity text: full (name and description), name (no description), truncate:N (the first N words "
            "of each description), drop:P (a seeded share P of the descriptions removed) or shuffle (descriptions "
            "swapped between the entities, seeded); the records name it."
        },
    )
    max_instances: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N instances of each topic (smoke runs)."}
    )
    plot: Path | None = field(default=None, metadata={"help": "Also draw accuracy per task and topic to this PNG."})
    device: str | None = field(default=None, metadata={"help": "Torch device (default: cuda if available, else cpu)."})
    eval_results: Path | None = field(
        default=None,
        metadata={
            "help": "Also write each model's Hub leaderboard entries to EVAL_RESULTS/<label>/.eval_results/, "
            "ready for `m3el-hf push-model EVAL_RESULTS/<label> --repo OWNER/MODEL --create-pr`; needs --dataset-id."
        },
    )
    dataset_id: str | None = field(
        default=None, metadata={"help": "Hub id of the M³EL benchmark dataset the leaderboard entries refer to."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace the leaderboard entries of an earlier run in --eval-results."}
    )
    unofficial_data: bool = field(
        default=False,
        metadata={
            "help": "Write --eval-results entries also from synthetic data or from data other than the Hub "
            "--dataset-id (a local folder): refused without this flag; with it, each entry's notes say so."
        },
    )
    harness: Literal["builtin", "mteb"] = field(
        default="builtin",
        metadata={
            "help": "builtin: m3el-hf's evaluator (fast; every unique text and image encoded once). mteb: the M³EL "
            "tasks run by MTEB, for any model MTEB can load (pip install 'm3el-hf[mteb]'): the same scores but for "
            "near-ties within 8 float32 ulps and Kb golds ranked below 1,000; MTEB's own result files go next to "
            "--output, in OUTPUT-mteb/."
        },
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("Pass at least one checkpoint with --model.")
        if self.model_name and len(self.model_name) != len(self.model):
            raise ValueError(
                f"--model-name gives {len(self.model_name)} label(s) for {len(self.model)} --model value(s); "
                "give one label per model, in the same order, or none."
            )
        for task in self.tasks:
            get_task(task)
        if self.topics is not None:
            check_topics(self.topics, choices=None)  # against the data's own topics when it is read
        bad = [p for p in self.protocol if p not in PROTOCOLS]
        if bad or not self.protocol:
            raise ValueError(f"--protocol must list some of {', '.join(PROTOCOLS)}, got {list(self.protocol)}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}.")
        EntityTextVariant(self.entity_text)
        if self.max_instances is not None and self.max_instances < 1:
            raise ValueError(f"--max-instances must be at least 1, got {self.max_instances}.")
        if self.output.suffix != ".json":
            raise ValueError(f"--output must be a .json file, got {self.output}.")
        if self.plot is not None and importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--plot needs matplotlib: pip install 'm3el-hf[plot]', or leave out --plot.")
        if self.eval_results is not None and self.dataset_id is None:
            raise ValueError("--eval-results needs --dataset-id, the Hub id of the M³EL benchmark dataset.")
        if self.eval_results is not None and (
            self.split != BENCHMARK_SPLIT
            or HEADLINE_PROTOCOL not in self.protocol
            or self.ties != "expected"
            or self.max_instances is not None
            or self.entity_text != FULL
        ):
            raise ValueError(
                f"--eval-results writes the leaderboard's scores: the whole {BENCHMARK_SPLIT!r} split, protocol "
                f"{HEADLINE_PROTOCOL!r}, ties 'expected', entity text 'full'; got --split {self.split} --protocol "
                f"{' '.join(self.protocol)} --ties {self.ties} --max-instances {self.max_instances} "
                f"--entity-text {self.entity_text}."
            )
        if self.harness == "mteb":
            self._check_mteb()
        labels = self.labels()
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"Two --model values share the label(s) {repeated}; name each with --model-name.")

    def _check_mteb(self) -> None:
        if importlib.util.find_spec("mteb") is None:
            raise ValueError("--harness mteb needs MTEB: pip install 'm3el-hf[mteb]', or use --harness builtin.")
        given = {
            f"--ties {self.ties}": self.ties != "expected",
            "--max-instances": self.max_instances is not None,
            f"--entity-text {self.entity_text}": self.entity_text != FULL,
        }
        if any(given.values()):
            raise ValueError(
                "--harness mteb scores whole splits with ties 'expected' (the M³EL tasks' main score) and full entity "
                f"texts; leave out {', '.join(k for k, v in given.items() if v)}, or use --harness builtin."
            )

    def labels(self) -> tuple[str, ...]:
        """Each model's label in the report: its --model-name, else the folder name (run/final -> run)."""
        if self.model_name:
            return self.model_name
        paths = [Path(path) for path in self.model]
        return tuple(
            str(path.parent.name if path.name in _EXPORT_FOLDERS and path.parent.name else path.name or model)
            for path, model in zip(paths, self.model, strict=True)
        )


def run_evaluate(config: EvaluateConfig) -> list[EvaluationResult]:
    """Evaluate every ``--model`` on the same data, print the tables, write the JSON (and the plot)."""
    import torch

    from ..modeling.modeling_clipnd import CLIPNDModel
    from ..modeling.processing import load_processor

    for model in config.model:
        check_checkpoint(model)
    check_prepared(config.data)
    topics = _topics(config)
    provenance = make_provenance(config.harness, config.data, config.data_revision, is_synthetic(config.data))
    if config.eval_results is not None:
        _entry_folders(config)  # refuse a used folder now, not after evaluating
        check_publishable(provenance, config.dataset_id, config.unofficial_data)
    dataset, kb = _load_data(config, topics) if config.harness == "builtin" else (None, None)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = []
    for path, name in zip(config.model, config.labels(), strict=True):
        if config.harness == "mteb":
            result = _evaluate_with_mteb(config, topics, path, name, device)
        else:
            logger.info("Evaluating %s (%s) on %d instances", name, path, dataset.num_rows)
            model = CLIPNDModel.from_pretrained(path).to(device)
            tokenizer, image_processor = load_processor(path)
            result = evaluate_model(
                model,
                tokenizer,
                image_processor,
                dataset,
                kb=kb,
                tasks=config.tasks,
                protocols=config.protocol,
                model_name=name,
                checkpoint=str(path),
                split=config.split,
                ties=config.ties,
                entity_text=config.entity_text,
                trained_topics=trained_topics(path),
                batch_size=config.batch_size,
            )
        print(result.table(config.metrics), end="\n\n")
        results.append(result)
    if len(results) > 1:
        print(format_table([record for result in results for record in result.records]), end="\n\n")
    note = leak_note(config.data, config.tasks)
    if note:
        print(note, end="\n\n")
    for result, name in zip(results, config.labels(), strict=True):
        for protocol in config.protocol:
            mean = result.mean_accuracy(protocol)
            print(f"{name}: mean accuracy {percent(mean)}% over the tasks ({protocol} protocol, all topics)")
    print(f"Wrote {write_results(config.output, results, provenance=provenance)}")
    records = [record for result in results for record in result.records]
    if config.plot is not None:
        print(f"Wrote {plot_accuracy(records, config.plot, protocol=config.protocol[0])}")
    if config.eval_results is not None:
        _write_leaderboard_entries(config, records, provenance)
    return results


def _topics(config: EvaluateConfig) -> tuple[str, ...]:
    """The topics to score: those the data has (all, or the ones asked for), which the harness can score."""
    topics = resolve_topics(config.data, config.topics, config.data_revision)
    if config.harness == "mteb" and not set(topics) <= set(TOPICS):
        raise ValueError(
            f"--harness mteb runs M³EL's MTEB tasks, whose subsets are {', '.join(TOPICS)}; {config.data} has the "
            f"topic(s) {', '.join(topics)}: use --harness builtin."
        )
    return topics


def _evaluate_with_mteb(
    config: EvaluateConfig, topics: tuple[str, ...], model: str, name: str, device: str
) -> EvaluationResult:
    from .mteb_harness import evaluate_with_mteb

    logger.info("Evaluating %s (%s) through MTEB", name, model)
    return evaluate_with_mteb(
        model,
        config.data if config.data_revision is None else {"path": config.data, "revision": config.data_revision},
        topics=topics,
        tasks=config.tasks,
        protocols=config.protocol,
        model_name=name,
        split=config.split,
        batch_size=config.batch_size,
        results_folder=config.output.with_name(f"{config.output.stem}-mteb"),
        device=device,
        trained_topics=trained_topics(model),
    )


def trained_topics(checkpoint: str) -> tuple[str, ...] | None:
    """The topics a checkpoint folder was trained on, from its ``training_summary.json``; None when it has none
    (a stock CLIP, a Hub id)."""
    path = Path(checkpoint) / SUMMARY_NAME
    topics = read_json(path).get("config", {}).get("topics") if path.is_file() else None
    return None if topics is None else tuple(topics)


def leak_note(data: str, tasks: Sequence[str]) -> str | None:
    """A note on the image leak the data audit measured (mention images that copy the gold's), if any.

    Read from a local prepared folder's ``prepare_report.json``; None for a Hub id or when nothing leaks.
    """
    if not (Path(data) / REPORT_NAME).is_file() or not any(get_task(task).mention_needs_image for task in tasks):
        return None
    counts: dict[str, int] = {}
    for topic in read_report(data)["audit"].values():
        for key, value in topic["leaks"].items():
            kind = key.rpartition("/")[2]
            counts[kind] = counts.get(kind, 0) + value
    copies, near = counts.get("copy", 0), counts.get("near", 0)
    with_image = sum(counts.get(kind, 0) for kind in ("copy", "near", "none", "unknown"))
    if not copies + near:
        return None
    return (
        f"Note: {copies} of {with_image} mention images are the gold entity's image byte for byte and {near} more "
        f"are near-duplicates of it ({100 * (copies + near) / with_image:.1f}% leaked, data audit): tasks with an "
        "image on both sides (I-I, I-TI, TI-I, TI-TI) are partly solved by matching the copy. The *-leak-free "
        "protocols leave those instances out."
    )


def _entry_folders(config: EvaluateConfig) -> dict[str, Path]:
    """Each model's folder under --eval-results; refused when it holds an earlier run's entries (no --overwrite)."""
    folders = {}
    for name in config.labels():
        slug = re.sub(r"[^\w.-]+", "-", name).strip("-.")
        if not slug:
            raise ValueError(f"--model-name {name!r} gives no usable folder name for --eval-results; use letters.")
        folders[name] = folder = config.eval_results / slug
        refuse_used_folder(folder, config.overwrite)
    return folders


def _write_leaderboard_entries(config: EvaluateConfig, records: list[dict[str, Any]], provenance: Provenance) -> None:
    for name, folder in _entry_folders(config).items():
        options = {"provenance": provenance, "unofficial": config.unofficial_data}
        for path in write_eval_results(records, folder, config.dataset_id, name, **options):
            print(f"Wrote {path}")
        if folder.is_dir():
            print(f"Submit {name}'s scores: m3el-hf push-model {folder} --repo OWNER/MODEL --create-pr")


def _load_data(config: EvaluateConfig, topics: tuple[str, ...]) -> tuple[Any, Any | None]:
    """The instances of `topics` (one split, concatenated) and, for protocol kb, their KB rows."""
    import datasets

    # A MIMIC-format mention's candidate list is its gold alone (m3el_hf.data.mimic): it would score 100%.
    if not all(ranks_the_kb(protocol) for protocol in config.protocol) and _is_mimic(config.data):
        raise ValueError(f"{config.data} is a MIMIC-format dataset without candidate lists: use --protocol kb.")
    parts, kbs = [], []
    for topic, part in load_topic_splits(config.data, topics, config.split, config.data_revision).items():
        if config.max_instances is not None:
            part = part.select(range(min(config.max_instances, part.num_rows)))
        parts.append(part)
        if any(ranks_the_kb(protocol) for protocol in config.protocol):
            kbs.append(datasets.load_dataset(config.data, f"{topic}-kb", split=KB_SPLIT, revision=config.data_revision))
    kb = datasets.concatenate_datasets(kbs) if kbs else None
    return datasets.concatenate_datasets(parts), kb


def _is_mimic(data: str) -> bool:
    return (Path(data) / REPORT_NAME).is_file() and read_report(data)["options"].get("format") == "mimic"
