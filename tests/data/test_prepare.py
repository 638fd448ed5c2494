"""prepare: the Hub layout loads with stock datasets, equals the builder, is atomic and reports what it skips."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import datasets
import pytest
from cli_run import run_cli
from huggingface_hub import DatasetCard, ModelCard

from m3el_hf.atomic import process_umask
from m3el_hf.cli import main
from m3el_hf.data.features import INSTANCE_FEATURES, task_columns
from m3el_hf.data.loading import load_topic_splits
from m3el_hf.data.prepare import PrepareConfig, prepare, read_report
from m3el_hf.data.raw_files import M3ELFormatError, iter_raw_dicts
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.layout import REPORT_NAME
from m3el_hf.loading_script import m3el as m3el_builder
from m3el_hf.loading_script.m3el import M3EL, config_names
from m3el_hf.tasks import TASK_NAMES

TOPICS = ("movies", "books")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def raw_release(tmp_path_factory) -> Path:
    return synthesize(SynthConfig(out=tmp_path_factory.mktemp("raw") / "release", instances=80, seed=3, topics=TOPICS))


@pytest.fixture(scope="session")
def prepared(raw_release, tmp_path_factory):
    # Two worker processes; test_prepare_is_deterministic builds again in-process and compares.
    return prepare(
        PrepareConfig(raw=raw_release, out=tmp_path_factory.mktemp("hub") / "m3el", topics=TOPICS, num_proc=2)
    )


def raw_records(release: Path, topic: str) -> list[dict]:
    (path,) = release.glob(f"{topic}.*")
    return [value for _, _, value in iter_raw_dicts(path)]


def stock_load(folder: Path, script: str) -> dict:
    """Run `script` in a fresh interpreter in the folder's parent, where only stock datasets is imported."""
    code = (
        "import json, os, sys, datasets\n"
        f"{script}\n"
        "assert not any(m.startswith('m3el_hf') for m in sys.modules), 'm3el_hf was imported'\n"
        "print(json.dumps(result))\n"
        # A half-read streaming iterator can abort the interpreter at exit (pyarrow; the README's known
        # upstream issue): leave without the shutdown, as the README advises.
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folder.parent, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_layout_and_report(prepared):
    out = prepared.out
    assert (out / "README.md").is_file()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == sorted(
        [f"data/{t}/{s}-00000-of-00001.parquet" for t in TOPICS for s in ("train", "validation", "test")]
        + [f"kb/{t}/kb-00000-of-00001.parquet" for t in TOPICS]
    )
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["skipped"]["records_skipped"] == {} and report["options"]["raw"] == "release"
    assert report.pop("format_version") == 1 and read_report(out) == report
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".m3el")]
    umask = process_umask()
    assert {p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")] if p.is_dir()} == {0o777 & ~umask}
    assert {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()} == {0o666 & ~umask}


def test_stock_load_dataset_reads_every_kind_of_config(prepared, raw_release):
    result = stock_load(
        prepared.out,
        "result = {}\n"
        "for name in ['movies', 'movies-I-T', 'books-TI-TI', 'all', 'movies-kb']:\n"
        "    ds = datasets.load_dataset('m3el', name)\n"
        "    result[name] = {s: [d.num_rows, d.column_names] for s, d in ds.items()}\n"
        "row = datasets.load_dataset('m3el', 'movies', split='test')[0]\n"
        "result['image'] = type(row['mention_image']).__module__ if row['mention_image'] else None\n",
    )
    movies = len(raw_records(raw_release, "movies"))
    assert sum(n for n, _ in result["movies"].values()) == movies
    assert {s: n for s, (n, _) in result["movies"].items()} == dict(prepared.audit.topic("movies").splits)
    assert result["movies"]["train"][1] == list(INSTANCE_FEATURES)
    assert result["movies-I-T"]["train"][1] == task_columns("I-T")
    assert "mention" not in result["movies-I-T"]["train"][1] and "candidate_images" not in task_columns("I-T")
    assert result["books-TI-TI"]["test"][1] == task_columns("TI-TI")
    assert sum(n for n, _ in result["all"].values()) == movies + len(raw_records(raw_release, "books"))
    assert result["movies-kb"]["kb"][0] == prepared.audit.topic("movies").kb_entities
    assert result["image"].startswith("PIL.")


def test_stock_streaming_yields_the_same_first_rows(prepared):
    result = stock_load(
        prepared.out,
        "result = {}\n"
        "for name in ['movies', 'movies-T-T']:\n"
        "    stream = datasets.load_dataset('m3el', name, split='validation', streaming=True)\n"
        "    full = datasets.load_dataset('m3el', name, split='validation')\n"
        "    result[name] = [[r['id'] for r in stream], list(full['id']), sorted(next(iter(stream)))]\n",
    )
    for name, (streamed, loaded, keys) in result.items():
        assert streamed == loaded and len(loaded) > 0
        assert keys == sorted(task_columns("T-T") if name.endswith("T-T") else INSTANCE_FEATURES)


@pytest.mark.parametrize("streaming", [False, True])
def test_builder_matches_prepared_files_and_the_raw_records(prepared, raw_release, tmp_path, streaming, monkeypatch):
    passes = []
    read_records = m3el_builder.iter_records
    monkeypatch.setattr(m3el_builder, "iter_records", lambda *a, **k: passes.append(a) or read_records(*a, **k))
    builder = M3EL(config_name="movies", data_dir=str(raw_release), cache_dir=str(tmp_path))
    if streaming:
        built = builder.as_streaming_dataset(split="test")
    else:
        builder.download_and_prepare()
        built = builder.as_dataset(split="test")
        # One pass wrote every split's rows to a file in the downloads cache; all are gone once read.
        assert not [p for p in tmp_path.rglob("*") if "m3el-splits-" in str(p)]
    files = sorted(str(p) for p in (prepared.out / "data/movies").glob("test-*.parquet"))
    loaded = datasets.load_dataset("parquet", data_files={"test": files}, split="test")
    loaded = loaded.cast_column("mention_image", datasets.Image(decode=False))
    rows = list(built)
    assert len(passes) == 1  # building: one pass for the three splits; streaming: one for the split asked
    assert [r["id"] for r in rows] == list(loaded["id"])
    raw = {(r["Qid"], r["sentence"]): r for r in raw_records(raw_release, "movies")}
    for row, stored in zip(rows, loaded, strict=True):
        assert row["candidates"] == stored["candidates"]
        record = raw[(row["gold_qid"], row["sentence"])]
        assert [c["Qid"] for c in record["candidates"]] == [c["qid"] for c in row["candidates"]]
        assert record["candidates"][row["label"]]["Qid"] == row["gold_qid"]
        assert row["mention"] == record["name"]
        image = record["image"]
        assert (row["mention_image"] is None) == (not image)
        if image:
            path = raw_release / Path(image[2]).relative_to("/M3EL")
            assert stored["mention_image"]["bytes"] == path.read_bytes()


def test_rows_wait_to_be_written_in_batches_bounded_by_their_bytes_not_their_count(raw_release, tmp_path, monkeypatch):
    limit = 60_000  # a few rows of drawn images; a batch of a fixed row count would hold the whole topic
    monkeypatch.setattr(m3el_builder, "BATCH_BYTES", limit)
    tables, read_split_file = [], m3el_builder._read_split_file
    monkeypatch.setattr(
        m3el_builder, "_read_split_file", lambda path: (tables.append(t) or t for t in read_split_file(path))
    )
    builder = M3EL(config_name="movies", data_dir=str(raw_release), cache_dir=str(tmp_path))
    builder.download_and_prepare()
    rows = [row for table in tables for row in table.to_pylist()]
    sizes = [m3el_builder._row_bytes(row) for row in rows]
    assert len(rows) == sum(builder.info.splits[split].num_examples for split in builder.info.splits) == 40
    assert sum(sizes) > 4 * limit and len(tables) >= sum(sizes) // limit
    for table in tables:  # each batch is within the limit, or is one row over it
        weights = [m3el_builder._row_bytes(row) for row in table.to_pylist()]
        assert sum(weights) <= limit or len(weights) == 1, weights


def test_streamed_rows_come_in_batches_bounded_by_bytes(monkeypatch):
    monkeypatch.setattr(m3el_builder, "BATCH_BYTES", 10_000)
    rows = [{"mention_image": {"bytes": b"x" * n, "path": None}, "candidate_images": None} for n in (900, 1900, 9000)]
    rows += [{"mention_image": None, "candidate_images": [{"bytes": b"x" * 30_000, "path": None}, None]}, {}, {}]
    batches = list(m3el_builder._batches(iter(rows)))  # each row also counts 4,096 bytes of text
    assert [len(batch) for batch in batches] == [1, 1, 1, 1, 2] and [row for b in batches for row in b] == rows


def test_nothing_on_the_mention_side_names_the_gold_entity(prepared):
    files = sorted(str(p) for p in (prepared.out / "data").rglob("*.parquet"))
    rows = datasets.load_dataset("parquet", data_files=files, split="train")
    rows = rows.cast_column("mention_image", datasets.Image(decode=False))
    with_image = [row for row in rows if row["mention_image"]]
    assert with_image and all(row["mention_image"]["path"] is None for row in with_image)
    images = rows.cast_column("candidate_images", datasets.List(datasets.Image(decode=False)))["candidate_images"]
    assert all(image["path"] is None and image["bytes"] for row in images for image in row if image)
    for row in rows:
        mention_side = json.dumps([row["mention"], row["sentence"], row["mention_image_source"]])
        assert row["gold_qid"] not in mention_side
        assert row["candidates"][row["label"]]["description"] not in mention_side


def test_audit_counts_match_a_direct_count_of_the_raw_release(prepared, raw_release):
    for topic in TOPICS:
        records = raw_records(raw_release, topic)
        identical = missing = 0
        for r in records:
            gold = next(c for c in r["candidates"] if c["Qid"] == r["Qid"])
            missing += not r["image"]
            if r["image"] and gold["image"]:
                read = [
                    (raw_release / Path(x[2]).relative_to("/M3EL")).read_bytes() for x in (r["image"], gold["image"])
                ]
                identical += read[0] == read[1]
        stats = prepared.audit.topic(topic)
        assert stats.instances == len(records)
        assert stats.mention_image_is_gold_image == identical > 0
        assert stats.mention_images_missing == missing
        assert stats.task_coverage["T-T"] == len(records)
        assert stats.task_coverage["I-T"] == len(records) - missing
        positions = {str(k): v for k, v in sorted(stats.gold_positions.items())}
        assert sum(positions.values()) == len(records)


def test_knowledge_base_has_each_entity_once_from_an_occurrence_with_an_image(raw_release, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(raw_release, release)
    path = release / "movies.json"
    records = json.loads(path.read_text())
    with_image = defaultdict(list)
    for record in records:
        for cand in record["candidates"]:
            if cand["image"]:
                with_image[cand["Qid"]].append(cand)
    # One entity keeps its image in its last occurrence only; another loses it everywhere.
    shared, gone = [qid for qid, cands in with_image.items() if len(cands) >= 2][:2]
    kept = with_image[shared][-1]["image"]
    for cand in with_image[shared][:-1] + with_image[gone]:
        cand["image"] = []
    path.write_text(json.dumps(records))

    result = prepare(PrepareConfig(raw=release, out=tmp_path / "m3el", topics=("movies",), num_proc=1))
    files = [str(p) for p in sorted((result.out / "kb/movies").glob("*.parquet"))]
    kb = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "c1"))
    kb = kb.cast_column("image", datasets.Image(decode=False)).to_list()
    qids = [row["qid"] for row in kb]
    assert sorted(qids) == sorted({c["Qid"] for r in records for c in r["candidates"]})
    assert result.audit.topic("movies").kb_entities == len(kb)
    by_qid = {row["qid"]: row for row in kb}
    assert by_qid[shared]["image"]["bytes"] == (release / Path(kept[2]).relative_to("/M3EL")).read_bytes()
    assert by_qid[shared]["image_source"] == {"file": kept[0], "url": kept[1]}
    assert by_qid[gone]["image"] is None and by_qid[gone]["image_source"] is None
    has_image = [row["image"] is not None for row in kb]
    assert has_image == sorted(has_image, reverse=True)  # entities without any image come last

    # The builder on the raw release (no prepared files) gives the same knowledge base.
    builder = M3EL(config_name="movies-kb", data_dir=str(release), cache_dir=str(tmp_path / "c2"))
    builder.download_and_prepare()
    direct = builder.as_dataset(split="kb").cast_column("image", datasets.Image(decode=False))
    assert direct.to_list() == kb
    with pytest.raises(ValueError, match="instances_dir is for the knowledge-base configs"):
        M3EL(config_name="movies", instances_dir=str(result.out), cache_dir=str(tmp_path / "c3")).download_and_prepare()
    with pytest.raises(FileNotFoundError, match=r"No data/books/train-\*\.parquet in"):
        books_kb = M3EL(config_name="books-kb", instances_dir=str(result.out), cache_dir=str(tmp_path / "c3"))
        books_kb.download_and_prepare()


def test_multi_topic_knowledge_base_from_the_raw_release_equals_the_prepared_one(raw_release, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(raw_release, release)
    path = release / "movies.json"
    records = json.loads(path.read_text())
    imageless = records[0]["candidates"][0]["Qid"]  # a movies entity without any image, so it comes last in movies
    for cand in (c for r in records for c in r["candidates"] if c["Qid"] == imageless):
        cand["image"] = []
    path.write_text(json.dumps(records))
    prepared = prepare(PrepareConfig(raw=release, out=tmp_path / "m3el", topics=TOPICS, num_proc=1))

    builder = M3EL(config_name="all-kb", data_dir=str(release), topics=TOPICS, cache_dir=str(tmp_path / "c1"))
    builder.download_and_prepare()
    direct = builder.as_dataset(split="kb").cast_column("image", datasets.Image(decode=False)).to_list()
    files = {"kb": [str(p) for t in TOPICS for p in sorted((prepared.out / "kb" / t).glob("*.parquet"))]}
    stored = datasets.load_dataset("parquet", data_files=files, split="kb", cache_dir=str(tmp_path / "c2"))
    assert direct == stored.cast_column("image", datasets.Image(decode=False)).to_list()
    topics = [row["topic"] for row in direct]
    assert topics == sorted(topics, key=TOPICS.index)  # each topic's entities together, in topic order
    assert next(row for row in direct if row["qid"] == imageless)["image"] is None


def test_card_parses_back_with_configs_and_audit(prepared):
    card = DatasetCard.load(prepared.out / "README.md")
    names = {c["config_name"] for c in card.data.configs}
    expected = (
        {"all", *TOPICS}
        | {f"{g}-{t}" for g in ("all", *TOPICS) for t in TASK_NAMES}
        | {f"{g}-kb" for g in ("all", *TOPICS)}
    )
    assert names == expected
    assert set(config_names()) >= expected
    assert next(c for c in card.data.configs if c["config_name"] == "movies-I-T")["columns"] == task_columns("I-T")
    total = prepared.audit.total()
    assert f"| **all** | {total.instances} |" in card.text
    assert "Mention image identical to the gold entity's image" in card.text
    assert "2410.18096" in card.text


def test_prepare_is_deterministic(prepared, raw_release, tmp_path):
    again = prepare(PrepareConfig(raw=raw_release, out=tmp_path / "m3el", topics=TOPICS, num_proc=1))
    for path in prepared.out.rglob("*"):
        if path.is_file():
            assert (again.out / path.relative_to(prepared.out)).read_bytes() == path.read_bytes(), path


def broken_release(raw_release: Path, tmp_path: Path) -> Path:
    """A copy of the release with one bad record, one missing image file and one corrupt image."""
    release = tmp_path / "broken"
    shutil.copytree(raw_release, release)
    path = release / "movies.json"
    records = json.loads(path.read_text())
    records[1]["candidates"] = []
    with_images = [r for r in records[2:] if r["image"]]
    (release / Path(with_images[0]["image"][2]).relative_to("/M3EL")).unlink()
    (release / Path(with_images[1]["image"][2]).relative_to("/M3EL")).write_bytes(b"garbage")
    path.write_text(json.dumps(records))
    return release


def test_bad_input_raises_naming_file_and_record(raw_release, tmp_path):
    release = broken_release(raw_release, tmp_path)
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record 1: candidate list is empty"):
        prepare(PrepareConfig(raw=release, out=tmp_path / "m3el", topics=("movies",)))
    assert not (tmp_path / "m3el").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m3el")]


def test_errors_in_worker_processes_name_file_and_record(raw_release, tmp_path):
    release = broken_release(raw_release, tmp_path)
    with pytest.raises(M3ELFormatError, match=r"^movies\.json, record 1: candidate list is empty$") as caught:
        prepare(PrepareConfig(raw=release, out=tmp_path / "m3el", topics=TOPICS, num_proc=2))
    assert (caught.value.file, caught.value.record) == ("movies.json", 1)
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]


def test_skip_mode_counts_everything_it_skips(raw_release, tmp_path):
    release = broken_release(raw_release, tmp_path)
    result = prepare(PrepareConfig(raw=release, out=tmp_path / "m3el", topics=("movies",), on_error="skip"))
    report = json.loads((result.out / REPORT_NAME).read_text())["skipped"]
    assert report["records_skipped"] == {"empty_candidates": 1}
    assert report["images_skipped"].get("missing_image", 0) >= 1
    assert report["images_skipped"].get("undecodable_image", 0) >= 1
    assert result.audit.topic("movies").instances == len(raw_records(raw_release, "movies")) - 1
    assert "Skipped while preparing" in (result.out / "README.md").read_text()
    again = prepare(PrepareConfig(raw=release, out=tmp_path / "again" / "m3el", topics=("movies",), on_error="skip"))
    assert (again.out / REPORT_NAME).read_bytes() == (result.out / REPORT_NAME).read_bytes()
    assert " at 0x" not in (result.out / REPORT_NAME).read_text()  # no object addresses in messages


def test_interrupted_prepare_leaves_old_output_untouched(prepared, raw_release, tmp_path, monkeypatch):
    out = tmp_path / "m3el"
    shutil.copytree(prepared.out, out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("m3el_hf.data.prepare.render_dataset_card", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareConfig(raw=raw_release, out=out, topics=TOPICS, overwrite=True))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m3el"]
    with pytest.raises(FileExistsError, match="already exists and is not empty; pass --overwrite"):
        prepare(PrepareConfig(raw=raw_release, out=out, topics=TOPICS))


def test_cli_prepare_and_clear_errors(raw_release, tmp_path, capsys):
    out = tmp_path / "m3el"
    assert (
        main(["prepare", "--raw", str(raw_release), "--out", str(out), "--topics", "books", "--max-image-side", "16"])
        == 0
    )
    assert "books" in capsys.readouterr().out and (out / "data/books").is_dir()
    assert main(["prepare", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["prepare", "--raw", str(raw_release), "--out", str(out), "--topics", "films"]) == 2
    assert "Unknown topic(s) ['films']; choose from movies, common" in capsys.readouterr().err
    assert main(["prepare", "--raw", str(raw_release), "--out", str(out), "--topics", "books", "books"]) == 2
    assert "Topics must be distinct and at least one, got ['books', 'books']" in capsys.readouterr().err
    assert main(["show", str(out), "--config", "books-T-T"]) == 0
    assert "Data audit" in capsys.readouterr().out


@pytest.mark.slow
def test_a_second_records_file_for_a_topic_is_refused_or_named_with_records(raw_release, tmp_path):
    raw = Path(shutil.copytree(raw_release, tmp_path / "raw"))
    movies = raw_records(raw, "movies")
    (raw / "movies_v0.json").write_text(json.dumps(movies + movies[:5]), encoding="utf-8")  # an older copy
    out = tmp_path / "m3el"
    done = run_cli("prepare", "--raw", str(raw), "--out", str(out), "--topics", "movies", "books")
    assert done.returncode == 2 and not out.exists() and not list(tmp_path.glob(".m3el*"))
    assert done.stderr == (
        f"m3el-hf prepare: error: Topic 'movies' has 2 candidate records files in {raw} (movies.json, "
        "movies_v0.json), but reads one, named movies.json, movies.jsonl or movies.txt: remove or rename the "
        "others, or name the one to read with --records movies=FILE.\n"
    )
    done = run_cli("prepare", "--raw", str(raw), "--out", str(out), "--topics", "books", "--records", "movies=a.json")
    assert done.returncode == 2 and not out.exists()
    assert done.stderr == "m3el-hf prepare: error: --records movies=a.json: 'movies' is not one of the topics books.\n"
    args = ("prepare", "--raw", str(raw), "--out", str(out), "--topics", "movies", "books")
    done = run_cli(*args, "--records", "movies=movies_v0.json")
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    assert lines["movies"].startswith(f"movies   {len(movies) + 5:7d} instances")
    assert lines["movies"].endswith("; 5 exact duplicate instances kept")
    assert lines["books"].endswith("; 0 exact duplicate instances kept")
    report = read_report(out)
    assert report["records_files"] == {"movies": "movies_v0.json", "books": "books.json"}
    assert report["audit"]["movies"]["duplicates"] == 5


@pytest.mark.slow
def test_non_editable_install_in_a_fresh_venv(tmp_path):
    """`pip install .` (not editable) into a new venv: the console script, the builder and the shipped files.

    The venv sees this environment's dependencies through a .pth file (so nothing is downloaded), but not its
    editable m3el_hf: .pth files found through another .pth are not processed.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, script = venv / "bin" / "python", venv / "bin" / "m3el-hf"
    (site_packages,) = venv.glob("lib/python*/site-packages")
    outer = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "datasets").is_dir())
    (site_packages / "outer-dependencies.pth").write_text(f"{outer}\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--no-build-isolation", str(REPO)], check=True, capture_output=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    # The commands run where another m3el_hf source tree lies, as in the root of a clone: neither they nor their
    # worker processes may import it.
    work = tmp_path / "work"
    (work / "m3el_hf").mkdir(parents=True)
    decoy = work / "m3el_hf" / "imported"
    (work / "m3el_hf" / "__init__.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('imported').touch()\nraise ImportError('the decoy tree')\n"
    )

    def run(*args):
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert not decoy.exists(), f"{args[:2]} imported the m3el_hf tree of the working directory"
        return done.stdout

    run(str(script), "synth", "--out", "raw", "--instances", "40", "--topics", "sports", "books")
    run(str(script), "prepare", "--raw", "raw", "--out", "m3el", "--topics", "sports", "books", "--num-proc", "2")
    assert (work / "m3el" / "README.md").read_text().count("books-kb") >= 1
    shipped = run(
        str(python),
        "-P",  # python -c puts the working directory first on sys.path; -P (safe path) does not
        "-c",
        "import evaluate, m3el_hf, m3el_hf.loading_script.m3el as builder\n"
        "from importlib import resources\n"
        "from m3el_hf.evaluation.metrics import evaluate_module_path\n"
        "from m3el_hf.training.config import recipe_path\n"
        "metric = evaluate.load(evaluate_module_path())\n"
        "print(m3el_hf.__file__, builder.__file__, recipe_path('tiny-cpu'), evaluate_module_path())\n"
        "print(resources.files('m3el_hf.model_cards').joinpath('model_card.md').is_file())\n"
        "print(metric.compute(scores=[[0.1, 0.9]], gold=[1])['accuracy'])\n",
    ).split()
    assert all(path.startswith(str(site_packages)) for path in shipped[:4]), shipped
    assert shipped[4:] == ["True", "1.0"]
    # Both cards render from the installed templates: the dataset card (above) and a model card.
    run(str(python), "-P", "-c", "from m3el_hf.modeling.tiny import build_tiny_clip; build_tiny_clip('ckpt')")
    train = ("--recipe", "tiny-cpu", "--model", "ckpt", "--data", "m3el", "--topics", "sports", "books")
    run(str(script), "train", *train, "--output-dir", "run", "--max-steps", "2", "--eval-split", "none")
    run(str(script), "evaluate", "--model", "run/final", "--data", "m3el", "--output", "results.json")
    assert {r["model"] for r in json.loads((work / "results.json").read_text())["records"]} == {"run"}
    push = ("push-model", "ckpt", "--repo", "me/clipnd", "--dataset-id", "me/m3el", "--license", "apache-2.0")
    run(str(script), *push, "--dry-run", "staged")
    card = ModelCard.load(work / "staged" / "README.md")
    assert card.data.datasets == ["me/m3el"] and 'pipeline("zero-shot-image-classification"' in card.text


def test_a_release_too_small_for_every_split_still_loads(tmp_path):
    raw = synthesize(SynthConfig(out=tmp_path / "raw", instances=3, seed=0, topics=("sports",)))
    result = prepare(PrepareConfig(raw=raw, out=tmp_path / "m3el", topics=("sports",)))
    present = {split for split, n in result.audit.topic("sports").splits.items() if n}
    assert present and present != {"train", "validation", "test"}
    loaded = stock_load(result.out, "result = sorted(datasets.load_dataset('m3el', 'sports-T-T'))")
    assert loaded == sorted(present)


def test_load_topic_splits_leaves_out_a_topic_without_the_split(tmp_path, caplog):
    raw = synthesize(SynthConfig(out=tmp_path / "raw", instances=10, seed=0, topics=("sports", "books")))
    result = prepare(PrepareConfig(raw=raw, out=tmp_path / "m3el", topics=("sports", "books")))
    splits = {topic: {s for s, n in result.audit.topic(topic).splits.items() if n} for topic in ("sports", "books")}
    lacking = [s for s in ("validation", "test") if (s in splits["sports"]) != (s in splits["books"])]
    assert lacking, splits  # the seed gives one topic a split the other lacks
    split = lacking[0]
    having = [topic for topic in ("sports", "books") if split in splits[topic]]
    loaded = load_topic_splits(str(result.out), ("sports", "books"), split)
    assert list(loaded) == having and loaded[having[0]].num_rows == result.audit.topic(having[0]).splits[split]
    assert "have no" in caplog.text and split in caplog.text
    nowhere = next(s for s in ("train", "validation", "test") if not any(s in found for found in splits.values()))
    with pytest.raises(ValueError, match=f"no topic of \\['sports', 'books'\\] has a '{nowhere}' split"):
        load_topic_splits(str(result.out), ("sports", "books"), nowhere)


def _gold_image_file(raw: Path, record: dict) -> Path:
    gold = next(c for c in record["candidates"] if c["Qid"] == record["Qid"])
    return raw / gold["image"][2].removeprefix("/M3EL/")


@pytest.fixture(scope="module")
def real_world_release(tmp_path_factory, real_photos) -> tuple[Path, dict[str, dict]]:
    """A synthetic release whose gold images of five records are real-world files; those records, by kind."""
    import numpy as np
    import PIL.Image
    from photos import bomb_png, encoded, rotated_jpeg

    raw = synthesize(SynthConfig(out=tmp_path_factory.mktemp("real") / "raw", instances=30, seed=1, topics=("movies",)))
    records = [
        r for r in raw_records(raw, "movies") if any(c["Qid"] == r["Qid"] and c["image"] for c in r["candidates"])
    ]
    sixteen = np.asarray(real_photos["camera"], dtype=np.uint16) * 257
    files = {
        "bomb": bomb_png(),
        "rotated": rotated_jpeg(real_photos["grace_hopper"]),
        "sixteen_bit": encoded(PIL.Image.fromarray(sixteen), "PNG"),
        "cmyk_tiff": encoded(real_photos["coffee"].convert("CMYK"), "TIFF"),
        "palette_alpha": encoded(real_photos["logo"].convert("RGBA").convert("P"), "PNG", transparency=0),
        "corrupt_pixels": _corrupt_png(encoded(real_photos["coffee"], "PNG")),
    }
    chosen = {}
    for (kind, data), record in zip(files.items(), records, strict=False):
        _gold_image_file(raw, record).write_bytes(data)
        chosen[kind] = record
    return raw, chosen


def _corrupt_png(data: bytes) -> bytes:
    """`data` with its first IDAT chunk's compressed bytes garbled: the header and IEND stay whole."""
    start = data.index(b"IDAT") + 4
    return data[:start] + bytes(b ^ 0x5A for b in data[start : start + 200]) + data[start + 200 :]


def _gold_images(folder: Path, records: dict[str, dict], decode: bool = True) -> dict[str, object]:
    """The gold image of each record's row, as stock `datasets` decodes it (or undecoded)."""
    by_key = {(r["Qid"], r["name"]): kind for kind, r in records.items()}
    found = {}
    for split in datasets.load_dataset(str(folder), "movies").values():
        if not decode:
            split = split.cast_column("candidate_images", datasets.List(datasets.Image(decode=False)))
        for row in split:  # every row decodes: nothing prepare accepted makes stock reading raise
            kind = by_key.get((row["gold_qid"], row["mention"]))
            if kind:
                found[kind] = row["candidate_images"][row["label"]]
    return found


def test_real_world_images_are_refused_or_stored_so_every_reader_agrees(real_world_release, real_photos, tmp_path):
    import numpy as np

    from m3el_hf.images import open_image, to_rgb

    raw, records = real_world_release
    result = prepare(PrepareConfig(raw=raw, out=tmp_path / "m3el", topics=("movies",), on_error="skip", num_proc=1))
    # The KB reuses the instances' images; pixels that do not decode are found by the one decode of each image.
    assert result.report.to_dict()["images_skipped"] == {"image_too_large": 1, "undecodable_image": 1}
    # Over twice PIL's limit, PIL refuses to open it: its own message gives the size.
    assert any(
        "(900000000 pixels) exceeds" in e and "over the limit of 89,478,485" in e for e in result.report.examples
    )
    stored = _gold_images(result.out, records, decode=False)
    decoded = _gold_images(result.out, records)
    assert stored["bomb"] is None and decoded["bomb"] is None
    assert stored["corrupt_pixels"] is None
    # An EXIF-rotated JPEG is kept byte for byte: stock decoding turns it upright, as our decoding does.
    assert decoded["rotated"].size == real_photos["grace_hopper"].size
    assert np.array_equal(np.asarray(open_image(stored["rotated"])), np.asarray(decoded["rotated"]))
    # A 16-bit PNG and a CMYK TIFF are stored as 8-bit PNG, scaled: stock readers see what we see.
    assert decoded["sixteen_bit"].mode == "L"
    assert np.array_equal(np.asarray(decoded["sixteen_bit"]), np.asarray(real_photos["camera"]))
    assert decoded["cmyk_tiff"].mode == "RGB"
    assert np.array_equal(
        np.asarray(decoded["cmyk_tiff"]), np.asarray(real_photos["coffee"].convert("CMYK").convert("RGB"))
    )
    assert decoded["palette_alpha"].mode == "P"
    assert np.array_equal(
        np.asarray(to_rgb(decoded["palette_alpha"])), np.asarray(to_rgb(open_image(stored["palette_alpha"])))
    )


def test_a_decompression_bomb_stops_prepare_naming_it(real_world_release, tmp_path):
    raw, _ = real_world_release
    with pytest.raises(M3ELFormatError, match=r"movies\.json, record \d+: image too large: .* \(--max-pixels\)"):
        prepare(PrepareConfig(raw=raw, out=tmp_path / "m3el", topics=("movies",), num_proc=1))


def test_image_size_stores_every_large_image_upright_at_the_shorter_side(real_world_release, real_photos, tmp_path):
    import PIL.Image

    raw, records = real_world_release
    out = tmp_path / "m3el"
    prepare(PrepareConfig(raw=raw, out=out, topics=("movies",), on_error="skip", num_proc=1, image_size=224))
    stored = _gold_images(out, records, decode=False)
    with PIL.Image.open(io.BytesIO(stored["rotated"]["bytes"])) as image:
        assert (image.format, image.size) == ("JPEG", (224, 262))  # upright: the photo is 512 x 600
        assert PIL.Image.ExifTags.Base.Orientation not in image.getexif()
    with PIL.Image.open(io.BytesIO(stored["palette_alpha"]["bytes"])) as image:
        assert (image.format, image.mode, min(image.size)) == ("PNG", "RGBA", 224)
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["options"]["image_size"] == 224
    assert "shorter side is 224 px" in (out / "README.md").read_text()


def test_leak_columns_agree_with_the_images_and_the_audit(prepared):
    from collections import Counter

    from m3el_hf.data.leak import LeakDetector

    detector, counts = LeakDetector(), Counter()
    for topic in TOPICS:
        splits = datasets.load_dataset(str(prepared.out), topic)
        for split, rows in splits.items():
            rows = rows.cast_column("mention_image", datasets.Image(decode=False)).cast_column(
                "candidate_images", datasets.List(datasets.Image(decode=False))
            )
            for row in rows:
                mention, label = row["mention_image"], row["label"]
                images = [image["bytes"] if image else None for image in row["candidate_images"]]
                expected = detector.check(mention["bytes"] if mention else None, images, label)
                assert (row["mention_image_leak"], row["mention_image_near_candidates"]) == expected
                if row["mention_image_leak"] == "copy":
                    assert mention["bytes"] == images[label]
                if mention is not None:
                    counts[topic, f"{split}/{row['mention_image_leak'] or 'unknown'}"] += 1
    for topic in TOPICS:
        audit = prepared.audit.topic(topic).leaks
        assert {k: v for k, v in audit.items() if not k.endswith("near_other")} == {
            key: n for (t, key), n in counts.items() if t == topic
        }
    assert counts[("movies", "train/copy")] > 0
    card = (prepared.out / "README.md").read_text()
    assert "## The mention-image leak" in card and "| movies | train |" in card
