"""Class specialization: keep a subset of a detector's classes. Each [yolo]/[region] head gets `classes=`
of the subset and the conv feeding it keeps, per anchor, its box (4), objectness (1) and the kept classes'
rows (sliced from the weights), so the head conv is smaller and the outputs of the kept rows are exactly
the original's. Class k of the specialized model is original class ids[k]; the names file written beside
the cfg says which (and `eval` maps a dataset's labels to it by name)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import Dataset, Sample
from ..errors import DncompressError
from ..network import Network


def parse_class_list(text: str, names: list[str]) -> list[int]:
    """'person,car' or a file of names (one a line, or comma separated) -> original class ids, in the
    order given. Unknown or repeated names raise."""
    path = Path(text)
    if path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DncompressError(f"cannot read the class list: {err}", text) from None
    wanted = [n.strip() for n in text.replace("\n", ",").split(",") if n.strip()]
    if not wanted:
        raise DncompressError("--classes names no class")
    index = {name: i for i, name in enumerate(names)}
    unknown = [n for n in wanted if n not in index]
    if unknown:
        raise DncompressError(f"unknown class {unknown[0]!r}: not among the model's {len(names)} names "
                              f"({', '.join(names[:5])}, ...)")
    repeated = sorted({n for n in wanted if wanted.count(n) > 1})
    if repeated:
        raise DncompressError(f"class {repeated[0]!r} is named twice in --classes")
    return [index[n] for n in wanted]


def head_rows(anchors: int, classes: int, class_ids: list[int]) -> np.ndarray:
    """Output channels of a head conv to keep: per anchor its 4 box rows, objectness and the kept classes."""
    per_anchor = np.concatenate([np.arange(5), 5 + np.asarray(class_ids, int)])
    return (np.arange(anchors)[:, None] * (5 + classes) + per_anchor[None, :]).ravel()


def specialize_classes(net: Network, class_ids: list[int]) -> Network:
    """A new Network detecting only original classes `class_ids` (in that order). The head convs' rows
    are sliced; every other layer is copied unchanged. [region] heads with softmax renormalize over the
    kept classes (their raw outputs still match)."""
    if not net.heads:
        raise DncompressError("the network has no [yolo] or [region] head", net.file)
    classes = net.heads[0].classes
    if any(h.classes != classes for h in net.heads):
        raise DncompressError("the heads differ in classes=; cannot specialize", net.file)
    if not class_ids or any(not 0 <= c < classes for c in class_ids) or len(set(class_ids)) != len(class_ids):
        raise DncompressError(f"class ids {class_ids} must be distinct and within 0..{classes - 1}", net.file)
    sections = [s.copy() for s in net.sections]
    rows: dict[int, np.ndarray] = {}
    for head in net.heads:
        conv_index = head.inputs[0]
        conv = net.layers[conv_index]
        readers = [layer.index for layer in net.layers if conv_index in layer.inputs]
        if conv.type != "convolutional" or readers != [head.index]:
            raise DncompressError(f"head {head.index} [{head.type}] is not fed by a [convolutional] of its own; "
                                  "cannot slice its class rows", net.file, conv.section.where())
        anchors = len(head.mask) if head.type == "yolo" else head.num
        rows[conv_index] = head_rows(anchors, classes, class_ids)
        sections[conv_index + 1].options["filters"] = str(len(rows[conv_index]))
        sections[head.index + 1].options["classes"] = str(len(class_ids))
    out = net.derive(sections)
    for source, layer in zip(net.layers, out.layers):
        keep = rows.get(source.index)
        layer.set_params(**{name: (value[keep] if keep is not None else value).copy()
                            for name, value in source.params.items()})
    return out


def remap_dataset(dataset: Dataset, dataset_names: list[str], model_names: list[str]) -> Dataset:
    """Labels renumbered from the dataset's class names to the model's (matched by name); labels of
    classes the model does not have are dropped (evaluating a specialized model on the original's data)."""
    position = {name: i for i, name in enumerate(model_names)}
    table = np.array([position.get(name, -1) for name in dataset_names])
    items = []
    for sample in dataset.items:
        labels = sample.labels
        ids = table[labels[:, 0].astype(int)] if len(labels) else np.zeros(0, int)
        kept = labels[ids >= 0].copy()
        kept[:, 0] = ids[ids >= 0]
        items.append(Sample(sample.image, kept))
    return Dataset(items, list(model_names), dataset.source, None)


def names_beside(cfg_path: str | Path | None) -> Path | None:
    """The `<cfg stem>.names` a specialization wrote beside its cfg, if there is one."""
    if cfg_path is None:
        return None
    path = Path(cfg_path).with_suffix(".names")
    return path if path.is_file() else None
