import pytest

from dncompress.cfg import parse_cfg, read_cfg, write_cfg
from dncompress.errors import DncompressError

from helpers import CFGS

CFG_NAMES = ["yolov3-tiny", "yolov3", "yolov4-tiny", "yolov2-tiny"]


@pytest.mark.parametrize("name", CFG_NAMES)
def test_write_parse_roundtrip_keeps_sections_keys_values(name):
    sections = read_cfg(CFGS / f"{name}.cfg")
    again = parse_cfg(write_cfg(sections))
    assert [(s.type, s.options) for s in again] == [(s.type, s.options) for s in sections]
    assert write_cfg(again) == write_cfg(sections)


def test_comments_and_key_order_survive():
    text = "# top\n[net]\nwidth=32\n# mid\nheight = 32\n\n[maxpool]\nsize=2\nstride=2\n"
    sections = parse_cfg(text)
    assert list(sections[0].options) == ["width", "height"]
    out = write_cfg(sections)
    assert out.startswith("# top\n[net]\nwidth=32\nheight=32\n# mid\n")
    assert sections[0].key_lines == {"width": 3, "height": 5}
    assert sections[1].line == 7


@pytest.mark.parametrize("text, fragment", [
    ("width=3\n[net]\n", "line 1"),
    ("[net]\nwidth\n", "line 2 [net]"),
    ("[net\nwidth=3\n", "line 1"),
    ("", "no sections"),
])
def test_parse_errors_name_the_line(text, fragment):
    with pytest.raises(DncompressError, match=fragment.replace("[", r"\[")) as err:
        parse_cfg(text, "bad.cfg")
    assert "bad.cfg" in str(err.value)


def test_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "x.cfg"
    path.write_bytes(b"[net]\nwidth=416\n\xff\xfe=1\n")
    with pytest.raises(DncompressError, match=r"x.cfg:line 3: not UTF-8"):
        read_cfg(path)


def test_typed_getters_name_key_and_line():
    section = parse_cfg("[net]\n[convolutional]\nfilters=abc\n", "m.cfg")[1]
    with pytest.raises(DncompressError, match=r"m.cfg:line 3 \[convolutional\] filters: .*not an integer"):
        section.get_int("filters")
    assert parse_cfg("[net]\n[yolo]\nmask = 3, 4,5\n")[1].get_ints("mask") == [3, 4, 5]
