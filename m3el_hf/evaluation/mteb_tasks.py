"""M³EL (arXiv 2410.18096) as MTEB tasks: 9 modality pairs × 2 protocols, and the leak-free twins.

Written to MTEB's conventions, one small declarative class per task; with `m3el_hf.evaluation.mteb_retrieval`
(their shared retrieval task, imported by its absolute name) it imports only ``mteb``, ``datasets`` and ``numpy``,
so both files can be proposed to embeddings-benchmark/mteb as they are but for that one import line.

- ``M3EL{m}2{e}Candidates``: a mention ranks its own candidate list (M³EL's protocol; ``top_ranked``).
- ``M3EL{m}2{e}Kb``: a mention ranks every entity of its topic's knowledge base (the ``{topic}-kb`` config).
- ``…LeakFree`` (tasks with a mention image): the same without the instances whose mention image is a copy or a
  near-duplicate of the gold's.
"""

from __future__ import annotations

from mteb.abstasks.task_metadata import TaskMetadata

from m3el_hf.evaluation.mteb_retrieval import CATEGORY, SPLIT, TOPICS, AbsTaskM3EL

DATASET = {"path": "m3el-hf/M3EL", "revision": "main"}
"""Where ``m3el-hf push-dataset`` publishes the benchmark; pass ``dataset=`` to use another repo or folder."""
_CITATION = r"""
@article{m3el2024,
  journal = {arXiv preprint arXiv:2410.18096},
  title = {M$^3$EL: A Multi-task Multi-topic Dataset for Multi-modal Entity Linking},
  year = {2024},
}
"""
_PROTOCOL_TEXT = {
    "Candidates": "each mention ranks its own candidate list (M³EL's protocol)",
    "Kb": "each mention ranks every entity of its topic's knowledge base",
}


def task_name(mention: str, entity: str, protocol: str, leak_free: bool = False) -> str:
    """The MTEB name of an M³EL task, e.g. ``task_name("TI", "T", "candidates") == "M3ELTI2TCandidates"``."""
    return f"M3EL{mention}2{entity}{protocol.capitalize()}{'LeakFree' if leak_free else ''}"


def _metadata(mention: str, entity: str, protocol: str, leak_free: bool = False) -> TaskMetadata:
    category = f"{CATEGORY[mention]}2{CATEGORY[entity]}"
    text_only = category == "t2t"
    leak = (
        " Instances whose mention image is a copy or a near-duplicate of the gold's are left out." if leak_free else ""
    )
    return TaskMetadata(
        name=task_name(mention, entity, protocol, leak_free),
        description=(
            f"M³EL multi-modal entity linking, mention {mention} to entity {entity}: "
            f"{_PROTOCOL_TEXT[protocol.capitalize()]}. Subsets are the five topics.{leak} Instances lacking the "
            "task's modalities are left out and counted; ties count their expected value under random "
            "tie-breaking."
        ),
        reference="https://arxiv.org/abs/2410.18096",
        dataset=dict(DATASET),
        type=("Reranking" if protocol == "candidates" else "Retrieval")
        if text_only
        else ("Any2AnyReranking" if protocol == "candidates" else "Any2AnyRetrieval"),
        category=category,
        modalities=[name for letter, name in (("I", "image"), ("T", "text")) if letter in mention + entity],
        eval_splits=[SPLIT],
        eval_langs={topic: ["eng-Latn"] for topic in TOPICS},
        main_score="expected_accuracy",
        date=("2024-01-01", "2024-10-23"),
        domains=["Encyclopaedic", "Entertainment", "Sport", "Written"],
        task_subtypes=["Cross-Modal Retrieval"] if not text_only else ["Article retrieval"],
        license="not specified",
        annotations_creators="derived",
        dialect=[],
        sample_creation="found",
        bibtex_citation=_CITATION,
    )


class M3ELT2TCandidates(AbsTaskM3EL):
    metadata = _metadata("T", "T", "candidates")


class M3ELT2ICandidates(AbsTaskM3EL):
    metadata = _metadata("T", "I", "candidates")


class M3ELT2TICandidates(AbsTaskM3EL):
    metadata = _metadata("T", "TI", "candidates")


class M3ELI2TCandidates(AbsTaskM3EL):
    metadata = _metadata("I", "T", "candidates")


class M3ELI2ICandidates(AbsTaskM3EL):
    metadata = _metadata("I", "I", "candidates")


class M3ELI2TICandidates(AbsTaskM3EL):
    metadata = _metadata("I", "TI", "candidates")


class M3ELTI2TCandidates(AbsTaskM3EL):
    metadata = _metadata("TI", "T", "candidates")


class M3ELTI2ICandidates(AbsTaskM3EL):
    metadata = _metadata("TI", "I", "candidates")


class M3ELTI2TICandidates(AbsTaskM3EL):
    metadata = _metadata("TI", "TI", "candidates")


class M3ELI2TCandidatesLeakFree(AbsTaskM3EL):
    metadata = _metadata("I", "T", "candidates", leak_free=True)


class M3ELI2ICandidatesLeakFree(AbsTaskM3EL):
    metadata = _metadata("I", "I", "candidates", leak_free=True)


class M3ELI2TICandidatesLeakFree(AbsTaskM3EL):
    metadata = _metadata("I", "TI", "candidates", leak_free=True)


class M3ELTI2TCandidatesLeakFree(AbsTaskM3EL):
    metadata = _metadata("TI", "T", "candidates", leak_free=True)


class M3ELTI2ICandidatesLeakFree(AbsTaskM3EL):
    metadata = _metadata("TI", "I", "candidates", leak_free=True)


class M3ELTI2TICandidatesLeakFree(AbsTaskM3EL):
    metadata = _metadata("TI", "TI", "candidates", leak_free=True)


class M3ELT2TKb(AbsTaskM3EL):
    metadata = _metadata("T", "T", "kb")


class M3ELT2IKb(AbsTaskM3EL):
    metadata = _metadata("T", "I", "kb")


class M3ELT2TIKb(AbsTaskM3EL):
    metadata = _metadata("T", "TI", "kb")


class M3ELI2TKb(AbsTaskM3EL):
    metadata = _metadata("I", "T", "kb")


class M3ELI2IKb(AbsTaskM3EL):
    metadata = _metadata("I", "I", "kb")


class M3ELI2TIKb(AbsTaskM3EL):
    metadata = _metadata("I", "TI", "kb")


class M3ELTI2TKb(AbsTaskM3EL):
    metadata = _metadata("TI", "T", "kb")


class M3ELTI2IKb(AbsTaskM3EL):
    metadata = _metadata("TI", "I", "kb")


class M3ELTI2TIKb(AbsTaskM3EL):
    metadata = _metadata("TI", "TI", "kb")


class M3ELI2TKbLeakFree(AbsTaskM3EL):
    metadata = _metadata("I", "T", "kb", leak_free=True)


class M3ELI2IKbLeakFree(AbsTaskM3EL):
    metadata = _metadata("I", "I", "kb", leak_free=True)


class M3ELI2TIKbLeakFree(AbsTaskM3EL):
    metadata = _metadata("I", "TI", "kb", leak_free=True)


class M3ELTI2TKbLeakFree(AbsTaskM3EL):
    metadata = _metadata("TI", "T", "kb", leak_free=True)


class M3ELTI2IKbLeakFree(AbsTaskM3EL):
    metadata = _metadata("TI", "I", "kb", leak_free=True)


class M3ELTI2TIKbLeakFree(AbsTaskM3EL):
    metadata = _metadata("TI", "TI", "kb", leak_free=True)


TASKS: tuple[type[AbsTaskM3EL], ...] = tuple(AbsTaskM3EL.__subclasses__())
"""Every M³EL task class: 9 candidate-list tasks, 9 knowledge-base tasks, then the 12 leak-free twins."""
