"""Shared fixtures of the data tests: writing records files and images."""

from __future__ import annotations

import json

import PIL.Image
import pytest


@pytest.fixture
def write_lines():
    """Write records one a line: JSON, or Python literals with `literal=True`."""

    def write(path, records, literal=False):
        path.write_text("".join((repr(r) if literal else json.dumps(r)) + "\n" for r in records), encoding="utf-8")

    return write


@pytest.fixture
def make_image():
    """Save a small red RGB image at a path, creating its folders."""

    def make(path, size=(12, 10), fmt=None):
        path.parent.mkdir(parents=True, exist_ok=True)
        PIL.Image.new("RGB", size, (200, 10, 10)).save(path, format=fmt)

    return make
