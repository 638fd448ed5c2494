"""Hub publishing: cards parse back with the right scores, dry runs load with stock libraries and make no
request, pushes send what huggingface_hub 2.4 sends (intercepted at the httpx2 boundary), tokens never leak."""

from __future__ import annotations

import base64
import json
import logging
import shutil
from pathlib import Path

import datasets
import httpx2
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard, parse_eval_result_entries
from huggingface_hub.utils import _http, set_client_factory
from PIL import Image

from m3el_hf.cli import main
from m3el_hf.data.benchmark import eval_yaml, task_id
from m3el_hf.data.prepare import PrepareConfig, is_synthetic, prepare
from m3el_hf.data.synth import SynthConfig, synthesize
from m3el_hf.hub.leaderboard import EVAL_RESULTS_DIR, eval_results_files, write_eval_results
from m3el_hf.hub.model_card import build_model_card
from m3el_hf.hub.push import push_dataset, push_model
from m3el_hf.hub.staging import refresh_dataset_card
from m3el_hf.tasks import TASK_NAMES

TOKEN = "hf_SECRETtoken0123456789abcdef"
MODELS = ("zero-shot CLIP", "CLIP_ND (name only)", "CLIP_ND")
JUNK = ("optimizer.bin", "scheduler.pt", "random_states_0.pkl", "checkpoints/step-1/model.safetensors", ".work/x")


# ---------------------------------------------------------------------------------------------
# Fixtures: a prepared release, a checkpoint with training leftovers, an evaluation's records
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub-data")
    raw = synthesize(SynthConfig(out=root / "raw", instances=40, seed=0, topics=("movies",)))
    return prepare(PrepareConfig(raw=raw, out=root / "m3el", topics=("movies",))).out


@pytest.fixture(scope="session")
def checkpoint(tiny_clip_path, tmp_path_factory) -> Path:
    from m3el_hf import CLIPNDModel

    path = tmp_path_factory.mktemp("hub-ckpt") / "clipnd"
    CLIPNDModel.from_pretrained(tiny_clip_path).save_pretrained(path)
    for file in tiny_clip_path.iterdir():
        if file.suffix in (".json", ".txt") and file.name != "config.json":
            shutil.copy(file, path / file.name)
    summary = {
        "config": {
            "model": "openai/clip-vit-base-patch32",
            "data": "demo-out/m3el",
            "output_dir": "/home/someone/private/out",
            "topics": ["movies"],
            "tasks": list(TASK_NAMES),
            "augment_description": True,
            "seed": 0,
        },
        "steps": 12,
        "epochs": 1.5,
        "hardware": {"device_type": "cpu", "device_name": "cpu", "num_processes": 1, "mixed_precision": "no"},
        "wall_time_s": 3.5,
        "losses": [2.0, 1.5],
    }
    (path / "training_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (path / "README.md").write_text("old card\n", encoding="utf-8")
    for junk in JUNK:
        (path / junk).parent.mkdir(parents=True, exist_ok=True)
        (path / junk).write_bytes(b"state")
    return path


def _record(model: str, protocol: str, topic: str, task: str, accuracy: float | None) -> dict:
    return {
        "model": model,
        "checkpoint": "clipnd" if model.startswith("CLIP_ND") else "openai/clip-vit-base-patch32",
        "protocol": protocol,
        "topic": topic,
        "task": task,
        "split": "test",
        "accuracy": accuracy,
        "hits@1": accuracy,
        "hits@3": None if accuracy is None else min(1.0, accuracy + 0.2),
        "hits@5": None if accuracy is None else min(1.0, accuracy + 0.3),
        "mrr": None if accuracy is None else accuracy + 0.05,
        "evaluated": 0 if accuracy is None else 4,
        "excluded": 4 if accuracy is None else 0,
        "ties": "expected",
    }


@pytest.fixture(scope="session")
def records() -> list[dict]:
    out = []
    for m, model in enumerate(MODELS):
        for protocol in ("candidates", "kb"):
            for topic in ("movies", "all"):
                for t, task in enumerate(TASK_NAMES):
                    value = None if (model, task, protocol) == ("CLIP_ND", "I-I", "kb") else 0.1 + 0.25 * m + 0.01 * t
                    out.append(
                        _record(model, protocol, topic, task, value / (2 if protocol == "kb" else 1) if value else None)
                    )
    return out


@pytest.fixture(scope="session")
def results_file(records, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub-results") / "results.json"
    path.write_text(json.dumps({"dataset": "demo-out/m3el", "ties": "expected", "records": records}), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def plot(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub-plot") / "acc.png"
    Image.new("RGB", (8, 8), "white").save(path)
    return path


# ---------------------------------------------------------------------------------------------
# The HTTP boundary
# ---------------------------------------------------------------------------------------------


class HubMock:
    """Answers every request like the Hub would (regular-mode uploads), and records it."""

    def __init__(self):
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        path, method = request.url.path, request.method
        if path == "/api/repos/create":
            name = json.loads(request.content)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{name['organization']}/{name['name']}"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if "/branch/" in path:
            return httpx2.Response(200, json={})
        if path.endswith("/discussions") and method == "POST":
            return httpx2.Response(200, json={"num": 1})
        if path.endswith("/discussions/1"):
            repo = path.split("/api/")[1].split("/discussions")[0].split("/", 1)
            return httpx2.Response(
                200,
                json={
                    "title": "t",
                    "num": 1,
                    "createdAt": "2025-01-01T00:00:00.000Z",
                    "status": "draft",
                    "repo": {"name": repo[1], "type": repo[0][:-1]},
                    "isPullRequest": True,
                    "changes": {"base": "refs/heads/main"},
                    "filesWithConflicts": [],
                    "events": [],
                },
            )
        if "/commit/" in path:
            kind, repo = path.removeprefix("/api/").split("/commit/")[0].split("/", 1)
            prefix = "" if kind == "models" else f"{kind}/"
            url = f"https://huggingface.co/{prefix}{repo}/commit/{'0' * 40}"
            return httpx2.Response(200, json={"commitUrl": url, "commitOid": "0" * 40})
        return httpx2.Response(404, json={"error": f"unexpected {method} {path}"})

    def calls(self) -> list[tuple[str, str]]:
        """(method, path?query) of every request that reached the Hub API, in order."""
        return [
            (r.method, r.url.raw_path.decode())  # raw: the encoded path and the query, as sent
            for r in self.requests
            if r.url.path != "/api/agent-harnesses"  # huggingface_hub's one-off, unauthenticated agent lookup
        ]

    def committed(self) -> dict[str, bytes]:
        """Path → content of every file sent in commit payloads."""
        files = {}
        for request in self.requests:
            if "/commit/" in request.url.path:
                for line in request.content.decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return files


@pytest.fixture
def hub(monkeypatch):
    mock, previous = HubMock(), _http._GLOBAL_CLIENT_FACTORY
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(mock)))
    yield mock
    set_client_factory(previous)


@pytest.fixture
def no_network(monkeypatch):
    """Fail if anything builds an `HfApi` or asks huggingface_hub for an HTTP client (HF_HUB_OFFLINE=1 too)."""
    import huggingface_hub

    created, previous = [], _http._GLOBAL_CLIENT_FACTORY

    def factory():
        created.append("client")
        raise AssertionError("a dry run must not create an HTTP client")

    def no_api(*args, **kwargs):
        created.append("HfApi")
        raise AssertionError("a dry run must not build an HfApi")

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub, "HfApi", no_api)
    set_client_factory(factory)
    yield created
    set_client_factory(previous)


def assert_no_token(*texts: str | bytes, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert (TOKEN.encode() if isinstance(text, bytes) else TOKEN) not in text
    for folder in folders:
        for file in folder.rglob("*"):
            if file.is_file():
                assert TOKEN.encode() not in file.read_bytes(), file


# ---------------------------------------------------------------------------------------------
# Benchmark definition and cards
# ---------------------------------------------------------------------------------------------


def test_eval_yaml_declares_a_task_per_config_and_prepare_writes_it(prepared):
    text = (prepared / "eval.yaml").read_text(encoding="utf-8")
    assert text == eval_yaml(("movies",))
    spec = yaml.safe_load(text)
    assert {"name", "description", "evaluation_framework", "tasks"} <= spec.keys()
    assert "candidate list" in spec["description"] and "accuracy" in spec["description"]
    ids = [t["id"] for t in spec["tasks"]]
    assert ids == [task_id(topic, task) for topic in ("movies", "all") for task in TASK_NAMES]
    configs = {c["config_name"] for c in DatasetCard.load(prepared / "README.md").data.configs}
    assert all(t["config"] in configs and t["split"] == "test" for t in spec["tasks"])


def test_a_synthetic_release_is_named_synthetic_from_synth_to_the_model_card(prepared, checkpoint, records, tmp_path):
    report = json.loads((prepared / "prepare_report.json").read_text(encoding="utf-8"))
    assert report["synthetic"]["generator"] == "m3el-hf synth" and report["synthetic"]["instances"] == 40
    assert is_synthetic(prepared) is True and is_synthetic("me/m3el") is None
    card = DatasetCard.load(prepared / "README.md")
    assert card.data.pretty_name.startswith("Synthetic") and "synthetic" in card.data.tags
    assert "This is a synthetic release" in card.text
    # The model card learns it from what training recorded about its data (see test_training).
    summary = json.loads((checkpoint / "training_summary.json").read_text(encoding="utf-8"))
    for recorded, flagged in ((True, True), (None, False), (False, False)):
        folder = tmp_path / f"ckpt-{recorded}"
        shutil.copytree(checkpoint, folder)
        summary["synthetic_data"] = recorded
        (folder / "training_summary.json").write_text(json.dumps(summary), encoding="utf-8")
        text = build_model_card(folder, records, repo_id="me/clipnd", dataset_id="me/m3el").text
        assert ("These scores come from a synthetic release" in text) is flagged


def test_refresh_dataset_card_reproduces_prepare_card_for_any_repo_id(prepared):
    assert str(refresh_dataset_card(prepared)) == (prepared / "README.md").read_text(encoding="utf-8")
    card = refresh_dataset_card(prepared, repo_id="me/m3el")
    assert 'load_dataset("me/m3el", "movies")' in card.text
    assert card.data.to_dict() == DatasetCard.load(prepared / "README.md").data.to_dict()


def test_model_card_parses_back_with_results_baselines_and_usage(checkpoint, records, tmp_path):
    card = build_model_card(checkpoint, records, repo_id="me/clipnd", dataset_id="me/m3el", plot_path="x.png")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    ours = [r for r in records if r["model"] == "CLIP_ND" and r["accuracy"] is not None]
    got = {(e.dataset_config, e.metric_config): e.metric_value for e in loaded.data.eval_results}
    assert got == {(f"{r['topic']}-{r['task']}", r["protocol"]): r["accuracy"] for r in ours}
    assert {e.dataset_type for e in loaded.data.eval_results} == {"me/m3el"}
    assert loaded.data.base_model == "openai/clip-vit-base-patch32" and loaded.data.datasets == ["me/m3el"]
    text = loaded.text
    for heading in (line for line in text.splitlines() if line.startswith("###")):
        assert "protocol" in heading, heading
    assert "| task | zero-shot CLIP | CLIP_ND (name only) | CLIP_ND |" in text
    assert "![" in text and "(accuracy.png)" in text
    assert 'CLIPNDModel.from_pretrained("me/clipnd")' in text and 'CLIPModel.from_pretrained("me/clipnd")' in text
    assert "trust_remote_code" in text and "I-I" in text and "augment_description | True" in text
    assert "| hardware | device_type: cpu, device_name: cpu, num_processes: 1, mixed_precision: no |" in text
    assert "/home/someone" not in text  # local paths stay local


def test_eval_results_reference_existing_benchmark_tasks(records):
    files = eval_results_files(records, "me/m3el", dataset_revision="abc123")
    assert list(files) == ["m3el.yaml"]
    entries = parse_eval_result_entries(yaml.safe_load(files["m3el.yaml"]))
    task_ids = {t["id"] for t in yaml.safe_load(eval_yaml(("movies",)))["tasks"]}
    headline = [r for r in records if (r["model"], r["protocol"]) == ("CLIP_ND", "candidates")]
    assert {e.task_id: e.value for e in entries} == {f"{r['topic']}-{r['task']}": r["accuracy"] for r in headline}
    assert {e.task_id for e in entries} <= task_ids
    assert {(e.dataset_id, e.dataset_revision) for e in entries} == {("me/m3el", "abc123")}
    assert all("candidates" in e.notes for e in entries)


def test_write_eval_results_for_any_evaluated_model(records, tmp_path):
    (path,) = write_eval_results(records, tmp_path, "me/m3el", "zero-shot CLIP")
    assert path == tmp_path / EVAL_RESULTS_DIR / "m3el.yaml"
    entries = parse_eval_result_entries(yaml.safe_load(path.read_text(encoding="utf-8")))
    assert len(entries) == 2 * len(TASK_NAMES) and entries[0].value == pytest.approx(0.1)
    assert write_eval_results(records, tmp_path / "none", "me/m3el", "unknown model") == []


# ---------------------------------------------------------------------------------------------
# Dry runs: the exact folders, loadable with stock libraries, no request made
# ---------------------------------------------------------------------------------------------


def test_dataset_dry_run_loads_with_stock_datasets(prepared, tmp_path, no_network, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "staged"
    assert main(["push-dataset", str(prepared), "--repo", "me/m3el", "--dry-run", str(out)]) == 0
    assert not no_network
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files[:3] == [
        "README.md",
        "data/movies/test-00000-of-00001.parquet",
        "data/movies/train-00000-of-00001.parquet",
    ]
    assert "eval.yaml" in files and "prepare_report.json" in files and not any(".work" in f for f in files)
    printed = capsys.readouterr()
    assert "eval.yaml" in printed.out and "nothing was uploaded" in printed.out
    assert 'load_dataset("me/m3el"' in (out / "README.md").read_text(encoding="utf-8")
    # 40 synthetic instances leave the hash-based test split empty, which stock `load_dataset` refuses to
    # materialise ("corresponds to no data"): load the splits that hold rows.
    splits = json.loads((out / "prepare_report.json").read_text(encoding="utf-8"))["audit"]["movies"]["splits"]
    for split in (s for s, n in splits.items() if n):
        rows = datasets.load_dataset(str(out), "movies", split=split, cache_dir=str(tmp_path / "cache"))
        assert rows.num_rows == splits[split] and rows.features["mention_image"].__class__.__name__ == "Image"
    assert_no_token(printed.out, printed.err, caplog.text, folders=(out,))
    with pytest.raises(FileExistsError, match="not empty"):
        push_dataset(prepared, "me/m3el", dry_run_dir=out)


def test_model_dry_run_loads_with_stock_clip(checkpoint, results_file, plot, tmp_path, no_network, capsys, caplog):
    from transformers import CLIPModel

    caplog.set_level(logging.DEBUG)
    out = tmp_path / "staged"
    argv = ["push-model", str(checkpoint), "--repo", "me/clipnd", "--dataset-id", "me/m3el"]
    assert main([*argv, "--results", str(results_file), "--plot", str(plot), "--dry-run", str(out)]) == 0
    assert not no_network
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "accuracy.png", "model.safetensors", "config.json", ".eval_results/m3el.yaml"} <= files
    assert "training_summary.json" in files and not files & set(JUNK)
    published = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))["config"]
    assert published["output_dir"] == "out" and published["model"] == "openai/clip-vit-base-patch32"
    assert json.loads((checkpoint / "training_summary.json").read_text())["config"]["output_dir"].startswith("/home")
    assert (out / "accuracy.png").read_bytes() == plot.read_bytes()
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results and "These scores come from a synthetic" not in card.text  # not synthetic
    assert (checkpoint / "README.md").read_text(encoding="utf-8") == "old card\n"
    model = CLIPModel.from_pretrained(out)
    assert type(model) is CLIPModel and model.config.projection_dim == 16
    printed = capsys.readouterr()
    assert_no_token(printed.out, printed.err, caplog.text, folders=(out,))


def test_model_dry_run_draws_the_plot_and_flags_synthetic_data(checkpoint, records, tmp_path, no_network):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results.json"
    payload = {"dataset": "m3el", "synthetic": True, "ties": "expected", "records": records}
    results.write_text(json.dumps(payload), "utf-8")
    out = tmp_path / "staged"
    push_model(checkpoint, "me/clipnd", results=results, dataset_id="me/m3el", dry_run_dir=out)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "(accuracy.png)" in text and "These scores come from a synthetic release" in text


# ---------------------------------------------------------------------------------------------
# Pushes, at the HTTP boundary
# ---------------------------------------------------------------------------------------------


def test_push_dataset_sends_create_validate_preupload_commit(prepared, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert main(["push-dataset", str(prepared), "--repo", "me/m3el", "--private"]) == 0
    assert hub.calls() == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/datasets/me/m3el/preupload/main"),
        ("POST", "/api/datasets/me/m3el/commit/main"),
    ]
    create = json.loads(hub.requests[[r.url.path for r in hub.requests].index("/api/repos/create")].content)
    assert create == {"name": "m3el", "organization": "me", "type": "dataset", "visibility": "private"}
    committed = hub.committed()
    assert {"README.md", "eval.yaml", "prepare_report.json", "data/movies/test-00000-of-00001.parquet"} <= set(
        committed
    )
    assert committed["eval.yaml"].decode() == eval_yaml(("movies",))
    api_calls = [r for r in hub.requests if r.url.path != "/api/agent-harnesses"]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in api_calls)
    printed = capsys.readouterr()
    assert "Pushed to datasets/me/m3el" in printed.out
    assert_no_token(printed.out, printed.err, caplog.text, *committed.values())
    assert not any(p.name.startswith(".m3el-push-") for p in prepared.parent.iterdir())  # staging cleaned up


def test_push_model_to_a_new_branch(checkpoint, results_file, plot, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    info = push_model(checkpoint, "me/clipnd", results=results_file, plot=plot, dataset_id="me/m3el", revision="v1")
    assert hub.calls() == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/models/me/clipnd/branch/v1"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/me/clipnd/preupload/v1"),
        ("POST", "/api/models/me/clipnd/commit/v1"),
    ]
    assert json.loads(hub.requests[[r.url.path for r in hub.requests].index("/api/repos/create")].content) == {
        "name": "clipnd",
        "organization": "me",
        "type": "model",
    }  # no visibility: a new repo gets the owner's default, never forced public
    committed = hub.committed()
    assert set(committed) == set(info.files) and not set(committed) & set(JUNK)
    assert {"README.md", "accuracy.png", ".eval_results/m3el.yaml", "model.safetensors"} <= set(committed)
    assert (checkpoint / "README.md").read_text(encoding="utf-8") == "old card\n"  # staged by hard link, not edited
    printed = capsys.readouterr()
    assert_no_token(printed.out, printed.err, caplog.text, *committed.values())


def test_eval_results_pull_request_to_someone_elses_model(records, tmp_path, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    write_eval_results(records, tmp_path / "eval", "me/m3el", "zero-shot CLIP")
    assert main(["push-model", str(tmp_path / "eval"), "--repo", "openai/clip-vit-base-patch32", "--create-pr"]) == 0
    assert hub.calls() == [
        ("POST", "/api/models/openai/clip-vit-base-patch32/preupload/main?create_pr=1"),
        ("POST", "/api/models/openai/clip-vit-base-patch32/discussions"),
        ("GET", "/api/models/openai/clip-vit-base-patch32/discussions/1?diff=1"),
        ("POST", "/api/models/openai/clip-vit-base-patch32/commit/refs%2Fpr%2F1"),
    ]  # no repo creation, no card: only the leaderboard entries
    assert json.loads(hub.requests[-3].content)["pullRequest"] is True
    assert set(hub.committed()) == {".eval_results/m3el.yaml"}
    printed = capsys.readouterr()
    assert "Opened a pull request" in printed.out and "discussions/1" in printed.out
    assert_no_token(printed.out, printed.err, caplog.text, *hub.committed().values())


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_clear_errors(prepared, checkpoint, records, tmp_path, capsys):
    with pytest.raises(ValueError, match="cannot target revision 'v1'"):
        push_dataset(prepared, "me/m3el", create_pr=True, revision="v1", dry_run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="OWNER/NAME"):
        push_model(checkpoint, "not a repo", dataset_id="me/m3el", dry_run_dir=tmp_path / "b")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        push_model(empty, "me/x", dry_run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="inside the folder being pushed"):
        push_dataset(prepared, "me/m3el", dry_run_dir=prepared / "out")
    with pytest.raises(FileNotFoundError, match="not a folder written by `m3el-hf prepare`"):
        push_dataset(empty, "me/m3el", dry_run_dir=tmp_path / "d")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no dry-run folder, no staging left behind
    assert main(["push-model", str(checkpoint), "--repo", "me/x", "--results", "r.json"]) == 2
    assert "--results needs --dataset-id" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no record of model 'final', only of \['CLIP_ND', 'CLIP_ND \(name only\)'"):
        push_model(checkpoint, "me/x", results=records, dataset_id="me/m3el", model_name="final", dry_run_dir=empty)
