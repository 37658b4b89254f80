"""Dataset inputs: folder, list file, Darknet .data; label parsing and its errors."""
from pathlib import Path

import numpy as np
import pytest

from dncompress.data import label_path, load_dataset
from dncompress.errors import DncompressError

from helpers import ROOT

DOG = ROOT / "samples" / "dog.jpg"


def make_folder(tmp_path: Path, labels: dict[str, str]) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for stem, text in labels.items():
        (tmp_path / "images" / f"{stem}.jpg").write_bytes(DOG.read_bytes())
        if text is not None:
            (tmp_path / "labels" / f"{stem}.txt").write_text(text)
    return tmp_path


def test_label_path_rule():
    assert label_path(Path("/d/images/train/a.jpg")) == Path("/d/labels/train/a.txt")
    assert label_path(Path("/voc/JPEGImages/x.png")) == Path("/voc/labels/x.txt")
    assert label_path(Path("/images/d/images/a.jpg")) == Path("/images/d/labels/a.txt")
    assert label_path(Path("/plain/a.jpg")) == Path("/plain/a.txt")


def test_folder_with_missing_and_empty_labels(tmp_path):
    ds = load_dataset(make_folder(tmp_path, {"a": "16 0.5 0.5 0.2 0.3\n1 0.1 0.2 0.1 0.1\n", "b": "", "c": None}))
    assert [len(s.labels) for s in ds] == [2, 0, 0]
    np.testing.assert_allclose(ds.items[0].labels[0], [16, 0.5, 0.5, 0.2, 0.3])


def test_list_file_and_data_file(tmp_path, monkeypatch):
    make_folder(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n", "b": "3 0.5 0.5 0.1 0.1\n"})
    (tmp_path / "valid.txt").write_text("images/a.jpg\n\nimages/b.jpg\n")
    (tmp_path / "obj.names").write_text("x\ny\ncar\nmotorbike\n")
    (tmp_path / "obj.data").write_text("classes = 4\nvalid = valid.txt\nnames = obj.names\n")
    monkeypatch.chdir(ROOT)
    listed = load_dataset(tmp_path / "valid.txt")
    assert [s.labels[0, 0] for s in listed] == [2, 3]
    data = load_dataset(tmp_path / "obj.data")
    assert data.names == ["x", "y", "car", "motorbike"] and data.classes == 4 and len(data) == 2
    (tmp_path / "bad.data").write_text("classes = four\nvalid = valid.txt\n")
    with pytest.raises(DncompressError, match=r"bad.data:classes: classes=four is not a positive integer"):
        load_dataset(tmp_path / "bad.data")


@pytest.mark.parametrize("line", ["1 0.5 0.5 0.2", "a 0.5 0.5 0.2 0.2", "1.5 0.5 0.5 0.2 0.2",
                                  "-1 0.5 0.5 0.2 0.2", "1 nan 0.5 0.2 0.2", "1 0.5 0.5 -0.2 0.2"])
def test_malformed_label_names_file_and_line(tmp_path, line):
    make_folder(tmp_path, {"a": f"0 0.5 0.5 0.1 0.1\n{line}\n"})
    with pytest.raises(DncompressError, match=r"a.txt:line 2: malformed label"):
        load_dataset(tmp_path)


def test_missing_inputs(tmp_path):
    with pytest.raises(DncompressError, match="dataset not found"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "list.txt").write_text("missing.jpg\n")
    with pytest.raises(DncompressError, match=r"list.txt:line 1: listed image 'missing.jpg' not found"):
        load_dataset(tmp_path / "list.txt")
    (tmp_path / "x.data").write_text("classes=2\n")
    with pytest.raises(DncompressError, match="no `valid=`"):
        load_dataset(tmp_path / "x.data")


def test_images_in_sub_folders(tmp_path):
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    (tmp_path / "labels" / "val2017").mkdir(parents=True)
    (tmp_path / "images" / "val2017" / "a.jpg").write_bytes(DOG.read_bytes())
    (tmp_path / "labels" / "val2017" / "a.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DncompressError, match=r"only sub-folders \(val2017\); pass one of them"):
        load_dataset(tmp_path)
    [item] = load_dataset(tmp_path / "images" / "val2017")
    assert item.labels[:, 0].tolist() == [7]


def test_class_beyond_the_network_names_file_and_line(tmp_path):
    ds = load_dataset(make_folder(tmp_path, {"a": "0 0.5 0.5 0.1 0.1\n\n80 0.5 0.5 0.1 0.1\n"}))
    ds.check_classes(81)
    with pytest.raises(DncompressError, match=r"a.txt:line 3: class 80 but the network has 80 classes"):
        ds.check_classes(80)
