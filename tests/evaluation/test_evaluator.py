"""The evaluator against a brute-force reference, chance-level ties, exclusions, caching, and the CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import datasets
import pytest
import torch
import yaml
from PIL import Image

import m3el_hf
from m3el_hf.benchmark import task_id
from m3el_hf.cli import main
from m3el_hf.evaluation.evaluator import evaluate_model
from m3el_hf.evaluation.results import EvaluationResult, read_results
from m3el_hf.json_files import write_json
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel
from m3el_hf.tasks import TASK_NAMES, get_task

TOPICS = ("movies", "books")  # those of the `release` fixture (conftest.py)


@pytest.fixture(scope="module")
def kb(release: Path) -> datasets.Dataset:
    return datasets.concatenate_datasets([datasets.load_dataset(str(release), f"{t}-kb", split="kb") for t in TOPICS])


def _evaluate(model, processors, dataset, **kwargs) -> EvaluationResult:
    return evaluate_model(model, *processors, dataset, progress=False, **kwargs)


def _cells(result: EvaluationResult, protocol: str = "candidates") -> dict:
    return {(r["task"], r["topic"]): r for r in result.records if r["protocol"] == protocol}


# ---------------------------------------------------------------------------------------------
# Brute-force reference: every mention and entity encoded alone, ranks counted by hand
# ---------------------------------------------------------------------------------------------


def _embed_one(model, processors, text: str | None, image: Image.Image | None) -> dict[str, torch.Tensor | None]:
    tokenizer, image_processor = processors
    tokens = tokenizer(
        [text], truncation=True, max_length=model.config.text_config.max_position_embeddings, return_tensors="pt"
    )
    pixels = image_processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"] if image else None
    with torch.no_grad():
        out = {"T": model.encode_text(tokens["input_ids"], tokens["attention_mask"])[0]}
        out["I"] = model.encode_image(pixels)[0] if image else None
        out["TI"] = (
            model.encode(tokens["input_ids"], tokens["attention_mask"], pixel_values=pixels)[0] if image else None
        )
    return out


def _rank_by_hand(scores: list[float], gold: int) -> tuple[float, float]:
    """Expected accuracy and reciprocal rank of the gold under uniformly random tie-breaking."""
    greater = sum(s > scores[gold] for s in scores)
    tied = sum(s == scores[gold] for s in scores) - 1
    reciprocal = sum(1 / r for r in range(greater + 1, greater + tied + 2)) / (tied + 1)
    return (1 / (tied + 1) if greater == 0 else 0.0), reciprocal


def _brute_force_candidates(model, processors, dataset) -> dict:
    config = model.config
    sums: dict[tuple[str, str], list[float]] = {}
    for row in dataset:
        mention_text = config.mention_template.format(mention=row["mention"], sentence=row["sentence"])
        mention = _embed_one(model, processors, mention_text, row["mention_image"])
        entities = [
            _embed_one(model, processors, config.entity_template.format(**candidate), image)
            for candidate, image in zip(row["candidates"], row["candidate_images"], strict=True)
        ]
        for task in map(get_task, TASK_NAMES):
            m, gold = mention[task.mention], entities[row["label"]][task.entity]
            if m is None or gold is None:
                continue
            scores = [float("-inf") if e[task.entity] is None else float(m @ e[task.entity]) for e in entities]
            sums.setdefault((task.name, row["topic"]), []).append(_rank_by_hand(scores, row["label"]))
    means = {key: [sum(v) / len(values) for v in zip(*values, strict=True)] for key, values in sums.items()}
    return {**means, **_over_topics(means)}


def _over_topics(means: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], list[float]]:
    """The "all" cells: per task, the mean over the topics that have a value (each topic weighing the same)."""
    by_task: dict[str, list[list[float]]] = {}
    for (task, _), values in means.items():
        by_task.setdefault(task, []).append(values)
    return {(task, "all"): [sum(v) / len(rows) for v in zip(*rows, strict=True)] for task, rows in by_task.items()}


def test_candidates_equal_brute_force(model, processors, damaged):
    damaged = damaged.select(range(14, 35))  # 13 movies rows, every kind of damage, and 8 books rows
    result = _evaluate(model, processors, damaged)
    reference = _brute_force_candidates(model, processors, damaged)
    cells = _cells(result)
    for key, (accuracy, reciprocal) in reference.items():
        assert cells[key]["accuracy"] == pytest.approx(accuracy, abs=1e-6), key
        assert cells[key]["mrr"] == pytest.approx(reciprocal, abs=1e-6), key
    empty = {key for key, record in cells.items() if record["evaluated"] == 0}
    assert empty == {(task, "books") for task in TASK_NAMES if get_task(task).mention_needs_image}
    assert all(math.isnan(cells[key]["accuracy"]) for key in empty)


def test_kb_equals_brute_force(model, processors, damaged, kb):
    damaged = damaged.select(range(14, 35))
    tasks = [get_task(name) for name in ("T-T", "I-TI", "TI-I")]
    result = _evaluate(model, processors, damaged, kb=kb, protocols=("kb",), tasks=[t.name for t in tasks])
    config = model.config
    entities = {topic: [] for topic in TOPICS}
    for row in kb:
        entities[row["topic"]].append(
            (row["qid"], _embed_one(model, processors, config.entity_template.format(**row), row["image"]))
        )
    values: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in damaged:
        text = config.mention_template.format(mention=row["mention"], sentence=row["sentence"])
        mention = _embed_one(model, processors, text, row["mention_image"])
        topic_kb = entities[row["topic"]]
        gold = next(i for i, (qid, _) in enumerate(topic_kb) if qid == row["gold_qid"])
        for task in tasks:
            m = mention[task.mention]
            if m is None or topic_kb[gold][1][task.entity] is None:
                continue
            scores = [float("-inf") if e[task.entity] is None else float(m @ e[task.entity]) for _, e in topic_kb]
            values.setdefault((task.name, row["topic"]), []).append(_rank_by_hand(scores, gold))
    for record in result.records:
        if record["topic"] == "all":
            continue
        expected = values.get((record["task"], record["topic"]), [])
        assert record["evaluated"] == len(expected)
        if expected:
            assert record["accuracy"] == pytest.approx(sum(a for a, _ in expected) / len(expected), abs=1e-6)
            assert record["mrr"] == pytest.approx(sum(r for _, r in expected) / len(expected), abs=1e-6)


def test_kb_perfect_text_matcher_scores_one(model, processors, instances, kb, monkeypatch):
    # A "model" whose text embedding is a code of the entity a text is about: the gold's for a mention.
    qid_of = {model.config.entity_template.format(**row): row["qid"] for row in kb}
    for row in instances:
        qid_of[model.config.mention_template.format(mention=row["mention"], sentence=row["sentence"])] = row["gold_qid"]
    assert len(qid_of) == kb.num_rows + instances.num_rows, "the fixture's texts must be unique"
    qids = sorted(set(kb["qid"]))
    codes = torch.nn.functional.normalize(torch.randn(len(qids), 64, generator=torch.Generator().manual_seed(0)))
    tokenizer, image_processor = processors
    batch: list[str] = []

    def recording_tokenizer(texts, **kwargs):
        batch[:] = texts
        return tokenizer(texts, **kwargs)

    def encode_text(input_ids, attention_mask=None):
        return torch.stack([codes[qids.index(qid_of[text])] for text in batch])

    monkeypatch.setattr(model, "encode_text", encode_text)
    result = evaluate_model(
        model, recording_tokenizer, image_processor, instances, kb=kb, protocols=("kb",), tasks=("T-T",), progress=False
    )
    assert all(r["accuracy"] == 1.0 and r["mrr"] == 1.0 for r in result.records)


# ---------------------------------------------------------------------------------------------
# Ties, exclusions, caching, texts
# ---------------------------------------------------------------------------------------------


def test_constant_model_scores_chance(model, processors, damaged, monkeypatch):
    constant = torch.nn.functional.normalize(torch.ones(1, model.config.projection_dim))
    monkeypatch.setattr(
        model, "encode_text", lambda input_ids, attention_mask=None: constant.expand(len(input_ids), -1)
    )
    monkeypatch.setattr(model, "encode_image", lambda pixel_values: constant.expand(len(pixel_values), -1))
    cells = _cells(_evaluate(model, processors, damaged))
    for task in map(get_task, TASK_NAMES):
        chance: dict[tuple[str, str], list[float]] = {}
        for row in damaged:
            has = [image is not None for image in row["candidate_images"]]
            if (task.mention_needs_image and row["mention_image"] is None) or (
                task.entity_needs_image and not has[row["label"]]
            ):
                continue
            chance.setdefault((task.name, row["topic"]), []).append(
                1 / (sum(has) if task.entity_needs_image else len(has))
            )
        means = {key: [sum(values) / len(values)] for key, values in chance.items()}
        for key, (value,) in {**means, **_over_topics(means)}.items():
            assert cells[key]["accuracy"] == pytest.approx(value, abs=1e-9), key
        assert cells[task.name, "all"]["accuracy"] < 0.9


def test_exclusions_match_the_tasks_column(model, processors, instances):
    cells = _cells(_evaluate(model, processors, instances))
    for topic in TOPICS:
        rows = instances.filter(lambda r, t=topic: r["topic"] == t)
        for task in TASK_NAMES:
            record = cells[task, topic]
            assert record["evaluated"] + record["excluded"] == rows.num_rows
            assert record["excluded"] == sum(task not in usable for usable in rows["tasks"])
    mentions_without_image = sum(image is None for image in instances["mention_image"])
    assert cells["I-T", "all"]["excluded"] == mentions_without_image


def test_a_split_without_any_image_scores_text_tasks_and_excludes_the_rest(model, processors, instances, kb):
    def no_images(row):
        return {"mention_image": None, "candidate_images": [None] * len(row["candidates"])}

    text_only = instances.map(no_images, features=instances.features)
    kb_text_only = kb.map(lambda row: {"image": None}, features=kb.features)
    full = _evaluate(model, processors, instances, kb=kb, protocols=("candidates", "kb"))
    result = _evaluate(model, processors, text_only, kb=kb_text_only, protocols=("candidates", "kb"))
    before = {(r["protocol"], r["task"], r["topic"]): r for r in full.records}
    for record in result.records:
        if record["task"] == "T-T":
            assert record == before[record["protocol"], "T-T", record["topic"]]
        else:
            assert record["evaluated"] == 0, record
            assert record["excluded"] == before[record["protocol"], "T-T", record["topic"]]["evaluated"]
            assert math.isnan(record["accuracy"])


def test_leak_free_protocols_leave_out_leaked_instances_and_count_them(model, processors, instances, kb):
    from m3el_hf.benchmark import PROTOCOLS, is_leak

    result = _evaluate(model, processors, instances, kb=kb, protocols=PROTOCOLS)
    cells = {(r["protocol"], r["task"], r["topic"]): r for r in result.records}
    leaked = [is_leak(kind) for kind in instances["mention_image_leak"]]
    assert 0 < sum(leaked) < len(leaked)
    clean = instances.select([i for i, flag in enumerate(leaked) if not flag])
    reference = _evaluate(model, processors, clean, kb=kb, protocols=("candidates", "kb"))
    for r in reference.records:
        free = cells.get((f"{r['protocol']}-leak-free", r["task"], r["topic"]))
        if not get_task(r["task"]).mention_needs_image:
            assert free is None  # text mentions cannot leak an image: no leak-free twin
            continue
        full = cells[r["protocol"], r["task"], r["topic"]]
        assert (free["evaluated"], free["excluded"]) == (r["evaluated"], full["excluded"])
        assert free["leaked"] == full["evaluated"] - r["evaluated"] and full["leaked"] == 0
        for key in ("accuracy", "hits@3", "mrr"):
            assert free[key] == pytest.approx(r[key], nan_ok=True), (r["protocol"], r["task"], r["topic"], key)
    # Data without the column, which prepare writes: refused in one line, before any encoding.
    without = instances.remove_columns(["mention_image_leak", "mention_image_near_candidates"])
    with pytest.raises(ValueError, match="lacks the column 'mention_image_leak', which the leak-free protocols read"):
        _evaluate(model, processors, without, protocols=("candidates-leak-free",))


def test_each_text_and_image_is_encoded_once(model, processors, instances, kb, monkeypatch):
    counts = {"text": 0, "image": 0}
    encode_text, encode_image = model.encode_text, model.encode_image

    def count_text(input_ids, attention_mask=None):
        counts["text"] += len(input_ids)
        return encode_text(input_ids, attention_mask)

    def count_image(pixel_values):
        counts["image"] += len(pixel_values)
        return encode_image(pixel_values)

    monkeypatch.setattr(model, "encode_text", count_text)
    monkeypatch.setattr(model, "encode_image", count_image)
    _evaluate(model, processors, instances, kb=kb, protocols=("candidates", "kb"), batch_size=7)
    config = model.config
    texts = {config.mention_template.format(mention=r["mention"], sentence=r["sentence"]) for r in instances}
    texts |= {config.entity_template.format(**c) for candidates in instances["candidates"] for c in candidates}
    texts |= {config.entity_template.format(**r) for r in kb}
    raw = instances.cast_column("mention_image", datasets.Image(decode=False)).cast_column(
        "candidate_images", datasets.List(datasets.Image(decode=False))
    )
    images = {v["bytes"] for v in raw["mention_image"] if v} | {
        v["bytes"] for row in raw["candidate_images"] for v in row if v
    }
    images |= {v["bytes"] for v in kb.cast_column("image", datasets.Image(decode=False))["image"] if v}
    occurrences = sum(map(len, instances["candidates"]))
    assert counts == {"text": len(texts), "image": len(images)}
    assert counts["text"] < len(instances) + occurrences + kb.num_rows


@pytest.mark.parametrize("augment", [True, False])
def test_texts_fed_to_the_model(tiny_clip_path, processors, instances, augment, monkeypatch):
    model = CLIPNDModel.from_pretrained(tiny_clip_path, augment_description=augment)
    tokenizer, image_processor = processors
    fed: list[str] = []

    def recording_tokenizer(texts, **kwargs):
        fed.extend(texts)
        return tokenizer(texts, **kwargs)

    evaluate_model(model, recording_tokenizer, image_processor, instances, tasks=("T-T",), progress=False)
    mentions = {f"{r['mention']} : {r['sentence']}" for r in instances}
    candidates = [c for row in instances["candidates"] for c in row]
    entities = {f"{c['name']} : {c['description']}" if augment else c["name"] for c in candidates}
    assert sorted(fed) == sorted(mentions | entities)
    # The mention side sees its own text only: never a description, in particular never the gold's.
    for row in instances:
        fed_for_mention = [text for text in fed if row["sentence"] in text]
        assert fed_for_mention == [f"{row['mention']} : {row['sentence']}"]


def test_bad_arguments(model, processors, instances):
    with pytest.raises(ValueError, match="pass `kb=`"):
        _evaluate(model, processors, instances, protocols=("kb",))
    with pytest.raises(ValueError, match="Unknown task 'X-Y'"):
        _evaluate(model, processors, instances, tasks=("X-Y",))
    with pytest.raises(ValueError, match="lacks the column"):
        _evaluate(model, processors, instances.remove_columns("mention_image"))


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def test_cli_writes_json_and_prints_table(tiny_clip_path, release, tmp_path, capsys):
    output = tmp_path / "results.json"
    args = ["evaluate", "--model", str(tiny_clip_path), "--model-name", "CLIP", "--data", str(release)]
    args += ["--split", "train", "--protocol", "candidates", "kb", "--max-instances", "5"]
    assert main([*args, "--output", str(output), "--plot", str(tmp_path / "a.png")]) == 0
    printed = capsys.readouterr().out
    assert "CLIP: accuracy (%) (instances evaluated), protocol 'candidates'" in printed and "protocol 'kb'" in printed
    records = read_results(output)
    assert {r["protocol"] for r in records} == {"candidates", "kb"}
    assert {r["topic"] for r in records} == {*TOPICS, "all"}
    assert all(r["evaluated"] + r["excluded"] == 5 for r in records if r["topic"] != "all")
    assert (tmp_path / "a.png").stat().st_size > 0


def test_cli_labels_runs_and_writes_leaderboard_entries_for_any_model(tiny_clip_path, release, tmp_path, capsys):
    run = tmp_path / "my-run" / "final"
    shutil.copytree(tiny_clip_path, run)
    output, entries = tmp_path / "results.json", tmp_path / "entries"
    args = ["evaluate", "--model", str(run), str(tiny_clip_path), "--data", str(release)]
    args += ["--output", str(output), "--eval-results", str(entries)]
    assert main([*args, "--dataset-id", "me/m3el"]) == 2  # refused before evaluating: nothing written
    assert capsys.readouterr().err == (
        "m3el-hf evaluate: error: Refusing leaderboard entries for me/m3el: the scores come from synthetic data. "
        "Evaluate --data me/m3el, or pass --unofficial-data to write them anyway, each entry saying so.\n"
    )
    assert not output.exists() and not entries.exists()
    assert main([*args, "--dataset-id", "me/m3el", "--unofficial-data"]) == 0
    payload = json.loads(output.read_text())
    assert {r["model"] for r in payload["records"]} == {"my-run", tiny_clip_path.name}
    assert payload["synthetic"] is True  # the release was made by m3el-hf synth
    written = yaml.safe_load((entries / "my-run" / ".eval_results" / "m3el.yaml").read_text())
    expected = {
        task_id(r["topic"], r["task"], r["protocol"]): round(100 * r["accuracy"], 5)
        for r in payload["records"]
        if r["model"] == "my-run" and r["accuracy"] is not None and r["topic"] != "all"
    }
    assert {r["protocol"] for r in payload["records"]} == {"candidates", "candidates-leak-free"}  # the defaults
    assert {e["dataset"]["task_id"]: e["value"] for e in written} == expected
    assert len(expected) == 2 * (9 + 6)  # movies and books (not all five topics: no overall); 6 leak-free tasks
    revision = payload["provenance"]["dataset_revision"]
    assert payload["provenance"]["harness"] == "builtin" and revision.startswith("sha256:")
    assert all(e["dataset"] == {"id": "me/m3el", "task_id": e["dataset"]["task_id"]} for e in written)  # no commit
    assert all(
        f"; harness: m3el-hf's built-in evaluator (not MTEB); m3el-hf {m3el_hf.__version__}, transformers "
        in e["notes"]
        and e["notes"].endswith(
            f"data: local folder {release.name} at {revision} (synthetic data); unofficial: the scores come from "
            "synthetic data"
        )
        for e in written
    )
    assert f"m3el-hf push-model {entries / 'my-run'} --repo OWNER/MODEL --create-pr" in capsys.readouterr().out

    assert main([*args[:-2], "--model-name", "a", "a", "--output", str(output)]) == 2
    assert "share the label(s) ['a']" in capsys.readouterr().err
    assert main([*args[:-2], "--output", str(output), "--eval-results", str(entries)]) == 2
    assert "--eval-results needs --dataset-id" in capsys.readouterr().err
    assert main([*args, "--dataset-id", "me/m3el", "--split", "train"]) == 2
    assert "--eval-results writes the leaderboard's scores: the whole 'test' split" in capsys.readouterr().err
    assert main([*args, "--dataset-id", "me/m3el", "--max-instances", "3"]) == 2
    assert "--max-instances 3" in capsys.readouterr().err


def test_cli_rejects_an_unknown_task(tiny_clip_path, release, tmp_path, capsys):
    args = ["evaluate", "--model", str(tiny_clip_path), "--data", str(release), "--tasks", "T-X"]
    assert main([*args, "--output", str(tmp_path / "r.json")]) == 2
    assert "Unknown task 'T-X'" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_the_leak_note_reports_what_the_audit_counted(tmp_path):
    from m3el_hf.evaluation.command import leak_note

    audit = {
        "movies": {"instances": 30, "leaks": {"test/copy": 3, "test/near": 2, "test/none": 20, "train/near_other": 1}},
        "books": {"instances": 10, "leaks": {"train/copy": 1, "train/none": 9}},
    }
    write_json(tmp_path / "prepare_report.json", {"audit": audit})
    note = leak_note(str(tmp_path), ("T-T", "I-I"))
    assert note.startswith("Note: 4 of 35 mention images are the gold entity's image byte for byte and 2 more")
    assert "(17.1% leaked, data audit)" in note
    assert leak_note(str(tmp_path), ("T-T", "T-I")) is None  # no task with a mention image: nothing to say
    assert leak_note("someone/m3el", ("I-I",)) is None  # a Hub id: no local audit to read
    audit = {"movies": {"instances": 30, "leaks": {"test/none": 30}}}
    write_json(tmp_path / "prepare_report.json", {"audit": audit})
    assert leak_note(str(tmp_path), ("I-I",)) is None
