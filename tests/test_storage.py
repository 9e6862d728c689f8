"""The storage layer's key building: names from data are checked before they become keys."""

from __future__ import annotations

import pytest

from catpose.errors import DataFormatError
from catpose.storage import NAME_MAX_BYTES, Store, key, name_problem, safe_name, safe_rel, shown_name

PLAIN = [
    "car",
    "106_12650_23736",
    "category=car",
    "teddy bear",
    "chaise-longue",
    "größe",
    "a.b",
    "x" * NAME_MAX_BYTES,
]
BAD = [
    "",
    " ",
    ".",
    "..",
    ".hidden",
    "a/b",
    "../../x",
    "a\\b",
    "a\x00b",
    "new\nline",
    "tab\t",
    "*",
    "c?r",
    "[ab]",
    "x" * (NAME_MAX_BYTES + 1),
    "é" * (NAME_MAX_BYTES // 2 + 1),
    None,
    3,
]


@pytest.mark.parametrize("name", PLAIN)
def test_plain_names_pass_unchanged(name):
    assert name_problem(name) is None
    assert safe_name(name) == name
    assert shown_name(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_names_are_refused_naming_the_source_and_field(name):
    assert name_problem(name)
    with pytest.raises(DataFormatError) as e:
        safe_name(
            name, "sequence name", "/data/car/frame_annotations.jgz", "frame_annotations[17].sequence_name"
        )
    msg = str(e.value)
    assert msg.startswith("/data/car/frame_annotations.jgz: field 'frame_annotations[17].sequence_name': "
                          "sequence name")
    assert "is not a plain name" in msg
    assert "\n" not in msg and "\x00" not in msg and len(msg) < 300  # printable, short, whatever the name


def test_key_joins_checked_components():
    assert key("car", "car_0001.npz") == "car/car_0001.npz"
    for parts in (("car", "../../evil.npz"), ("..", "x"), ("car", "")):
        with pytest.raises(DataFormatError, match="not a plain name"):
            key(*parts)


def test_a_key_stays_inside_its_store(tmp_path):
    store = Store(tmp_path / "store")
    store.write_bytes(key("car", "car_0001.npz"), b"ok")
    assert (tmp_path / "store" / "car" / "car_0001.npz").read_bytes() == b"ok"
    with pytest.raises(DataFormatError):
        store.write_bytes(key("car", f"../../../{tmp_path.name}/evil.npz"), b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]


def test_relative_paths_from_records():
    assert safe_rel("car/seq/images/frame01.jpg") == "car/seq/images/frame01.jpg"
    for bad in ("/etc/passwd", "car/../../x.jpg", "car//x.jpg", "car/.x/y.jpg", "car\\..\\x.jpg", ""):
        with pytest.raises(DataFormatError, match="not a plain relative path|not a relative path"):
            safe_rel(bad, "path", "f.jgz", "frame_annotations[0].image.path")
