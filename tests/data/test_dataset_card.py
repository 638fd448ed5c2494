"""dataset_card: the licence the Hub asks for with `other`, real sizes in `dataset_info`, and a lean YAML."""

from __future__ import annotations

import datasets
import pyarrow.parquet as pq
import yaml

from m3el_hf.data.dataset_card import license_text
from m3el_hf.data.features import task_columns
from m3el_hf.layout import LICENSE_NAME


def _yaml(folder) -> dict:
    return yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---")[1])


def test_license_other_names_and_links_the_notice_in_the_folder(movies_release):
    card = _yaml(movies_release)
    assert card["license"] == "other" and card["license_name"] and card["license_link"] == LICENSE_NAME
    notice = (movies_release / LICENSE_NAME).read_text(encoding="utf-8")
    assert notice == license_text(synthetic=True) and "m3el-hf synth" in notice
    real = license_text()
    assert "Wikimedia Commons" in real and "CC0" in real and "states no licence" in real
    assert set(card["task_ids"]) == {"entity-linking-retrieval", "entity-linking-classification"}
    assert {"text-retrieval", "text-classification"} <= set(card["task_categories"])


def test_dataset_info_has_the_real_sizes_of_each_split_and_config(movies_release):
    infos = {info["config_name"]: info for info in _yaml(movies_release)["dataset_info"]}
    # Task configs read their topic's files with fewer columns: their info would only repeat it.
    assert set(infos) == {"movies", "all", "movies-kb", "all-kb"}
    for name, pattern in (("movies", "data/movies/*.parquet"), ("movies-kb", "kb/movies/*.parquet")):
        # The files the config's data_files name: those of its splits that hold rows (an empty one is left out).
        splits = {split["name"] for split in infos[name]["splits"]}
        shards = [s for s in sorted(movies_release.glob(pattern)) if s.name.split("-")[0] in splits]
        assert infos[name]["download_size"] == sum(shard.stat().st_size for shard in shards) > 0
        for split in infos[name]["splits"]:
            files = [s for s in shards if s.name.startswith(f"{split['name']}-")]
            meta = [pq.ParquetFile(s).metadata for s in files]
            expected = sum(m.row_group(i).total_byte_size for m in meta for i in range(m.num_row_groups))
            assert split["num_bytes"] == expected > 0
            assert split["num_examples"] == sum(m.num_rows for m in meta)
        assert infos[name]["dataset_size"] == sum(split["num_bytes"] for split in infos[name]["splits"])
    assert infos["all"]["dataset_size"] == infos["movies"]["dataset_size"]


def test_task_configs_without_dataset_info_still_load_their_features(movies_release, tmp_path):
    ds = datasets.load_dataset(str(movies_release), "movies-I-T", split="train", cache_dir=str(tmp_path))
    assert type(ds.features["mention_image"]) is datasets.Image
    assert set(ds.features) == set(task_columns("I-T")) and "candidate_images" not in ds.features
    streamed = datasets.load_dataset(str(movies_release), "movies-TI-I", split="train", streaming=True)
    assert type(streamed.features["candidate_images"].feature) is datasets.Image
    rows = list(streamed)  # read to the end: a half-read stream can abort the interpreter at exit (pyarrow)
    assert rows[0]["mention_image"] is not None and set(rows[0]) == set(streamed.features)
