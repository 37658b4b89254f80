"""Datasets in YOLO txt format: a folder (images/ + labels/), a list file of image paths, or a Darknet
.data file. Labels are `class cx cy w h`, normalized to the image size."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DncompressError

FLOAT32_MAX = float(np.finfo(np.float32).max)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class Sample:
    """One image and its boxes: labels (M, 5) float32 rows [class, cx, cy, w, h], normalized;
    difficult (D, 5) the same for VOC `difficult` objects (ignore regions in eval, from labels_difficult/)."""

    image: Path
    labels: np.ndarray
    difficult: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 5), np.float32))


@dataclasses.dataclass
class Dataset:
    items: list[Sample]
    names: list[str] | None = None
    source: str = ""
    classes: int | None = None  # `classes=` of a .data file

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.items)

    @property
    def num_boxes(self) -> int:
        return sum(len(s.labels) for s in self.items)

    @property
    def num_difficult(self) -> int:
        return sum(len(s.difficult) for s in self.items)

    def require_labels(self, alternative: str) -> None:
        """Raise when no image has a labelled object (a missing labels/ folder reads as all background)."""
        if not self.num_boxes:
            example = label_path(self.items[0].image) if self.items and self.items[0].image else "labels/*.txt"
            raise DncompressError("no image has a labelled object (labels are looked for by the images->labels "
                                  f"rule, e.g. {example}); {alternative}", self.source)

    def check_classes(self, num_classes: int) -> None:
        """Raise naming the label file and line of the first class id >= num_classes."""
        for sample in self.items:
            for rows, path_of in ((sample.labels, label_path), (sample.difficult, difficult_label_path)):
                classes = rows[:, 0]
                if len(classes) and classes.max() >= num_classes:
                    bad = int(classes[classes >= num_classes][0])
                    path = path_of(sample.image) if sample.image else None
                    raise DncompressError(f"class {bad} but the network has {num_classes} classes "
                                          f"(0..{num_classes - 1})", path, _line_of_class(path, bad))


def _line_of_class(path: Path | None, class_id: int) -> str | None:
    """`line N` of the first label row of class_id in a label file, for error messages."""
    if path is None or not path.is_file():
        return None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if fields and float(fields[0]) == class_id:
            return f"line {number}"
    return None


def label_path(image: Path) -> Path:
    """Darknet's rule: the last `images` (or `JPEGImages`) folder becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in ("images", "JPEGImages"):
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def difficult_label_path(image: Path) -> Path:
    """AlexeyAB Darknet's `difficult=` convention: `labels_difficult/` beside `labels/` (same file name)."""
    parts = list(label_path(image).parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "labels":
            parts[i] = "labels_difficult"
            return Path(*parts)
    return Path(*parts[:-1], "labels_difficult", parts[-1])


def parse_labels(path: Path) -> np.ndarray:
    """(M, 5) float32 from a YOLO txt file; a missing or empty file means no objects."""
    if path.is_dir():
        raise DncompressError("label path is a folder, not a label file", str(path))
    if not path.is_file():
        return np.zeros((0, 5), np.float32)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DncompressError(f"cannot read label file: {err}", str(path)) from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        # finite also as float32 (1e39 is a finite double but inf once stored)
        valid = (len(values) == 5 and all(math.isfinite(v) and abs(v) <= FLOAT32_MAX for v in values) and values[0] >= 0
                 and values[0].is_integer() and values[3] >= 0 and values[4] >= 0)
        if not valid:
            raise DncompressError(f"malformed label '{line.strip()}'; expected `class cx cy w h` with an "
                                  "integer class >= 0 and finite, non-negative sizes", str(path), f"line {number}")
        rows.append(values)
    return np.array(rows, np.float32).reshape(-1, 5)


def _images_in(folder: Path) -> list[Path]:
    """Images directly in `folder`; a folder holding only sub-folders (images/train2017, ...) names them."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not images and subfolders:
        raise DncompressError(f"no images here, only sub-folders ({', '.join(subfolders)}); pass one of them, "
                              f"e.g. {folder / subfolders[0]}", str(folder))
    return images


def _from_list(path: Path) -> list[Path]:
    """Image paths listed one per line; relative paths are tried against the cwd, then the list's folder."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DncompressError(f"cannot read image list: {err}", str(path)) from None
    images = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry:
            continue
        candidate = Path(entry)
        if not candidate.is_absolute() and not candidate.exists():
            candidate = path.parent / entry
        if not candidate.is_file():
            raise DncompressError(f"listed image '{entry}' not found", str(path), f"line {number}")
        images.append(candidate)
    return images


def _read_data_file(path: Path) -> tuple[Path, list[str] | None, int | None]:
    """(list of validation images, class names, number of classes) from a Darknet .data file."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DncompressError(f"cannot read .data file: {err}", str(path)) from None
    keys = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and not key.strip().startswith("#"):
            keys[key.strip()] = value.strip()
    valid = keys.get("valid") or keys.get("val")
    if not valid:
        raise DncompressError("no `valid=` entry (the list of evaluation images)", str(path))

    def locate(entry: str) -> Path:
        candidate = Path(entry)
        return candidate if candidate.is_absolute() or candidate.exists() else path.parent / entry

    names = None
    if "names" in keys:
        names_path = locate(keys["names"])
        try:
            names = [n.strip() for n in names_path.read_text().splitlines() if n.strip()]
        except (OSError, UnicodeDecodeError) as err:
            raise DncompressError(f"cannot read names file {names_path}: {err}", str(path)) from None
    classes = keys.get("classes")
    if classes is not None and not (classes.isdigit() and int(classes) > 0):
        raise DncompressError(f"classes={classes} is not a positive integer", str(path), "classes")
    return locate(valid), names, None if classes is None else int(classes)


def load_dataset(path: str | Path) -> Dataset:
    """A folder (with images/ or holding images), a .txt list of image paths, or a Darknet .data file."""
    path = Path(path)
    names, classes = None, None
    if path.is_dir():
        images = _images_in(path / "images" if (path / "images").is_dir() else path)
    elif path.suffix == ".data":
        list_path, names, classes = _read_data_file(path)
        images = _from_list(list_path)
    elif path.is_file():
        images = _from_list(path)
    else:
        raise DncompressError("dataset not found; give a folder with images/ and labels/, a list of image "
                              "paths, or a Darknet .data file", str(path))
    if not images:
        raise DncompressError("dataset holds no images", str(path))
    return Dataset([Sample(img, parse_labels(label_path(img)), parse_labels(difficult_label_path(img)))
                    for img in images], names, str(path), classes)


def calibration_batch(path: str | Path, count: int, net_w: int, net_h: int, use_letterbox: bool = True,
                      channels: int = 3) -> np.ndarray:
    """The first `count` images of a folder or dataset, preprocessed: (N, channels, net_h, net_w) float32
    (channels=1: grey as Darknet reads images for such networks)."""
    from .detect import load_image, preprocess
    samples = load_dataset(path).items[:count]
    return np.concatenate([preprocess(load_image(s.image), net_w, net_h, use_letterbox, channels)
                           for s in samples])
