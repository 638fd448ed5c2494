"""Batch checks on the host: row indices and gold Qids, in the collator, and in the model behind `check_inputs`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from m3el_hf.modeling import collator as collator_module
from m3el_hf.modeling.batch_checks import check_batch, check_gold_qids, check_rows
from m3el_hf.modeling.modeling_clipnd import CLIPNDModel


def _tensor(rows: list[int] | None) -> torch.Tensor | None:
    return None if rows is None else torch.tensor(rows)


@pytest.mark.parametrize(
    ("text_rows", "image_rows", "num_rows", "match"),
    [
        ([0, 1, 2, 4], None, 5, r"^rows \[3\] have neither a text nor an image"),
        ([0, 1, 1, 2], None, 3, r"^rows \[1\] appear more than once in text_rows;"),
        ([0, 2], [1, 1], 3, r"^rows \[1\] appear more than once in image_rows;"),
        ([0, 1, 2, 9], None, 5, r"^text_rows must lie in \[0, 5\), got \[0, 1, 2, 9\]\.$"),
        ([0], [-1], 2, r"^image_rows must lie in \[0, 2\)"),
        ([0, 1], [1], 4, r"^rows \[2, 3\] have neither"),
    ],
)
def test_check_rows_names_the_bad_rows(text_rows, image_rows, num_rows: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_rows(_tensor(text_rows), _tensor(image_rows), num_rows)


def test_check_rows_accepts_every_row_covered_once_per_modality() -> None:
    check_rows(torch.tensor([2, 0]), torch.tensor([0, 1]), 3)
    check_rows(None, torch.tensor([1, 0]), 2)
    check_rows(None, None, 0)


def test_check_gold_qids() -> None:
    labels, mention_qids, entity_qids = torch.tensor([2, 0]), torch.tensor([7, 5]), torch.tensor([5, 6, 7])
    check_gold_qids(labels, mention_qids, entity_qids)
    with pytest.raises(ValueError, match=r"`mention_qids` must equal `entity_qids\[labels\]`.*\[8, 5\].*\[7, 5\]"):
        check_gold_qids(labels, mention_qids + torch.tensor([1, 0]), entity_qids)
    with pytest.raises(ValueError, match=r"`labels` must index the 3 entity rows, got \[3, 0\]"):
        check_gold_qids(torch.tensor([3, 0]), mention_qids, entity_qids)


def test_collated_batches_pass_and_corrupted_ones_name_their_side(all_task_batch: dict) -> None:
    batch = all_task_batch
    assert {key for key in batch if key.endswith("_rows")} == {
        f"{side}_{kind}_rows" for side in ("mention", "entity") for kind in ("text", "image")
    }
    check_batch(batch)
    corruptions = {
        "entity_image_rows": (torch.zeros_like, r"rows \[0\] appear more than once in entity_image_rows"),
        "mention_text_rows": (lambda rows: rows + len(batch["labels"]), r"mention_text_rows must lie in \[0, 12\)"),
        "entity_qids": (lambda qids: qids.roll(1), r"`mention_qids` must equal `entity_qids\[labels\]`"),
    }
    for key, (corrupt, match) in corruptions.items():
        with pytest.raises(ValueError, match=match):
            check_batch({**batch, key: corrupt(batch[key])})


def test_the_collator_refuses_a_batch_it_built_wrong(all_task_collator, all_task_rows: list[dict], monkeypatch) -> None:
    # A collator bug that numbers the hard negatives from the first gold row instead of after the golds.
    def extend_without_offset(self, other, offset: int) -> None:
        self.texts += other.texts
        self.text_rows += other.text_rows
        self.images += other.images
        self.image_rows += other.image_rows

    monkeypatch.setattr(collator_module._Side, "extend", extend_without_offset)
    with pytest.raises(ValueError, match=r"appear more than once in entity_(text|image)_rows"):
        all_task_collator(all_task_rows)


def test_the_model_checks_only_when_asked(tiny_clip_path: Path, all_task_batch: dict, monkeypatch) -> None:
    batch = all_task_batch
    model = CLIPNDModel.from_pretrained(tiny_clip_path).eval()
    assert model.check_inputs is False
    duplicated = {**batch, "mention_text_rows": torch.zeros_like(batch["mention_text_rows"])}
    wrong_qids = {**batch, "entity_qids": batch["entity_qids"].roll(1)}
    with torch.no_grad():
        unchecked = model(**batch).loss
        model(**duplicated)  # not read back on the device: the collator checks its batches on the host
        monkeypatch.setattr(model, "check_inputs", True)
        with pytest.raises(ValueError, match=r"rows \[0\] appear more than once in text_rows"):
            model(**duplicated)
        with pytest.raises(ValueError, match=r"`mention_qids` must equal `entity_qids\[labels\]`"):
            model(**wrong_qids)
        assert torch.equal(model(**batch).loss, unchecked)
