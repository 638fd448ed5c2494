"""image_paths: resolving and reading image paths of the release without leaving its root."""

from __future__ import annotations

import os
import unicodedata

import pytest

from m3el_hf.data.image_paths import ImagePathResolver, resolve_image_path


def test_resolve_image_path_strips_release_root_and_matches_extension_case(tmp_path, make_image):
    make_image(tmp_path / "person_candidates_images" / "Ann-Q1" / "Q1.JPG", fmt="JPEG")
    local = "/M3EL/person_candidates_images/Ann-Q1/Q1.jpg"
    assert resolve_image_path(local, tmp_path) == (tmp_path / "person_candidates_images/Ann-Q1/Q1.JPG").resolve()
    assert resolve_image_path("/OtherRelease/person_candidates_images/Ann-Q1/Q1.JPG", tmp_path).name == "Q1.JPG"


def test_resolve_image_path_refuses_to_leave_the_root(tmp_path, make_image):
    root = tmp_path / "release"
    make_image(tmp_path / "secret.png")
    (root / "imgs").mkdir(parents=True)
    os.symlink(tmp_path / "secret.png", root / "imgs" / "link.png")
    with pytest.raises(ValueError, match=r"escapes the release root \(contains '\.\.'\)"):
        resolve_image_path("/M3EL/imgs/../../secret.png", root)
    with pytest.raises(ValueError, match=r"escapes the release root \(resolves to"):
        resolve_image_path("/M3EL/imgs/link.png", root)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        resolve_image_path("/M3EL/imgs/none.png", root)


def test_resolver_caches_folders_and_follows_links_inside_the_root(tmp_path, make_image):
    make_image(tmp_path / "imgs" / "a.png")
    os.symlink(tmp_path / "imgs" / "a.png", tmp_path / "imgs" / "b.png")
    os.symlink(tmp_path / "imgs", tmp_path / "alias")
    paths = ImagePathResolver(tmp_path, cache_size=1)
    real = str((tmp_path / "imgs" / "a.png").resolve())
    for local in ("/M3EL/imgs/a.png", "imgs/./b.png", "/M3EL/alias/a.png", "\\M3EL\\imgs\\a.png"):
        assert paths.resolve(local) == real
    assert len(paths._dirs) == 1
    with pytest.raises(FileNotFoundError, match=r"image path '/M3EL' names no file"):
        paths.resolve("/M3EL")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        paths.resolve("/M3EL/imgs")


def test_read_bytes_reads_what_resolve_names_and_refuses_the_same_paths(tmp_path, make_image):
    root = tmp_path / "release"
    make_image(root / "imgs" / "a.png")
    make_image(root / "imgs" / "Q1.JPG", fmt="JPEG")
    make_image(tmp_path / "secret.png")
    (root / "imgs" / "dir.png").mkdir()
    os.symlink(root / "imgs" / "a.png", root / "imgs" / "b.png")
    os.symlink(tmp_path / "secret.png", root / "imgs" / "out.png")
    os.symlink(root / "imgs", root / "alias")
    make_image(root / "M3EL", fmt="PNG")
    paths = ImagePathResolver(root)
    # Twice each: the first read fills the folder cache, the second takes the one-open path.
    locals_ = ["/M3EL/imgs/a.png", "imgs/./b.png", "/M3EL/alias/a.png", "/M3EL/imgs/Q1.jpg", "\\M3EL\\imgs\\a.png"]
    for local in locals_ * 2:
        with open(paths.resolve(local), "rb") as f:
            assert paths.read_bytes(local) == f.read(), local
    assert paths.read_bytes("M3EL") == (root / "M3EL").read_bytes()  # no leading "/": a file at the root
    with pytest.raises(FileNotFoundError, match=r"image path '/M3EL' names no file"):
        paths.read_bytes("/M3EL")
    with pytest.raises(ValueError, match=r"escapes the release root \(resolves to"):
        paths.read_bytes("/M3EL/imgs/out.png")  # the folder is cached; the link still goes through resolve
    with pytest.raises(ValueError, match=r"contains '\.\.'"):
        paths.read_bytes("/M3EL/imgs/..")
    with pytest.raises(FileNotFoundError, match="image file not found"):
        paths.read_bytes("/M3EL/imgs/dir.png")


def test_read_bytes_never_caches_a_folder_outside_the_root(tmp_path):
    """A folder link leading out of the root, holding a file link leading back in: the first read is
    legitimate, but the outside folder must not become a shortcut for its other files."""
    root, outside = tmp_path / "release", tmp_path / "outside"
    (root / "imgs").mkdir(parents=True)
    outside.mkdir()
    (root / "imgs" / "a.jpg").write_bytes(b"inside")
    (outside / "secret.jpg").write_bytes(b"secret")
    os.symlink(root / "imgs" / "a.jpg", outside / "back.jpg")
    os.symlink(outside, root / "evil")
    paths = ImagePathResolver(root)
    assert paths.read_bytes("/M3EL/evil/back.jpg") == b"inside"
    for _ in range(2):
        with pytest.raises(ValueError, match="escapes the release root"):
            paths.read_bytes("/M3EL/evil/secret.jpg")


@pytest.mark.parametrize(("on_disk", "in_record"), [("NFD", "NFC"), ("NFC", "NFD")])
def test_a_path_in_another_unicode_normal_form_than_on_disk_is_found(tmp_path, make_image, on_disk, in_record):
    """Archives made on macOS store names in NFD; records are mostly NFC. The two look the same."""
    folder, name = "Zoë Ébert-Q1", "Zoë"
    disk = tmp_path / "imgs" / unicodedata.normalize(on_disk, folder) / (unicodedata.normalize(on_disk, name) + ".JPG")
    make_image(disk, fmt="JPEG")
    local = f"/M3EL/imgs/{unicodedata.normalize(in_record, folder)}/{unicodedata.normalize(in_record, name)}.jpg"
    assert not (tmp_path / local.removeprefix("/M3EL/")).exists()  # the names differ byte for byte
    assert resolve_image_path(local, tmp_path) == disk.resolve()
    paths = ImagePathResolver(tmp_path)
    for _ in range(2):  # the second read takes the cached folder
        assert paths.read_bytes(local) == disk.read_bytes()


def test_a_missing_path_that_is_not_ascii_is_shown_escaped_with_its_normal_form(tmp_path):
    (tmp_path / "imgs" / "Zoë").mkdir(parents=True)  # NFC
    local = "/M3EL/imgs/Zoe\u0308/Q1.jpg"  # NFD: the folder is found, the file is not
    expected = f"image file not found: {local!r} (looked for {tmp_path}{local.removeprefix('/M3EL')}); "
    with pytest.raises(FileNotFoundError) as caught:
        resolve_image_path(local, tmp_path)
    assert str(caught.value) == expected + "written as '/M3EL/imgs/Zoe\\u0308/Q1.jpg' (NFD)"
    with pytest.raises(FileNotFoundError, match=r"image file not found: '/M3EL/imgs/none\.jpg' \(looked for [^;]*\)$"):
        resolve_image_path("/M3EL/imgs/none.jpg", tmp_path)
