"""M3ELCollator: batch layout per task, no label leak, drops, hard negatives, deterministic draws, workers."""

from __future__ import annotations

import io
import json
import pickle
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageOps

from m3el_hf.modeling.collator import M3ELCollator, draw_task, lazy_images, qid_to_int
from m3el_hf.modeling.processing import load_processor
from m3el_hf.tasks import TASK_NAMES, get_task

# Words the mention side never contains: their token ids must never reach mention rows.
SECRET = "zebra quokka xylophone"
IMAGE_SIZE = 32
# The keys of every batch besides the texts, images and return_loss.
ROW_KEYS = (
    "labels",
    "mention_qids",
    "entity_qids",
    "task_ids",
    "num_dropped",
    "num_dropped_negatives",
    "num_dropped_leaked",
)


@pytest.fixture(scope="module")
def processors(tiny_clip_path: Path) -> tuple[Any, Any]:
    return load_processor(tiny_clip_path)


@pytest.fixture
def make(processors: tuple[Any, Any]):
    def make(**kwargs: Any) -> M3ELCollator:
        tokenizer, image_processor = processors
        return M3ELCollator(tokenizer=tokenizer, image_processor=image_processor, **kwargs)

    return make


def image(shade: int, mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (12, 9), shade if mode == "L" else (shade, 255 - shade, 7, 255)[: len(mode)])


def make_row(
    i: int, label: int = 0, mention_image: bool = True, candidate_images: tuple[bool, ...] = (True, True, True)
) -> dict[str, Any]:
    """A full-schema row whose gold description holds `SECRET`; modes vary so RGB conversion is exercised."""
    candidates = [
        {"qid": f"Q{100 * i + j + 1}", "name": f"john smith {j}", "description": f"english actor {j}"}
        for j in range(len(candidate_images))
    ]
    candidates[label]["description"] = f"{SECRET} film"
    modes = ("RGB", "L", "RGBA")
    return {
        "id": f"person-{i}",
        "topic": "person",
        "mention": "john",
        "sentence": f"john was born in paris {i}",
        "mention_image": image(10 * i % 256, modes[i % 3]) if mention_image else None,
        "mention_image_source": {"file": "a.jpg", "url": "u"},
        "mention_image_leak": "none" if mention_image else None,
        "mention_image_near_candidates": [],
        "candidates": candidates,
        "candidate_images": [image(20 * j, modes[j % 3]) if has else None for j, has in enumerate(candidate_images)],
        "candidate_image_sources": [{"file": "c.jpg", "url": "u"} for _ in candidate_images],
        "label": label,
        "gold_qid": candidates[label]["qid"],
        "tasks": list(TASK_NAMES),
        "extra": json.dumps({"description": f"{SECRET} film"}),
        # Some raw releases carry the gold description at the top level; it must never be read.
        "description": f"{SECRET} film",
    }


def contains(sequence: list[int], part: list[int]) -> bool:
    return any(sequence[k : k + len(part)] == part for k in range(len(sequence) - len(part) + 1))


@pytest.mark.parametrize("task_name", TASK_NAMES)
def test_layout_per_task(make, task_name: str) -> None:
    task, rows = get_task(task_name), [make_row(i, label=i % 3) for i in range(3)]
    batch = make(tasks=(task_name,))(rows)
    expected = set(ROW_KEYS)
    for side, text, img in (
        ("mention", task.mention_needs_text, task.mention_needs_image),
        ("entity", task.entity_needs_text, task.entity_needs_image),
    ):
        if text:
            expected |= {f"{side}_input_ids", f"{side}_attention_mask", f"{side}_text_rows"}
            assert batch[f"{side}_input_ids"].shape == batch[f"{side}_attention_mask"].shape
            assert batch[f"{side}_input_ids"].shape[0] == 3 and batch[f"{side}_input_ids"].dtype == torch.long
            assert batch[f"{side}_text_rows"].tolist() == [0, 1, 2]
        if img:
            expected |= {f"{side}_pixel_values", f"{side}_image_rows"}
            assert batch[f"{side}_pixel_values"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
            assert batch[f"{side}_pixel_values"].dtype == torch.float32
            assert batch[f"{side}_image_rows"].tolist() == [0, 1, 2]
    assert set(batch) == expected | {"return_loss"}
    assert batch["return_loss"] is True
    assert batch["labels"].tolist() == [0, 1, 2]
    assert batch["task_ids"].tolist() == [TASK_NAMES.index(task_name)] * 3
    assert batch["mention_qids"].tolist() == batch["entity_qids"].tolist() == [1, 102, 203]
    assert batch["num_dropped"].item() == 0 and batch["num_dropped"].shape == ()


@pytest.mark.parametrize("augment", [True, False])
def test_entity_text_decodes_to_name_and_description(make, processors, augment: bool) -> None:
    batch = make(tasks=("T-T",), augment_description=augment)([make_row(0, label=1)])
    decoded = processors[0].batch_decode(batch["entity_input_ids"], skip_special_tokens=True)
    assert decoded == ([f"john smith 1 : {SECRET} film"] if augment else ["john smith 1"])
    mention = processors[0].batch_decode(batch["mention_input_ids"], skip_special_tokens=True)
    assert mention == ["john : john was born in paris 0"]


def test_gold_description_never_reaches_mentions(make, processors) -> None:
    secret = processors[0](SECRET, add_special_tokens=False)["input_ids"]
    rows = [make_row(i, label=i % 3) for i in range(40)]
    batch = make(hard_negatives=True)(rows)
    assert len(batch["mention_text_rows"]) > 0
    for ids, mask in zip(batch["mention_input_ids"], batch["mention_attention_mask"], strict=True):
        assert not contains(ids[mask.bool()].tolist(), secret)
    gold_text_rows = batch["entity_text_rows"] < len(batch["labels"])
    assert gold_text_rows.any()
    for ids in batch["entity_input_ids"][gold_text_rows]:
        assert contains(ids.tolist(), secret)


def test_mention_template_cannot_read_the_entity(make) -> None:
    with pytest.raises(ValueError, match=r"no other; got \['description', 'mention'\].*leak the label"):
        make(mention_template="{mention} : {description}")
    with pytest.raises(ValueError, match="not a valid format string"):
        make(entity_template="{name")


def test_missing_images_drop_examples_and_negatives(make) -> None:
    rows = [make_row(0, mention_image=False), make_row(1, candidate_images=(False, True, True)), make_row(2)]
    assert make(tasks=("T-T",))(rows)["num_dropped"].item() == 0
    batch = make(tasks=("I-T",))(rows)
    assert batch["num_dropped"].item() == 1 and batch["mention_qids"].tolist() == [101, 201]
    assert batch["mention_image_rows"].tolist() == [0, 1]
    batch = make(tasks=("T-TI",), hard_negatives=True)(rows)
    assert batch["num_dropped"].item() == 1 and batch["mention_qids"].tolist() == [1, 201]
    assert batch["num_dropped_negatives"].item() == 0
    rows = [make_row(0, candidate_images=(True, False, True))]
    batch = make(tasks=("T-I",), hard_negatives=True)(rows)
    assert batch["num_dropped_negatives"].item() == 1 and batch["entity_qids"].tolist() == [1, 3]


def test_all_dropped_gives_an_empty_batch(make) -> None:
    batch = make(tasks=("TI-TI",))([make_row(0, mention_image=False), make_row(1, mention_image=False)])
    assert batch["num_dropped"].item() == 2 and batch["labels"].numel() == 0
    assert set(batch) == {*ROW_KEYS, "return_loss"}


def test_hard_negatives_follow_the_golds(make) -> None:
    rows = [make_row(0, label=1), make_row(1, label=2)]
    batch = make(tasks=("T-TI",), hard_negatives=True)(rows)
    assert batch["entity_qids"].tolist() == [2, 103, 1, 3, 101, 102]
    assert batch["labels"].tolist() == [0, 1]
    assert batch["entity_text_rows"].tolist() == batch["entity_image_rows"].tolist() == list(range(6))
    # Hard negatives inherit their mention's task: under I-T they are text-only rows.
    batch = make(tasks=("T-T", "I-I"), hard_negatives=True)([make_row(i) for i in range(12)])
    per_row_task = batch["task_ids"].tolist() + [t for t in batch["task_ids"].tolist() for _ in range(2)]
    text_rows = set(batch["entity_text_rows"].tolist())
    assert text_rows == {r for r, t in enumerate(per_row_task) if t == TASK_NAMES.index("T-T")}


def test_qid_to_int() -> None:
    assert qid_to_int("Q42") == 42 and qid_to_int("Q1") == 1
    assert qid_to_int("local:7") == qid_to_int("local:7") == -4639983792429904740
    assert qid_to_int("Q042") < 0 and qid_to_int("NIL") < 0
    with pytest.raises(ValueError, match="Expected an entity id"):
        qid_to_int("")


def test_task_draw_is_deterministic_and_covers_all_tasks(make) -> None:
    ids = [f"movies-{i}" for i in range(1800)]
    counts = Counter(draw_task(i, TASK_NAMES, seed=0, epoch=0) for i in ids)
    assert set(counts) == set(TASK_NAMES) and min(counts.values()) > 140
    assert [draw_task(i, TASK_NAMES, 0, 0) for i in ids] == [draw_task(i, TASK_NAMES, 0, 0) for i in ids]
    assert [draw_task(i, TASK_NAMES, 0, 1) for i in ids] != [draw_task(i, TASK_NAMES, 0, 0) for i in ids]
    assert [draw_task(i, TASK_NAMES, 1, 0) for i in ids] != [draw_task(i, TASK_NAMES, 0, 0) for i in ids]
    assert draw_task("movies-0", TASK_NAMES, 3, 5) == "I-T"  # pinned: the draw must not change silently
    # A row's task does not depend on its batch-mates or position.
    collator, rows = make(), [make_row(i) for i in range(9)]
    forward = dict(zip([r["id"] for r in rows], collator(rows)["task_ids"].tolist(), strict=True))
    backward = dict(zip([r["id"] for r in rows[::-1]], collator(rows[::-1])["task_ids"].tolist(), strict=True))
    assert forward == backward


def test_truncation_to_max_length(make, processors) -> None:
    row = make_row(0)
    row["sentence"] = " ".join(["paris"] * 200)
    batch = make(tasks=("T-T",))([row])
    assert batch["mention_input_ids"].shape == (1, 77)
    batch = make(tasks=("T-T",), max_length=8)([row, make_row(1)])
    assert batch["mention_input_ids"].shape == (2, 8)
    assert batch["mention_input_ids"][0, -1].item() == processors[0].eos_token_id
    with pytest.raises(ValueError, match="at least 2"):
        make(max_length=1)


def test_invalid_rows_and_tasks(make) -> None:
    with pytest.raises(ValueError, match="Unknown task 'T-X'"):
        make(tasks=("T-X",))
    with pytest.raises(ValueError, match="distinct tasks"):
        make(tasks=("T-T", "T-T"))
    assert make(tasks=["TI-I", get_task("T-T")]).tasks == ("T-T", "TI-I")
    row = make_row(0)
    del row["mention_image"]
    with pytest.raises(ValueError, match=r"Row 'person-0' has no 'mention_image' column, which task I-T needs"):
        make(tasks=("I-T",))([row])
    row = make_row(0)
    row["label"] = 3
    with pytest.raises(ValueError, match="label 3 does not index its 3 candidates"):
        make(tasks=("T-T",))([row])
    row = make_row(0)
    row["candidate_images"] = row["candidate_images"][:2]
    with pytest.raises(ValueError, match="must be aligned with `candidates`"):
        make(tasks=("T-I",))([row])


def test_from_pretrained_reads_the_checkpoint(tiny_clip_path: Path, tmp_path: Path) -> None:
    collator = M3ELCollator.from_pretrained(tiny_clip_path, tasks="T-T")
    assert collator.tasks == ("T-T",) and collator.max_length == 77 and collator.augment_description
    folder = shutil.copytree(tiny_clip_path, tmp_path / "clipnd")
    config = json.loads((folder / "config.json").read_text())
    config["clipnd"] = {"augment_description": False, "hard_negatives": True, "mention_template": "{mention}"}
    (folder / "config.json").write_text(json.dumps(config))
    collator = M3ELCollator.from_pretrained(folder, seed=3, hard_negatives=False)
    assert (collator.augment_description, collator.hard_negatives, collator.seed) == (False, False, 3)
    assert collator.mention_template == "{mention}" and collator.tasks == TASK_NAMES


def test_from_pretrained_accepts_a_clipnd_config(tiny_clip_path: Path) -> None:
    from m3el_hf.modeling.configuration_clipnd import CLIPNDConfig

    config = CLIPNDConfig.from_pretrained(tiny_clip_path, augment_description=False)
    tokenizer, image_processor = load_processor(tiny_clip_path)
    collator = M3ELCollator.from_pretrained(config, tokenizer=tokenizer, image_processor=image_processor)
    assert not collator.augment_description and collator.max_length == 77


def test_pickles(make) -> None:
    collator, rows = make(hard_negatives=True), [make_row(i) for i in range(6)]
    clone = pickle.loads(pickle.dumps(collator))
    expected, got = collator(rows), clone(rows)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]) if isinstance(value, torch.Tensor) else value == got[key]


def test_dataloader_workers_on_a_datasets_dataset(make) -> None:
    from datasets import Dataset
    from torch.utils.data import DataLoader

    from m3el_hf.data.features import INSTANCE_FEATURES

    rows = [make_row(i, label=i % 3, mention_image=i % 5 != 0) for i in range(16)]
    dataset = Dataset.from_list([{k: r[k] for k in INSTANCE_FEATURES} for r in rows], features=INSTANCE_FEATURES)
    collator = make(hard_negatives=True, seed=7)

    def run(num_workers: int) -> list[dict[str, Any]]:
        loader = DataLoader(dataset, batch_size=4, collate_fn=collator, num_workers=num_workers)
        return list(loader)

    serial, parallel = run(0), run(2)
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert torch.equal(value, b[key]) if isinstance(value, torch.Tensor) else value == b[key]
    tasks = {TASK_NAMES[t] for batch in serial for t in batch["task_ids"].tolist()}
    assert len(tasks) > 3
    kept = sum(len(batch["labels"]) for batch in serial)
    assert kept + sum(batch["num_dropped"].item() for batch in serial) == 16


def test_feeds_clipnd_model_with_a_finite_loss(tiny_clip_path: Path, make) -> None:
    from m3el_hf.modeling.modeling_clipnd import CLIPNDModel

    model = CLIPNDModel.from_pretrained(tiny_clip_path)
    rows = [make_row(i, label=i % 3, mention_image=i % 7 != 3) for i in range(24)]
    batch = make(hard_negatives=True)(rows)
    assert len(set(batch["task_ids"].tolist())) > 4
    output = model(**batch)
    assert output.logits_per_mention.shape == (len(batch["labels"]), len(batch["entity_qids"]))
    assert torch.isfinite(output.loss)
    output.loss.backward()


def test_trains_under_trainer(tiny_clip_path: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from m3el_hf.data.features import INSTANCE_FEATURES
    from m3el_hf.modeling.modeling_clipnd import CLIPNDModel

    rows = [{k: v for k, v in make_row(i, label=i % 3).items() if k in INSTANCE_FEATURES} for i in range(8)]
    args = TrainingArguments(
        tmp_path, per_device_train_batch_size=4, max_steps=2, remove_unused_columns=False, report_to=[], use_cpu=True
    )
    trainer = Trainer(
        model=CLIPNDModel.from_pretrained(tiny_clip_path),
        args=args,
        train_dataset=Dataset.from_list(rows, features=INSTANCE_FEATURES),
        data_collator=M3ELCollator.from_pretrained(tiny_clip_path),
    )
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


def test_lazy_images_give_identical_batches(make) -> None:
    from datasets import Dataset

    from m3el_hf.data.features import INSTANCE_FEATURES

    rows = [{k: v for k, v in make_row(i, label=i % 3).items() if k in INSTANCE_FEATURES} for i in range(6)]
    dataset = Dataset.from_list(rows, features=INSTANCE_FEATURES)
    lazy = lazy_images(dataset)
    assert lazy.features["candidate_images"].feature.decode is False
    assert isinstance(lazy[0]["mention_image"], dict)
    collator = make(tasks=TASK_NAMES, hard_negatives=True)
    eager_batch, lazy_batch = collator([dataset[i] for i in range(6)]), collator([lazy[i] for i in range(6)])
    assert eager_batch.keys() == lazy_batch.keys()
    for key, value in eager_batch.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(lazy_batch[key])), key


def test_real_world_images_reach_the_model_the_same_way_on_every_path(make, processors, real_photos, tiny_clip_path):
    """An EXIF-rotated JPEG, a 16-bit PNG and a palette PNG with transparency: the collator fed undecoded bytes,
    the collator fed stock `datasets` decoding, and the evaluator all give the same pixels, and those are the
    image processor's on the upright, 8-bit picture."""
    import numpy as np
    from datasets import Dataset
    from photos import encoded, rotated_jpeg

    from m3el_hf.data.features import INSTANCE_FEATURES
    from m3el_hf.evaluation.embeddings import ImageStream
    from m3el_hf.images import to_rgb
    from m3el_hf.modeling.encoders import Encoders
    from m3el_hf.modeling.modeling_clipnd import CLIPNDModel

    upright = real_photos["grace_hopper"]
    sixteen = Image.fromarray(np.asarray(real_photos["camera"], dtype=np.uint16) * 257)
    palette = real_photos["logo"].convert("RGBA").convert("P")
    files = [rotated_jpeg(upright), encoded(sixteen, "PNG"), encoded(palette, "PNG", transparency=0)]
    stored_upright = ImageOps.exif_transpose(Image.open(io.BytesIO(files[0])))
    assert stored_upright.size == upright.size
    references = [stored_upright, real_photos["camera"], Image.open(io.BytesIO(files[2]))]
    rows = []
    for i, data in enumerate(files):
        row = {k: v for k, v in make_row(i).items() if k in INSTANCE_FEATURES}
        row["mention_image"] = {"bytes": data, "path": None}
        row["candidate_images"] = [{"bytes": data, "path": None}] * 3
        rows.append(row)
    dataset = Dataset.from_list(rows, features=INSTANCE_FEATURES)
    collator = make(tasks=["I-I"])
    decoded = collator([dataset[i] for i in range(3)])["mention_pixel_values"]
    undecoded = collator([lazy_images(dataset)[i] for i in range(3)])["mention_pixel_values"]
    _, image_processor = processors
    expected = image_processor(images=[to_rgb(image) for image in references], return_tensors="pt")["pixel_values"]
    assert torch.equal(decoded, undecoded)
    assert torch.equal(decoded, expected)
    assert decoded[1].max() > 1.5  # white stays white (a clipped 16-bit image turns all white: check it is not)
    assert decoded[1].std() > 0.3

    model = CLIPNDModel.from_pretrained(tiny_clip_path).eval()
    tokenizer, image_processor = processors
    images = ImageStream(Encoders.for_model(model, tokenizer, image_processor, batch_size=8))
    with torch.no_grad():
        rows = [images.add({"bytes": data, "path": None}) for data in files]
        assert torch.equal(images.embeddings()[rows], model.encode_image(decoded))


def test_uint8_pixels_normalised_later_equal_the_float_batch(make) -> None:
    rows = [make_row(i, label=i % 3) for i in range(6)]
    floats = make(tasks=TASK_NAMES, hard_negatives=True)(rows)
    uint8 = make(tasks=TASK_NAMES, hard_negatives=True, uint8_pixels=True)
    compact = uint8(rows)
    assert "mention_pixel_values" not in compact and compact["mention_pixels"].dtype == torch.uint8
    # Channels last until normalised: the layout the decoders write.
    assert compact["entity_pixels"].permute(0, 3, 1, 2).shape == floats["entity_pixel_values"].shape
    restored = uint8.normalize_pixels(pickle.loads(pickle.dumps(compact)))
    assert restored.keys() == floats.keys()
    for key, value in floats.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored[key])), key


def test_drop_leaked_leaves_out_image_side_views_of_leaked_instances_and_counts_them(make) -> None:
    rows = [make_row(i, label=i % 3) for i in range(9)]
    for i, row in enumerate(rows):
        row["mention_image_leak"] = ("copy", "near", "none")[i % 3]
    collator = make(tasks=("I-T", "T-T"), drop_leaked=True, seed=3)
    batch = collator(rows)
    tasks = [collator.task_for(row["id"]).name for row in rows]
    leaked = [task == "I-T" and row["mention_image_leak"] != "none" for task, row in zip(tasks, rows, strict=True)]
    assert 0 < sum(leaked) < len(rows)  # the draw mixes both tasks over leaked and clean rows
    assert int(batch["num_dropped_leaked"]) == sum(leaked)
    assert batch["labels"].numel() == len(rows) - sum(leaked)
    assert int(make(tasks=("I-T", "T-T"), seed=3)(rows)["num_dropped_leaked"]) == 0  # off by default
    del rows[0]["mention_image_leak"]
    with pytest.raises(ValueError, match="has no 'mention_image_leak' column, which drop_leaked reads"):
        make(tasks=("I-T",), drop_leaked=True)(rows)


def test_batches_of_prepared_real_photos_are_the_tokenizers_and_the_processors(processors, real_photos) -> None:
    """Photos stored as prepare stores them at 224 px (JPEG, and PNG with transparency), undecoded, in rows that
    repeat texts and pictures: every tensor equals the tokenizer's on all texts and the checkpoint's processor's
    on the pictures decoded as `datasets` decodes them, float32 or uint8 normalised later."""
    import numpy as np
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from m3el_hf.images import encode, open_image, shrink_to_shorter_side
    from m3el_hf.modeling.templates import TextTemplates

    tokenizer, _ = processors
    processor = CLIPImageProcessorPil()  # openai/clip-vit-base-patch32's settings: 224 px, bicubic, centre crop
    photos = []
    for photo in real_photos.values():
        rgba = np.asarray(photo.convert("RGBA")).copy()
        rgba[:24, :24, 3] = np.arange(576).reshape(24, 24) % 256
        photos.append(encode(shrink_to_shorter_side(encode(Image.fromarray(rgba)), 224)))
        photos.append(encode(shrink_to_shorter_side(encode(photo.convert("RGB")), 224)))
    assert {data[:4] for data in photos} == {b"\x89PNG", b"\xff\xd8\xff\xe0"}
    rows = []
    for i in range(12):
        row = make_row(i % 5, label=i % 3)  # rows 5..11 repeat the texts of rows 0..6
        row["id"] = f"row-{i}"
        row["mention_image"] = {"bytes": photos[i % 7], "path": None}
        row["candidate_images"] = [{"bytes": photos[(i + j) % 7], "path": None} for j in range(3)]
        rows.append(row)
    collator = M3ELCollator(tokenizer=tokenizer, image_processor=processor, tasks=("TI-TI",), hard_negatives=True)
    batch = collator(rows)

    templates = TextTemplates()
    negatives = [j for row in rows for j in range(3) if j != row["label"]]
    negative_rows = [row for row in rows for j in range(3) if j != row["label"]]
    entity_texts = [templates.entity_text(row["candidates"][row["label"]]) for row in rows]
    entity_texts += [
        templates.entity_text(row["candidates"][j]) for row, j in zip(negative_rows, negatives, strict=True)
    ]
    entity_images = [row["candidate_images"][row["label"]]["bytes"] for row in rows]
    entity_images += [row["candidate_images"][j]["bytes"] for row, j in zip(negative_rows, negatives, strict=True)]
    sides = {
        "mention": (
            [templates.mention_text(r["mention"], r["sentence"]) for r in rows],
            [r["mention_image"]["bytes"] for r in rows],
        ),
        "entity": (entity_texts, entity_images),
    }
    for side, (texts, images) in sides.items():
        assert len(set(texts)) < len(texts) and len(set(images)) < len(images)
        tokens = tokenizer(texts, padding="longest", truncation=True, max_length=77, return_tensors="pt")
        pixels = processor(images=[open_image(data) for data in images], return_tensors="pt")["pixel_values"]
        assert torch.equal(batch[f"{side}_input_ids"], tokens["input_ids"])
        assert torch.equal(batch[f"{side}_attention_mask"], tokens["attention_mask"])
        assert torch.equal(batch[f"{side}_pixel_values"], pixels)
    compact = M3ELCollator(
        tokenizer=tokenizer, image_processor=processor, tasks=("TI-TI",), hard_negatives=True, uint8_pixels=True
    )(rows)
    restored = collator.normalize_pixels(compact)
    assert restored.keys() == batch.keys()
    for key, value in batch.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored[key])), key
