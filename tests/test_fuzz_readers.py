"""Property tests for the readers test_fuzz.py does not cover: structured label lines, image list files,
and the .dnq (packed) and .dns (sparse) model files. Each may only succeed with valid content or raise a
DncompressError naming the file."""
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from dncompress.data import load_dataset, parse_labels
from dncompress.errors import DncompressError
from dncompress.quant.apply import QuantConfig, quantize_network
from dncompress.quant.packed import read_packed, write_packed
from dncompress.sparse.format import read_sparse, write_sparse
from dncompress.sparse.weights import SparsifyConfig, sparsify_network

from helpers import ROOT, small_network

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKENS = st.one_of(st.integers(-3, 100).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["", "x", "0x10", "1e3", "-0", "٣", "1,5", "#", "\t", "0.5\x00"]))


def refused_or(read, path: Path):
    try:
        return read(path)
    except DncompressError as err:
        assert str(path) in str(err), err
        return None


@FAST
@given(st.lists(st.lists(TOKENS, max_size=7).map(" ".join), max_size=6))
def test_label_lines_parse_or_name_the_file(lines):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.txt"
        path.write_text("\n".join(lines), encoding="utf-8")
        labels = refused_or(parse_labels, path)
    if labels is not None:
        assert labels.shape[1] == 5 and np.isfinite(labels).all()
        assert (labels[:, 0] >= 0).all() and (labels[:, 0] == np.round(labels[:, 0])).all()
        assert (labels[:, 3:] >= 0).all()


DOG = ROOT / "samples" / "dog.jpg"
LIST_ENTRIES = st.one_of(st.just(str(DOG)), st.just("dog.jpg"), st.just("missing.jpg"), st.just(""),
                         st.just("   "), st.just("folder"), st.text(max_size=12))


@FAST
@given(st.lists(LIST_ENTRIES, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_list_files_load_or_name_the_file(entries, newline):
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "dog.jpg").write_bytes(DOG.read_bytes())
        (folder / "folder").mkdir()
        path = folder / "list.txt"
        path.write_bytes(newline.join(entries).encode("utf-8", "surrogatepass"))
        try:
            dataset = load_dataset(path)
        except DncompressError as err:
            assert str(folder) in str(err), err   # the list, or the image/label it names
            return
        assert len(dataset) >= 1 and all(sample.image.is_file() for sample in dataset)


def model_bytes(write) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m"
        write(path)
        return path.read_bytes()


NET = small_network(0)
DNQ = model_bytes(lambda p: write_packed(quantize_network(NET, QuantConfig(4, None), None), p))
DNS = model_bytes(lambda p: write_sparse(sparsify_network(NET, SparsifyConfig(ratio=0.5))[0], p))


@st.composite
def mutated(draw, data: bytes) -> bytes:
    data = bytearray(data)
    edit = draw(st.sampled_from(["cut", "extend", "overwrite", "random"]))
    if edit == "cut":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if edit == "extend":
        return bytes(data) + draw(st.binary(min_size=1, max_size=32))
    if edit == "random":
        return draw(st.binary(max_size=256))
    start = draw(st.integers(0, len(data) - 1))
    patch = draw(st.binary(min_size=1, max_size=32))
    data[start:start + len(patch)] = patch
    return bytes(data[:len(data)])


def read_model(data: bytes, suffix: str, read):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"m{suffix}"
        path.write_bytes(data)
        net = refused_or(read, path)
    if net is not None:
        assert all(np.isfinite(t).all() for t in net.weight_tensors())
        net.check_params()


@FAST
@given(mutated(DNQ))
def test_mutated_packed_models_load_or_name_the_file(data):
    read_model(data, ".dnq", read_packed)


@FAST
@given(mutated(DNS))
def test_mutated_sparse_models_load_or_name_the_file(data):
    read_model(data, ".dns", read_sparse)


def test_the_unmutated_models_load():
    for data, suffix, read in ((DNQ, ".dnq", read_packed), (DNS, ".dns", read_sparse)):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"m{suffix}"
            path.write_bytes(data)
            assert len(read(path).layers) == len(NET.layers)
