"""A valid raw M³EL record to build test inputs from, and a byte that is not UTF-8 to put in a records file.

A module, not a fixture: parametrize lists use it.
"""

from __future__ import annotations


def record(qid="Q1", others=("Q2",), **overrides):
    def cand(q):
        return {"Qid": q, "name": "Ann", "description": f"desc {q}", "image": ["a.jpg", "u", f"/M3EL/x/{q}.jpg"]}

    raw = {
        "Qid": qid,
        "name": "Ann",
        "description": f"desc {qid}",
        "sentence": "Ann wrote a book.\n",
        "image": ["a.jpg", "https://commons.wikimedia.org/wiki/Special:FilePath/a.jpg", f"/M3EL/x/{qid}.jpg"],
        "candidates": [cand(q) for q in (*others, qid)],
    }
    raw.update(overrides)
    return raw


def latin1(data: bytes) -> tuple[bytes, int]:
    """`data` with its one ``BAD`` replaced by "Zoë" in Latin-1 (0xeb is not UTF-8 there), and that byte's offset."""
    data = data.replace(b"BAD", b"Zo\xeb")
    return data, data.index(b"\xeb")
