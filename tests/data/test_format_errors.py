"""format_errors: M3ELFormatError names the file and record, keeps a stable key, and survives pickling."""

from __future__ import annotations

import pickle

from m3el_hf.data.format_errors import M3ELFormatError, too_large


def test_format_error_survives_pickling_for_worker_processes():
    error = M3ELFormatError("candidate list is empty", "movies.json", 4, 12, key="empty_candidates")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "movies.json, record 4 (line 12): candidate list is empty"
    fields = ("movies.json", 4, 12, "candidate list is empty", "empty_candidates")
    assert (again.file, again.record, again.line, again.reason, again.key) == fields
    assert M3ELFormatError("other fault", "movies.json").key == "other"


def test_an_over_size_record_is_named_as_a_limit_not_a_syntax_error():
    error = too_large("movies.json", 7, 3)
    assert error.key == "record_too_large"
    assert str(error).startswith("movies.json, record 7 (line 3): record is over the size cap of 16 MiB")
