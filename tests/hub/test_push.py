"""push: dry runs load with stock libraries and make no request; pushes send what the Hub expects; no token leaks."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import replace
from pathlib import Path

import datasets
import httpx2
import pytest
import yaml
from huggingface_hub import ModelCard, parse_eval_result_entries
from huggingface_hub.utils import _http, set_client_factory
from PIL import Image

from m3el_hf.benchmark import eval_yaml, write_eval_results
from m3el_hf.cli import main
from m3el_hf.hub.push import push_dataset, push_model
from m3el_hf.json_files import write_json

TOKEN = "hf_SECRETtoken0123456789abcdef"


# ---------------------------------------------------------------------------------------------
# Fixtures: the results file and the plot of an evaluation
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def results_file(records, provenance, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hub-results") / "results.json"
    payload = {"dataset": "me/m3el", "provenance": provenance.to_dict(), "ties": "expected", "records": records}
    write_json(path, payload)
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
        if method == "GET" and path == "/api/models/openai/clip-vit-base-patch32":
            return httpx2.Response(200, json={"id": path.removeprefix("/api/models/"), "cardData": {"license": "mit"}})
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
# Dry runs: the exact folders, loadable with stock libraries, no request made
# ---------------------------------------------------------------------------------------------


def test_dataset_dry_run_loads_with_stock_datasets(movies_release, tmp_path, no_network, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "staged"
    assert main(["push-dataset", str(movies_release), "--repo", "me/m3el", "--dry-run", str(out)]) == 0
    assert not no_network
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # 40 instances leave the hash-based test split empty: prepare writes no shard for it.
    assert files[:3] == ["LICENSE.md", "README.md", "data/movies/train-00000-of-00001.parquet"]
    assert not any("/test-" in f for f in files)
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
        push_dataset(movies_release, "me/m3el", dry_run_dir=out)


def test_model_dry_run_loads_with_stock_clip(
    checkpoint, training_leftovers, results_file, plot, tmp_path, no_network, capsys, caplog
):
    from transformers import CLIPModel

    caplog.set_level(logging.DEBUG)
    out = tmp_path / "staged"
    argv = ["push-model", str(checkpoint), "--repo", "me/clipnd", "--dataset-id", "me/m3el", "--license", "mit"]
    assert main([*argv, "--results", str(results_file), "--plot", str(plot), "--dry-run", str(out)]) == 0
    assert not no_network
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"README.md", "accuracy.png", "model.safetensors", "config.json", ".eval_results/m3el.yaml"} <= files
    assert "training_summary.json" in files and not files & set(training_leftovers)
    published = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))["config"]
    assert published["output_dir"] == "out" and published["model"] == "openai/clip-vit-base-patch32"
    assert (out / "accuracy.png").read_bytes() == plot.read_bytes()
    card = ModelCard.load(out / "README.md")
    assert card.data.eval_results and "These scores come from a synthetic" not in card.text  # not synthetic
    assert card.data.license == "mit" and card.data.base_model == "openai/clip-vit-base-patch32"
    assert (checkpoint / "README.md").read_text(encoding="utf-8") == "old card\n"
    model = CLIPModel.from_pretrained(out)
    assert type(model) is CLIPModel and model.config.projection_dim == 16
    printed = capsys.readouterr()
    assert_no_token(printed.out, printed.err, caplog.text, folders=(out,))


def test_model_dry_run_draws_the_plot_and_flags_synthetic_data(checkpoint, records, provenance, tmp_path, no_network):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results.json"
    synthetic = replace(provenance, dataset="m3el", local=True, synthetic=True).to_dict()
    payload = {"dataset": "m3el", "synthetic": True, "provenance": synthetic, "ties": "expected", "records": records}
    write_json(results, payload)
    out = tmp_path / "staged"
    args = (checkpoint, "me/clipnd")
    with pytest.raises(ValueError, match=r"^Refusing leaderboard entries for me/m3el: the scores come from synthetic"):
        push_model(*args, results=results, dataset_id="me/m3el", license="mit", dry_run_dir=out)
    assert not out.exists()
    push_model(*args, results=results, dataset_id="me/m3el", license="mit", dry_run_dir=out, unofficial_data=True)
    entries = parse_eval_result_entries(yaml.safe_load((out / ".eval_results/m3el.yaml").read_text(encoding="utf-8")))
    assert entries and all(e.notes.endswith("; unofficial: the scores come from synthetic data") for e in entries)
    assert (out / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "README.md").read_text(encoding="utf-8")
    assert "(accuracy.png)" in text and "These scores come from a synthetic release" in text


# ---------------------------------------------------------------------------------------------
# Pushes, at the HTTP boundary
# ---------------------------------------------------------------------------------------------


def test_push_dataset_sends_create_validate_preupload_commit(movies_release, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    assert main(["push-dataset", str(movies_release), "--repo", "me/m3el", "--private"]) == 0
    assert hub.calls() == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/datasets/me/m3el/preupload/main"),
        ("POST", "/api/datasets/me/m3el/commit/main"),
    ]
    create = json.loads(hub.requests[[r.url.path for r in hub.requests].index("/api/repos/create")].content)
    assert create == {"name": "m3el", "organization": "me", "type": "dataset", "visibility": "private"}
    committed = hub.committed()
    assert {"README.md", "eval.yaml", "prepare_report.json", "data/movies/train-00000-of-00001.parquet"} <= set(
        committed
    )
    assert committed["eval.yaml"].decode() == eval_yaml(("movies",))
    api_calls = [r for r in hub.requests if r.url.path != "/api/agent-harnesses"]
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in api_calls)
    printed = capsys.readouterr()
    assert "Pushed to datasets/me/m3el" in printed.out
    assert_no_token(printed.out, printed.err, caplog.text, *committed.values())
    assert not any(p.name.startswith(".m3el-push-") for p in movies_release.parent.iterdir())  # staging cleaned up


def test_push_model_to_a_new_branch(checkpoint, training_leftovers, results_file, plot, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    info = push_model(checkpoint, "me/clipnd", results=results_file, plot=plot, dataset_id="me/m3el", revision="v1")
    assert hub.calls() == [
        ("GET", "/api/models/openai/clip-vit-base-patch32"),  # the base model's licence, for the card
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
    assert set(committed) == set(info.files) and not set(committed) & set(training_leftovers)
    assert {"README.md", "accuracy.png", ".eval_results/m3el.yaml", "model.safetensors"} <= set(committed)
    assert "\nlicense: mit\n" in committed["README.md"].decode()
    assert (checkpoint / "README.md").read_text(encoding="utf-8") == "old card\n"  # staged by hard link, not edited
    printed = capsys.readouterr()
    assert_no_token(printed.out, printed.err, caplog.text, *committed.values())


def test_eval_results_pull_request_to_someone_elses_model(records, provenance, tmp_path, hub, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    write_eval_results(records, tmp_path / "eval", "me/m3el", "zero-shot CLIP", provenance=provenance)
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


def test_clear_errors(movies_release, checkpoint, records, tmp_path, capsys):
    with pytest.raises(ValueError, match="cannot target revision 'v1'"):
        push_dataset(movies_release, "me/m3el", create_pr=True, revision="v1", dry_run_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="OWNER/NAME"):
        push_model(checkpoint, "not a repo", dataset_id="me/m3el", dry_run_dir=tmp_path / "b")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        push_model(empty, "me/x", dry_run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="inside the folder being pushed"):
        push_dataset(movies_release, "me/m3el", dry_run_dir=movies_release / "out")
    with pytest.raises(FileNotFoundError, match="not a folder written by `m3el-hf prepare`"):
        push_dataset(empty, "me/m3el", dry_run_dir=tmp_path / "d")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]  # no dry-run folder, no staging left behind
    assert main(["push-model", str(checkpoint), "--repo", "me/x", "--results", "r.json"]) == 2
    assert "--results needs --dataset-id" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no record of model 'final', only of \['CLIP_ND', 'CLIP_ND \(name only\)'"):
        push_model(checkpoint, "me/x", results=records, dataset_id="me/m3el", model_name="final", dry_run_dir=empty)
