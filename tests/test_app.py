"""The demo page: built offline from a tiny checkpoint and its indexes, driven in a headless browser."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from m3el_hf.app import AppConfig, index_labels, main

TASKS = ("T-T", "I-I", "TI-TI")


def test_menu_labels_are_folder_names_unless_two_share_one(tmp_path):
    a, b = tmp_path / "one" / "index-movies", tmp_path / "two" / "index-movies"
    assert index_labels(tmp_path / "index-all-kb") == {"index-all-kb": tmp_path / "index-all-kb"}
    assert index_labels([a, tmp_path / "kb"]) == {"index-movies": a, "kb": tmp_path / "kb"}
    assert index_labels([a, b]) == {str(a): a, str(b): b}
    assert index_labels({"Movies": a}) == {"Movies": a}
    (tmp_path / "built").mkdir()
    (tmp_path / "index-books").symlink_to(tmp_path / "built")
    assert list(index_labels(tmp_path / "index-books")) == ["index-books"]
    with pytest.raises(ValueError, match="at least one entity index"):
        index_labels([])


def test_without_gradio_the_command_says_what_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["--model", "ckpt", "--index", "kb"]) == 2
    assert capsys.readouterr().err == (
        "m3el-hf app: error: The demo app needs gradio, which is not installed: pip install 'm3el-hf[app]'\n"
    )


def test_options_are_checked_before_anything_loads():
    pytest.importorskip("gradio")
    with pytest.raises(ValueError, match="--port must be between 1 and 65535, got 0"):
        AppConfig(model="ckpt", index=(Path("kb"),), port=0)
    with pytest.raises(ValueError, match="at least one entity index folder"):
        AppConfig(model="ckpt", index=())


def test_a_busy_port_is_refused_before_anything_loads(monkeypatch, capsys):
    pytest.importorskip("gradio")
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["--model", "no-such-checkpoint", "--index", "kb", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"m3el-hf app: error: Cannot serve on 127.0.0.1:{port} (Address already in use); pass another --port or "
        "--host.\n"
    )


def test_an_index_of_another_checkpoint_is_refused_at_start_up(tiny_clip_path, movies_release, tmp_path, capsys):
    for module in ("gradio", "faiss"):
        pytest.importorskip(module)
    from m3el_hf.app import build_app
    from m3el_hf.cli import main as cli_main
    from m3el_hf.modeling.tiny import build_tiny_clip

    index = tmp_path / "index-movies"
    build = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--config", "movies-kb"]
    assert cli_main(["-q", *build, "--out", str(index), "--modality", "T"]) == 0
    other = build_tiny_clip(tmp_path / "seed-1", seed=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["--model", str(other), "--index", str(index), "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(
        f"m3el-hf app: error: The index {index} was built by '{tiny_clip_path}', not by '{other}' (weights sha256:"
    )
    assert build_app(other, index, allow_other_checkpoint=True) is not None


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's chromium (Playwright's own browser download needs the internet); skips where it is missing."""
    for module in ("gradio", "playwright", "faiss"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[dev]')")
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no chromium executable on PATH (apt-get install chromium)")


@pytest.fixture(scope="module")
def assets(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 100-instance movies release, a tiny random CLIP, its TI and T indexes and its results file."""
    import datasets

    from m3el_hf.data.prepare import PrepareConfig, prepare
    from m3el_hf.data.synth import SynthConfig, synthesize
    from m3el_hf.evaluation.command import EvaluateConfig, run_evaluate
    from m3el_hf.linking import EntityIndex, EntityLinker
    from m3el_hf.modeling.tiny import build_tiny_clip

    root = tmp_path_factory.mktemp("app")
    raw = synthesize(SynthConfig(out=root / "raw", instances=100, seed=0, topics=("movies",)))
    data = prepare(PrepareConfig(raw=raw, out=root / "m3el", topics=("movies",))).out
    model = build_tiny_clip(root / "tiny-clip", seed=0)
    linker = EntityLinker.from_pretrained(model)
    kb = datasets.load_dataset(str(data), "movies-kb", split="kb")
    indexes = {m: EntityIndex.build(linker, kb, modality=m).save(root / f"movies-{m}") for m in ("T", "TI")}
    results = root / "results.json"
    run_evaluate(EvaluateConfig(model=(str(model),), data=str(data), output=results, tasks=TASKS))
    test = datasets.load_dataset(str(data), "movies", split="test")
    return {"root": root, "model": model, "linker": linker, "indexes": indexes, "results": results, "test": test}


def _demo_mention(assets: dict) -> tuple[dict, Path, list]:
    """The test row whose gold the tiny model ranks best against the TI index (text and image), its picture
    as a file, and the model's own ranking down to the gold (at least 5 entities)."""
    from m3el_hf.linking import EntityIndex

    index = EntityIndex.load(assets["indexes"]["TI"])
    best = None
    for row in assets["test"]:
        found = assets["linker"].link(row["mention"], row["sentence"], row["mention_image"], index=index, top_k=100)
        rank = next(e.rank for e in found if e.qid == row["gold_qid"])
        if best is None or rank < best[0]:
            best = (rank, row, found[: max(5, rank)])
    _, row, expected = best
    picture = assets["root"] / "mention.png"
    row["mention_image"].save(picture)
    return row, picture, expected


@pytest.fixture
def served(assets: dict) -> Iterator[str]:
    """The page on a free local port, served from a thread."""
    from m3el_hf.app import build_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    indexes = [assets["indexes"]["T"], assets["indexes"]["TI"]]
    blocks = build_app(assets["model"], indexes, assets["results"])
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        blocks.close()


# gradio's queue still passes pandas options that pandas 3 deprecates: its warnings, not ours.
@pytest.mark.browser
@pytest.mark.filterwarnings(r"ignore::DeprecationWarning:gradio\.queueing")
def test_the_page_links_a_test_mention_in_a_browser(chromium, assets, served, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    row, picture, expected = _demo_mention(assets)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(served)
            page.get_by_label("Sentence").fill(row["sentence"])
            page.get_by_label("Mention", exact=True).fill(row["mention"])
            page.locator("#mention-image input[type=file]").set_input_files(picture)
            page.get_by_label("Knowledge base").click()
            page.get_by_role("option", name="movies-TI").click()
            page.locator("#top-k input[type=number]").fill(str(len(expected)))
            page.locator("#top-k input[type=number]").press("Enter")
            page.locator("#link").click()
            table = page.locator("#results")
            expect(table).to_contain_text(row["gold_qid"], timeout=60_000)
            shown, captions = " ".join(table.inner_text().split()), page.locator("#gallery").inner_text()
            expect(page.locator("#accuracy img")).to_be_visible()
            shot = page.screenshot(path=tmp_path / "app.png", full_page=True)
            page.get_by_label("Mention", exact=True).fill("  ")
            page.locator("#link").click()
            expect(page.get_by_text("Type the mention", exact=False)).to_be_visible()
        finally:
            browser.close()
    # The page shows the model's own ranking, row by row: rank, name, description, Qid, score.
    assert " ".join(f"{e.rank} {e.name} {e.description} {e.qid} {round(e.score, 4)}" for e in expected) in shown
    assert [line for line in captions.splitlines() if line[:1].isdigit()] == [
        f"{e.rank}. {e.name} ({e.qid})" for e in expected
    ]
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("M3EL_TEST_ARTIFACTS"):
        folder = Path(os.environ["M3EL_TEST_ARTIFACTS"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "app.png", folder / "app.png")


@pytest.mark.browser
@pytest.mark.filterwarnings(r"ignore::DeprecationWarning:gradio\.queueing")
def test_a_refused_upload_shows_why_in_the_browser(chromium, assets, served, tmp_path):
    import PIL.Image
    from photos import encoded
    from playwright.sync_api import expect, sync_playwright

    photo = encoded(PIL.Image.radial_gradient("L").convert("RGB"), "JPEG")
    refused = {
        "random.png": (bytes(range(256)) * 12, "random.png is not an image (no format PIL reads)."),
        "cut.jpg": (photo[: len(photo) * 3 // 4], "cut.jpg cannot be decoded (image file is truncated"),
    }
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            for name, (data, message) in refused.items():
                (tmp_path / name).write_bytes(data)
                page.goto(served)
                page.get_by_label("Mention", exact=True).fill("Paris")
                page.locator("#mention-image input[type=file]").set_input_files(tmp_path / name)
                page.locator("#link").click()
                expect(page.get_by_text(message, exact=False)).to_be_visible(timeout=60_000)
        finally:
            browser.close()
