"""A deterministic generator of synthetic raw M³EL releases, in the real release's format, at any scale.

Each topic gets a knowledge base of entities in *name groups*: entities that share one surface
name and differ by their description ("{attribute} {type}", e.g. "English novelist"). The
description carries the signal the benchmark is about:

- the context sentence contains cue words of the gold's type and its attribute word (or a
  synonym), never the description verbatim;
- an entity's image is a scene whose identity object has the shape of its type and the colour of
  its attribute, on a background and among distractors that tell nothing; a mention image is the
  gold's file (a `mention_copies` share, as in the release) or another scene of the gold. Images are
  small drawings, or photo-like pictures of Commons-like sizes and formats (`synth_images`).

Without descriptions the candidates of a name group are indistinguishable by text.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
import tempfile
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..atomic import refuse_used_folder, replace_dir
from ..progress import progress as progress_bar
from ..tasks import TOPICS, check_topics
from ..version import __version__
from .synth_images import LOOKS, draw, encode, photo, pick_look

__all__ = ["SYNTH_MARKER", "SynthConfig", "entity_images", "make_entities", "make_sentence", "synthesize"]

SYNTH_MARKER = "m3el-hf-synth.json"
"""Written at the root of every synthetic release: `prepare` reads it, so cards and scores say "synthetic"."""

logger = logging.getLogger(__name__)

Format = Literal["json", "jsonl", "python", "mimic"]
_FORMATS: tuple[str, ...] = ("json", "jsonl", "python", "mimic")
Images = Literal["drawn", "photo"]
_IMAGES: tuple[str, ...] = ("drawn", "photo")

# Per topic: six types ("type: cue words") and six attributes ("attribute: synonym"). Group
# members get distinct types and attributes, so the attribute word alone disambiguates a group.
_TYPES = {
    "movies": "drama film: premiere screenplay cinemas tragedy | comedy film: jokes laughter gags satire | "
    "film director: directing filmmaking cinematography auteurs | actor: performances roles casting stardom | "
    "television series: episodes seasons broadcasts ratings | film score: soundtrack orchestra composition melodies",
    "common": "city: streets population municipality downtown | river: tributary banks estuary floods | "
    "hand tool: handle repairs workshop hardware | musical instrument: strings tuning concerts chords | "
    "bird species: feathers nesting migration plumage | traditional dish: recipe cooking flavour cuisine",
    "person": "novelist: novels prose fiction manuscripts | footballer: goals striker league transfers | "
    "painter: canvas brushwork portraits galleries | politician: elections parliament campaign policies | "
    "physicist: quantum experiments particles laboratory | singer: albums vocals concerts charts",
    "books": "novel: chapters plot protagonist narrative | poetry collection: verses stanzas poems rhyme | "
    "biography: memoir childhood biographer letters | textbook: exercises curriculum students lectures | "
    "comic book: panels superheroes illustrations issues | cookbook: recipes ingredients kitchen baking",
    "sports": "football club: fixtures supporters league kits | tennis player: racket serve tiebreaks Wimbledon | "
    "cycling race: peloton stages sprints climbs | basketball team: dunks playoffs rebounds arena | "
    "boxer: knockout bouts heavyweight gloves | sports venue: seats capacity pitch floodlights",
}
_ATTRIBUTES = {
    "movies": "American: Hollywood | French: Parisian | Italian: Roman | Japanese: Tokyo | Indian: Bollywood | "
    "Korean: Seoul",
    "common": "European: continental | African: Saharan | Asian: Himalayan | Australian: antipodean | "
    "Nordic: Scandinavian | Andean: Peruvian",
    "person": "English: British | American: Yankee | French: Parisian | German: Bavarian | Brazilian: Carioca | "
    "Japanese: Osaka",
    "books": "Victorian: nineteenth-century | modernist: avant-garde | Russian: Soviet | children's: juvenile | "
    "Spanish: Castilian | Gothic: macabre",
    "sports": "Spanish: Iberian | Scottish: Highland | Argentine: Rioplatense | Dutch: Amsterdam | Canadian: Toronto | "
    "Nigerian: Lagos",
}


def _parse_vocab(text: str) -> list[tuple[str, list[str]]]:
    return [(head.strip(), tail.split()) for head, _, tail in (item.partition(":") for item in text.split("|"))]


# topic -> ([(type, cue words)], [(attribute, [synonym])])
_VOCAB = {topic: (_parse_vocab(_TYPES[topic]), _parse_vocab(_ATTRIBUTES[topic])) for topic in TOPICS}
_NAME_FORMATS = {"movies": "{} {}", "common": "{}-{}", "person": "{} {}", "books": "The {} {}", "sports": "{} {}"}
_SYLLABLES = ("ka", "lo", "ven", "rik", "ma", "tor", "el", "sa", "din", "bri", "or", "zu")
_SYLLABLES += ("pe", "lan", "mi", "cho", "ra", "vel", "tam", "os", "ne", "quin", "ha", "dro")
_FILLERS = ("critics", "fans", "archives", "local newspapers", "historians", "rumours", "interviews", "scholars")
_TEMPLATES = (
    "{name} is best known for {a} {c1} and {c2}, according to {f}.",
    "In {year}, {name} made headlines with {c1}, {a} {c2} and {f}.",
    "{name} ({year}) drew {f} for its {a} {c1} and {c2}.",
    "Sources on {name} discuss {c1}, {c2} and {a} {f}.",
    "Long before {year}, {name} was linked to {a} {c1}; {f} followed the {c2}.",
)
# Size-biased mean of 2..6 with these weights is ≈3.2 candidates per instance: with the
# occasional extra candidate, the mention image and a few missing images, ≈4 images per instance.
_GROUP_SIZES, _GROUP_WEIGHTS = (2, 3, 4, 5, 6), (50, 30, 12, 5, 3)
_P_EXTRA_CANDIDATE, _P_MISSING, _P_DIFFICULTY = 0.05, 0.03, 0.3
_COMMONS = "https://commons.wikimedia.org/wiki/Special:FilePath/"
_CACHED_ENTITIES = 1 << 15  # entities whose first image file is remembered
_DRAWN_SIZE = 32  # default side of drawn images


@dataclass
class SynthConfig:
    """Options of `synthesize`: where to write a synthetic raw release, how big, and in which format.

    >>> config = SynthConfig(out=Path("/tmp/m3el-synth"), instances=100, topics=("books",))
    """

    out: Path = field(metadata={"help": "Directory to write the synthetic release into.", "positional": False})
    instances: int = field(default=1000, metadata={"help": "Total number of mentions, spread evenly over topics."})
    seed: int = field(default=0, metadata={"help": "Random seed; the same options give byte-identical output."})
    topics: tuple[str, ...] = field(default=TOPICS, metadata={"help": "Topics to generate."})
    format: Format = field(
        default="json",
        metadata={
            "help": "Content of each `{topic}.json` file: a JSON array, JSON lines or Python-literal lines; or "
            "`mimic`: one release in MIMIC's layout (WikiMEL, RichpediaMEL, WikiDiverse) of the topics' entities."
        },
    )
    name: str = field(
        default="wikimel",
        metadata={"help": "With --format mimic: the dataset's name; it prefixes the split files (WIKIMEL_train.json)."},
    )
    images: Images = field(
        default="drawn",
        metadata={
            "help": "`drawn`: small square drawings; `photo`: photo-like pictures of Wikimedia-Commons-like "
            "sizes (longer side 300-3000 px) and formats (JPEG, progressive, greyscale, CMYK, EXIF-rotated; "
            "RGBA and 16-bit PNG)."
        },
    )
    image_size: int = field(
        default=_DRAWN_SIZE,
        metadata={"help": "Side of the drawn images, in pixels (drawn only: photos have Commons-like sizes)."},
    )
    mention_copies: float = field(
        default=0.10,
        metadata={
            "help": "Share of instances whose mention image reuses the gold entity's file byte for byte, as the "
            "release does; the other mention images are other pictures of the gold (a few instances have none)."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace `out` if it holds anything."})

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.topics = (self.topics,) if isinstance(self.topics, str) else tuple(self.topics)
        if isinstance(self.instances, bool) or not isinstance(self.instances, int) or self.instances < 1:
            raise ValueError(f"`instances` must be an integer >= 1, got {self.instances!r}.")
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 512:
            raise ValueError(f"`image_size` must be an integer between 8 and 512, got {self.image_size!r}.")
        if self.images not in _IMAGES:
            raise ValueError(f"`images` must be one of {', '.join(_IMAGES)}, got {self.images!r}.")
        if self.images == "photo" and self.image_size != _DRAWN_SIZE:
            raise ValueError("`image_size` applies to drawn images only: photo images have Commons-like sizes.")
        if isinstance(self.mention_copies, bool) or not (
            isinstance(self.mention_copies, int | float) and 0 <= self.mention_copies <= 1
        ):
            raise ValueError(f"`mention_copies` must be a number between 0 and 1, got {self.mention_copies!r}.")
        if self.format not in _FORMATS:
            raise ValueError(f"`format` must be one of {', '.join(_FORMATS)}, got {self.format!r}.")
        if self.format == "mimic" and (self.images != "drawn" or not re.fullmatch(r"[a-z][a-z0-9_]*", self.name)):
            raise ValueError(
                f"--format mimic takes drawn images and a --name of lowercase letters, digits and _, got "
                f"images={self.images!r}, name={self.name!r}."
            )
        check_topics(self.topics)


@dataclass(frozen=True)
class _Entity:
    qid: str
    name: str
    description: str
    kind: int  # type index: shape and sentence cues
    attribute: int  # attribute index: identity object's colour and attribute word
    group: tuple[int, int]  # [start, stop) of the name group in the topic's entity list
    file: str  # Commons file name, or "" when the entity has no image
    # Identity object in the entity's own picture: x, y in [0, 1] across the room that keeps it
    # inside, radius as a fraction of the shorter side; dark ink.
    style: tuple[float, float, float, bool]
    look: str = ""  # photo mode: the image's look (a key of `LOOKS`)


def _name(topic: str, index: int, stride: int, offset: int) -> str:
    words = len(_SYLLABLES) ** 2
    total = words * words
    first, second = divmod((index * stride + offset) % total, words)
    parts = [_SYLLABLES[w // len(_SYLLABLES)] + _SYLLABLES[w % len(_SYLLABLES)] for w in (first, second)]
    parts = [p.capitalize() for p in parts]
    if topic == "person" and index % 13 == 5:
        parts[1] = "O'" + parts[1]
    name = _NAME_FORMATS[topic].format(*parts)
    return name if index < total else f"{name} {index // total + 1}"


def _photo_ext(look: str, ext: str) -> str:
    """The extension of a file of `look`: "png" for a PNG look, else "JPG" or "jpg" as `ext` says."""
    return "png" if LOOKS[look][1] == "PNG" else "JPG" if ext == "JPG" else "jpg"


def make_entities(topic: str, count: int, seed: int, photos: bool) -> list[_Entity]:
    """Name groups of 2–6 entities until there are at least `count` entities; with `photos`, each has a look."""
    rng = random.Random(f"m3el-synth/entities/{seed}/{topic}")
    looks = random.Random(f"m3el-synth/looks/{seed}/{topic}")
    types, attributes = _VOCAB[topic]
    # `stride` ≡ 1 (mod 6) is coprime with 24**4, so group names are distinct.
    stride, offset = 6 * rng.randrange(1, 50_000) + 1, rng.randrange(1 << 20)
    qid = (TOPICS.index(topic) + 1) * 100_000_000 + rng.randrange(1_000_000)
    entities: list[_Entity] = []
    for group_index in range(count):  # at most `count` groups are needed
        if len(entities) >= count:
            break
        name = _name(topic, group_index, stride, offset)
        size = rng.choices(_GROUP_SIZES, _GROUP_WEIGHTS)[0]
        group = (len(entities), len(entities) + size)
        for j, (kind, attribute) in enumerate(zip(rng.sample(range(6), size), rng.sample(range(6), size), strict=True)):
            ext = rng.choices(("jpg", "JPG", "png"), (90, 5, 5))[0]
            look = pick_look(looks.random()) if photos else ""
            ext = _photo_ext(look, ext) if look else ext
            file = "" if rng.random() < _P_MISSING else f"{name} ({j + 1}).{ext}"
            style = (rng.random(), rng.random(), rng.uniform(0.2, 0.3), rng.random() < 0.5)
            description = f"{attributes[attribute][0]} {types[kind][0]}"
            entities.append(_Entity(f"Q{qid}", name, description, kind, attribute, group, file, style, look))
            qid += 1
    return entities


def make_sentence(topic: str, gold: _Entity, rng: random.Random) -> str:
    """A context sentence with the gold's type cues and attribute word or synonym, plus noise."""
    types, attributes = _VOCAB[topic]
    cues = types[gold.kind][1]
    word, (synonym,) = attributes[gold.attribute]
    roll = rng.random()
    a = word if roll < 0.7 else synonym if roll < 0.9 else ""
    filler = rng.choice(_FILLERS)
    if rng.random() < 0.2:  # a distracting cue of another type of the topic
        filler = rng.choice(types[(gold.kind + rng.randrange(1, 6)) % 6][1])
    c1, c2 = rng.sample(cues, 2)
    text = rng.choice(_TEMPLATES).format(name=gold.name, a=a, c1=c1, c2=c2, f=filler, year=rng.randrange(1900, 2024))
    text = re.sub(r" {2,}", " ", text)
    return text + "\n" if rng.random() < 0.8 else text  # most real sentences end with a newline


def _image_field(file: str, local: str) -> list[str]:
    return [file, _COMMONS + urllib.parse.quote(file), "/M3EL/" + local]


def _mention_image(gold: _Entity, ext: str, config: SynthConfig, rng: np.random.Generator) -> tuple[str, bytes]:
    """The extension and bytes of a mention image that is another picture of the gold."""
    if config.images == "drawn":
        return ext, encode(draw(gold, config.image_size, rng, mention=True), ext)
    look = pick_look(rng.random())
    return _photo_ext(look, ext), photo(gold, look, rng, mention=True)


def entity_images(config: SynthConfig, root: Path) -> Callable[[_Entity, str], bytes]:
    """`image(entity, local)`: the bytes of the entity's image, which the caller writes to `root / local`.

    An entity's image is encoded once and read back from its first file afterwards. The first files
    of the last `_CACHED_ENTITIES` entities used are remembered, so memory stays flat at any scale.
    """
    first: OrderedDict[str, str] = OrderedDict()

    def image(entity: _Entity, local: str) -> bytes:
        if entity.qid in first:
            first.move_to_end(entity.qid)
            return (root / first[entity.qid]).read_bytes()
        first[entity.qid] = local
        if len(first) > _CACHED_ENTITIES:
            first.popitem(last=False)
        rng = np.random.default_rng([config.seed, int(entity.qid[1:])])
        if config.images == "drawn":
            return encode(draw(entity, config.image_size, rng), entity.file.rpartition(".")[2])
        return photo(entity, entity.look, rng)

    return image


def _instance(
    topic: str,
    gold: _Entity,
    entities: list[_Entity],
    config: SynthConfig,
    entity_image: Callable[[_Entity, str], bytes],
    rngs: tuple[random.Random, np.random.Generator],
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One record and the image files (release-relative path → bytes) it refers to."""
    rng, image_rng = rngs
    candidates = entities[slice(*gold.group)]
    if rng.random() < _P_EXTRA_CANDIDATE and len(entities) > len(candidates):
        extra = rng.randrange(len(entities) - len(candidates))
        candidates.append(entities[extra if extra < gold.group[0] else extra + len(candidates)])
    rng.shuffle(candidates)
    folder = f"{topic}_candidates_images/{gold.name}-{gold.qid}"
    files: dict[str, bytes] = {}
    images: dict[str, list[str]] = {}
    for candidate in candidates:
        images[candidate.qid] = []
        if candidate.file:
            local = f"{folder}/{candidate.qid}.{candidate.file.rpartition('.')[2]}"
            images[candidate.qid] = _image_field(candidate.file, local)
            files[local] = entity_image(candidate, local)
    roll = rng.random()
    if roll < _P_MISSING:
        image = []
    elif roll < _P_MISSING + config.mention_copies and gold.file:
        image = images[gold.qid]  # the real release often reuses the gold's file as the mention image
    else:
        ext, data = _mention_image(gold, rng.choices(("jpg", "JPG", "png"), (92, 4, 4))[0], config, image_rng)
        image = _image_field(f"{gold.name} {rng.randrange(1900, 2024)}.{ext}", f"{folder}/mention.{ext}")
        files[image[2].removeprefix("/M3EL/")] = data
    record: dict[str, Any] = {"Qid": gold.qid, "name": gold.name, "description": gold.description}
    record["sentence"] = make_sentence(topic, gold, rng)
    if rng.random() < _P_DIFFICULTY:
        record["difficulty"] = min(2, gold.group[1] - gold.group[0] - 2)
    record["image"] = image
    record["candidates"] = [
        {"Qid": c.qid, "name": c.name, "description": c.description, "image": images[c.qid]} for c in candidates
    ]
    return record, files


def _dump(record: dict[str, Any], fmt: str) -> str:
    return repr(record) if fmt == "python" else json.dumps(record, ensure_ascii=False)


def _write_topic(topic: str, count: int, config: SynthConfig, root: Path, progress: Any) -> tuple[int, int]:
    """Write `{topic}.json` and its images under `root`; return (entities used, image files)."""
    entities = make_entities(topic, count, config.seed, config.images == "photo")
    rng = random.Random(f"m3el-synth/instances/{config.seed}/{topic}")
    image_rng = np.random.default_rng([config.seed, TOPICS.index(topic)])
    entity_image = entity_images(config, root)  # identical wherever the entity appears
    golds = rng.sample(range(len(entities)), count)  # each entity is gold at most once: unique folders
    used: set[str] = set()
    images = 0
    with open(root / f"{topic}.json", "w", encoding="utf-8") as f:
        f.write("[" if config.format == "json" else "")
        for i, index in enumerate(golds):
            record, files = _instance(topic, entities[index], entities, config, entity_image, (rng, image_rng))
            if files:  # all files of an instance share its folder
                (root / next(iter(files))).parent.mkdir(parents=True, exist_ok=True)
            for local, data in files.items():
                (root / local).write_bytes(data)
            used.update(c["Qid"] for c in record["candidates"])
            images += len(files)
            separator = ("\n" if i == 0 else ",\n") if config.format == "json" else ""
            f.write(separator + _dump(record, config.format) + ("" if config.format == "json" else "\n"))
            progress.update()
        f.write(("\n]\n" if count else "]\n") if config.format == "json" else "")
    return len(used), images


def synthesize(config: SynthConfig) -> Path:
    """Write a synthetic raw M³EL release to `config.out`.

    The release is built in a temporary sibling directory and moved into place at the end, so
    `out` never holds a partial release.

    Args:
        config (`SynthConfig`):
            What to generate and where.

    Returns:
        `Path`: `config.out`, holding `{topic}.json` and `{topic}_candidates_images/` per topic.

    Raises:
        `FileExistsError`: `out` exists, is not empty and `config.overwrite` is not set.
    """
    out = config.out
    refuse_used_folder(out, config.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    counts = [config.instances // len(config.topics)] * len(config.topics)
    for i in range(config.instances % len(config.topics)):
        counts[i] += 1
    entities = images = 0
    try:
        with progress_bar(desc="Synthesizing M³EL", total=config.instances, unit="instance") as progress:
            if config.format == "mimic":
                from .synth_mimic import write_mimic_release

                entities, images = write_mimic_release(config, tmp, counts, progress)
            else:
                for topic, count in zip(config.topics, counts, strict=True):
                    used, written = _write_topic(topic, count, config, tmp, progress)
                    entities, images = entities + used, images + written

        options = {
            name: getattr(config, name)
            for name in ("instances", "seed", "topics", "format", "images", "image_size", "mention_copies")
        } | ({"name": config.name} if config.format == "mimic" else {})
        marker = {"generator": "m3el-hf synth", "version": __version__, **options}
        (tmp / SYNTH_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        replace_dir(tmp, out, overwrite=True)  # emptiness and --overwrite were checked above
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Wrote %d instances, %d entities and %d images to %s.", config.instances, entities, images, out)
    return out
