"""m3el-hf link and m3el-hf index build meet a user's mistakes: one line on stderr, exit 2, no traceback, nothing
written. Each case runs the command line in a fresh interpreter, as a user would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from photos import bomb_png, encoded

from m3el_hf.cli import main

pytestmark = pytest.mark.slow  # a fresh interpreter per case, most of them importing torch

_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _other_width(tiny: Path, out: Path) -> Path:
    """The tiny checkpoint with a projection of 8 dimensions instead of 16 (random weights, seed 0)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig.from_pretrained(tiny)
    config.projection_dim = 8
    torch.manual_seed(0)
    shutil.copytree(tiny, out, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    CLIPModel(config).save_pretrained(out)
    return out


def _without_images(release: Path, out: Path) -> Path:
    """A copy of a prepared release whose KB has no entity images."""
    shutil.copytree(release, out)
    for path in (out / "kb").rglob("*.parquet"):
        table = pq.read_table(path)
        column = table.schema.get_field_index("image")
        nulls = pa.nulls(table.num_rows, type=table.schema.field("image").type)
        pq.write_table(table.set_column(column, "image", nulls), path)
    return out


@pytest.fixture(scope="module")
def work(tiny_clip_path, movies_release, tmp_path_factory) -> Path:
    """A folder holding an index built by the tiny checkpoint, two other checkpoints and the bad inputs."""
    from m3el_hf.modeling.tiny import build_tiny_clip

    root = tmp_path_factory.mktemp("link-errors")
    args = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--config", "movies-kb"]
    assert main(["-q", *args, "--out", str(root / "index"), "--modality", "T"]) == 0
    build_tiny_clip(root / "same-width", seed=1)
    _other_width(tiny_clip_path, root / "other-width")
    _without_images(movies_release, root / "no-images")
    (root / "random.png").write_bytes(bytes(range(256)) * 12)
    (root / "text.png").write_text("not a picture\n")
    (root / "empty.png").write_bytes(b"")
    import PIL.Image

    photo = encoded(PIL.Image.new("RGB", (64, 48), (200, 30, 30)), "JPEG")
    (root / "photo.jpg").write_bytes(photo)
    (root / "cut.jpg").write_bytes(photo[: len(photo) // 2])
    scan = encoded(PIL.Image.radial_gradient("L").convert("RGB"), "JPEG")
    (root / "cut-scan.jpg").write_bytes(scan[: len(scan) * 3 // 4])
    (root / "huge.png").write_bytes(bomb_png(20_000))
    shutil.copytree(root / "index", root / "corrupt-index")
    (root / "corrupt-index" / "index.json").write_text('{"format_version": 1, "checkpoint": "tiny", "mod')
    shutil.copytree(root / "index", root / "old-index")
    meta = json.loads((root / "index" / "index.json").read_text())
    meta.pop("encoder", None)
    (root / "old-index" / "index.json").write_text(json.dumps(meta))
    return root


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _refused(work: Path, argv: list[str]) -> str:
    """Run ``m3el-hf -q ARGV`` in `work`; assert exit 2, one line on stderr, no traceback, nothing written."""
    before = _snapshot(work)
    done = subprocess.run(
        [sys.executable, "-m", "m3el_hf", "-q", *argv], cwd=work, env=_ENV, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"m3el-hf {argv[0]}: error: ")
    assert _snapshot(work) == before
    return lines[0]


_LINK = ["link", "--index", "index", "--mention", "Paris", "--sentence", "Paris premiere screenplay"]


# (case, the options that replace or extend `_LINK`'s, the one line expected)
_LINK_MISTAKES = [
    (
        "index-of-another-checkpoint",
        ["--model", "same-width"],
        r"The index index was built by '.*', not by 'same-width' \(weights sha256:[0-9a-f]{12}… against "
        r"sha256:[0-9a-f]{12}…\): scores from two encoders do not compare\. Build an index with this model, "
        r"or pass --allow-other-checkpoint",
    ),
    (
        "index-of-another-width",
        ["--model", "other-width"],
        r"The index index holds 16-dimensional embeddings made by '.*', but other-width embeds in 8 dimensions: "
        r"build an index with it \(m3el-hf index build --model other-width \.\.\.\)\.",
    ),
    ("random-bytes", ["--image", "random.png"], r"--image random\.png is not an image \(no format PIL reads\)\."),
    ("text-file", ["--image", "text.png"], r"--image text\.png is not an image"),
    ("empty-file", ["--image", "empty.png"], r"--image empty\.png is empty \(0 bytes\), not an image\."),
    ("cut-jpeg", ["--image", "cut.jpg"], r"--image cut\.jpg cannot be decoded \(Truncated File Read\); is the file"),
    (
        "jpeg-scan-cut-short",
        ["--image", "cut-scan.jpg"],
        r"--image cut-scan\.jpg cannot be decoded \(image file is truncated \(\d+ bytes not processed\)\)",
    ),
    ("huge-png", ["--image", "huge.png"], r"--image huge\.png is too large: Image size \(400000000 pixels\)"),
    (
        "over-max-pixels",
        ["--image", "photo.jpg", "--max-pixels", "100"],
        r"--image photo\.jpg is too large: 64x48 = 3,072 pixels, over the limit of 100 \(--max-pixels\)\.",
    ),
    ("missing-model-folder", ["--model", "no-such-folder/"], r"--model no-such-folder/: no such folder here"),
    ("corrupt-index-json", ["--index", "corrupt-index"], r"corrupt-index/index\.json is not valid JSON"),
    ("index-json-lacks", ["--index", "old-index"], r"old-index/index\.json lacks encoder: build the index again"),
    ("blank-mention", ["--mention", " "], r"--mention is empty: give the words"),
]


@pytest.mark.parametrize(("argv", "message"), [pytest.param(a, m, id=case) for case, a, m in _LINK_MISTAKES])
def test_a_link_mistake_is_one_line(work, tiny_clip_path, argv, message):
    argv = [*_LINK, "--model", str(tiny_clip_path), *argv]  # a later option replaces an earlier one
    assert re.search(message, _refused(work, argv))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--factory", "Bogus99"],
            r"--factory 'Bogus99': FAISS cannot build it for 16-dimensional embeddings \(could not parse index string "
            r"Bogus99\); e\.g\. Flat \(exact\), HNSW32 or IVF16,Flat\.",
            id="unparsable-factory",
        ),
        pytest.param(
            ["--factory", "IVF64,Flat"],
            r"--factory 'IVF64,Flat' needs at least 64 entities to train on, but there are 43 to index; use Flat "
            r"\(exact\), HNSW32 \(needs no training\)\.",
            id="more-lists-than-entities",
        ),
        pytest.param(
            ["--kb", "no-images", "--modality", "I"],
            r"--modality I needs entity images, but none of the 43 entities of the KB has one; --modality T \(name "
            r"and description\) serves all of them\.",
            id="modality-the-kb-cannot-serve",
        ),
    ],
)
def test_an_index_build_mistake_is_one_line_before_any_embedding(work, tiny_clip_path, movies_release, argv, message):
    build = ["index", "build", "--model", str(tiny_clip_path), "--kb", str(movies_release), "--config", "movies-kb"]
    assert re.search(message, _refused(work, [*build, "--out", "new-index", *argv]))
