"""Sparsity: SIMD-group and unstructured weight pruning, the .dns format, the zero-skipping kernel,
OpenCV parity of written models, activation masks and statistics (brute force), CLI."""
import json
import math
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg, write_cfg
from dncompress.cli import main, open_network
from dncompress.engine.activation_mask import threshold_mask, winner_mask
from dncompress.engine.conv import conv2d
from dncompress.engine.sparse_conv import conv2d_group_sparse, group_sparse
from dncompress.errors import DncompressError
from dncompress.network import Network
from dncompress.sparse.activations import activation_stats, with_activation_masks
from dncompress.sparse.engine import SparseEngine
from dncompress.sparse.format import encode_weights, read_sparse, write_sparse
from dncompress.sparse.weights import SparsifyConfig, correct_bias, eligible_convs, sparsify_network

from helpers import CFGS, COCO_FEW, random_network
from helpers import blob, opencv_parity


def groups_of(weights, group):
    rows = weights.reshape(len(weights), -1)
    padded = np.zeros((len(rows), -(-rows.shape[1] // group) * group), np.float32)
    padded[:, :rows.shape[1]] = rows
    return padded.reshape(len(rows), -1, group)


@pytest.mark.parametrize("group", [4, 8])
def test_simd_groups_all_zero_or_untouched_ratio_per_layer(tiny_net, group):
    sparse, keep = sparsify_network(tiny_net, SparsifyConfig("simd", 0.5, group, skip_first_last=True))
    assert sorted(keep) == [2, 4, 6, 8, 10, 12, 13, 14, 18, 21]
    for old, new in zip(tiny_net.layers, sparse.layers):
        if old.type != "convolutional":
            continue
        before, after = groups_of(old.params["weights"], group), groups_of(new.params["weights"], group)
        zero = ~after.any(axis=2)
        assert np.array_equal(after[~zero], before[~zero])
        if old.index in keep:
            assert np.array_equal(~zero, keep[old.index])
            assert zero.sum() == round(0.5 * zero.size)
            norms = np.linalg.norm(groups_of(old.folded()[0], group).astype(np.float64), axis=2)
            assert norms[zero].max() <= norms[~zero].min()
        else:
            assert np.array_equal(old.params["weights"], new.params["weights"])
    assert all(np.array_equal(a.params[k], b.params[k]) for a, b in zip(tiny_net.layers, sparse.layers)
               for k in a.params if k != "weights")


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_unstructured_ratio(tiny_net, scope):
    sparse, keep = sparsify_network(tiny_net, SparsifyConfig("unstructured", 0.3, scope=scope))
    zeros = {layer.index: int((layer.params["weights"] == 0).sum()) for layer in eligible_convs(sparse, False)}
    sizes = {layer.index: layer.params["weights"].size for layer in eligible_convs(sparse, False)}
    if scope == "layer":
        assert all(zeros[i] == round(0.3 * sizes[i]) for i in zeros)
    else:
        assert sum(zeros.values()) == round(0.3 * sum(sizes.values()))
        assert len({round(zeros[i] / sizes[i], 2) for i in zeros}) > 3


def test_sparse_format_round_trip_bit_exact(tmp_path):
    net = random_network("yolov4-tiny", seed=3, width=128, height=128)
    sparse, _ = sparsify_network(net, SparsifyConfig("simd", 0.6, 8, skip_first_last=True))
    w = sparse.layers[2].params["weights"].copy()
    w.reshape(-1)[np.flatnonzero(w)[:5]] = -0.0
    sparse.layers[2].set_params(weights=w)
    sparse.header.seen = 12345
    size = write_sparse(sparse, tmp_path / "m.dns", group=8)
    back = read_sparse(tmp_path / "m.dns")
    assert write_cfg(back.sections) == write_cfg(sparse.sections) and back.header == sparse.header
    for a, b in zip(sparse.weight_tensors(), back.weight_tensors()):
        assert a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert size < 0.6 * 4 * sparse.param_count()
    (tmp_path / "cut.dns").write_bytes((tmp_path / "m.dns").read_bytes()[:-7])
    with pytest.raises(DncompressError, match="truncated"):
        read_sparse(tmp_path / "cut.dns")


@pytest.mark.parametrize("density, expected", [(1.0, 0), (0.5, 1), (0.02, 2)])
def test_writer_picks_the_smallest_encoding(density, expected):
    rng = np.random.default_rng(0)
    w = np.where(rng.random((64, 32, 3, 3)) < density, rng.normal(size=(64, 32, 3, 3)), 0).astype(np.float32)
    chunks = encode_weights(w, 1)
    assert chunks[0][0] == expected


@pytest.mark.parametrize("group", [1, 4, 8])
@pytest.mark.parametrize("kernel, stride, pad", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 1, 2)])
def test_group_sparse_conv_equals_dense(group, kernel, stride, pad):
    rng = np.random.default_rng(group * 10 + kernel)
    x = rng.normal(size=(2, 12, 11, 9)).astype(np.float32)
    w = rng.normal(size=(10, 12, kernel, kernel)).astype(np.float32)
    blocks = groups_of(w, group)
    blocks[rng.random(blocks.shape[:2]) < 0.6] = 0
    w = blocks.reshape(10, -1)[:, :12 * kernel * kernel].reshape(w.shape).copy()
    w[3] = 0
    bias = rng.normal(size=10).astype(np.float32)
    sparse = group_sparse(w, group)
    assert sparse.nonzero_groups == int(groups_of(w, group).any(axis=2).sum())
    reference = conv2d(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64), stride, pad)
    np.testing.assert_allclose(conv2d_group_sparse(x, sparse, bias, stride, pad), reference, atol=2e-5)


@pytest.mark.parametrize("pattern, group", [("simd", 8), ("unstructured", 1)])
def test_sparsified_weights_load_in_opencv_and_match_engine(tiny_net, tmp_path, pattern, group):
    sparse, _ = sparsify_network(tiny_net, SparsifyConfig(pattern, 0.5, group, skip_first_last=True))
    assert opencv_parity(sparse, tmp_path) <= 2e-4


def test_threshold_and_winner_masks_brute_force():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
    a[0, 0, 0, :3] = a[0, 0, 1, :3] = 0.25
    masked = threshold_mask(a.copy(), 0.3)
    assert np.array_equal(masked, np.where(np.abs(a) < np.float32(0.3), 0, a))
    for rate in (0.01, 0.1, 0.37, 0.5, 1.0):
        masked = winner_mask(a.copy(), rate)
        for image, out in zip(a, masked):
            flat = np.abs(image).ravel()
            winners = max(1, math.ceil(rate * flat.size))
            smallest = sorted(flat, reverse=True)[winners - 1]
            assert np.array_equal(out, np.where(np.abs(image) >= smallest, image, 0))
            assert np.count_nonzero(out) >= winners
    ties = np.full((1, 2, 2, 2), 0.5, np.float32)
    assert np.array_equal(winner_mask(ties.copy(), 0.25), ties)


def test_mask_keys_apply_in_the_engine_forward_except_heads():
    net = random_network("yolov3-tiny", seed=2, width=96, height=96)
    masked = with_activation_masks(net, 0.2, 0.4)
    keyed = [layer.index for layer in masked.layers if "winner_rate" in layer.section.options]
    assert 15 not in keyed and 22 not in keyed and len(keyed) == 11
    assert "activation_threshold=0.2" in write_cfg(masked.sections)
    x = np.random.default_rng(0).random((2, 3, 96, 96), dtype=np.float32)
    per_image = []
    for image in x:  # Network.forward runs a batch image by image (Winograd's GEMM rounds by batch width)
        outputs = {}
        for layer in net.layers:
            y = layer.forward([outputs[i] if i >= 0 else image[None] for i in layer.inputs])
            if layer.index in keyed:
                y = winner_mask(threshold_mask(y, 0.2), 0.4)
            outputs[layer.index] = y
        per_image.append(outputs)
    for head, ours in zip(net.heads, masked.forward(x)):
        np.testing.assert_array_equal(np.concatenate([o[head.index] for o in per_image]), ours)
    with pytest.raises(DncompressError, match="winner_rate=0.0 must be in"):
        Network(parse_cfg(write_cfg(masked.sections).replace("winner_rate=0.4", "winner_rate=0", 1), "m.cfg"))


def test_activation_stats_brute_force():
    net = random_network("yolov3-tiny", seed=5, width=64, height=64)
    sparse, _ = sparsify_network(net, SparsifyConfig("simd", 0.5, 4))
    masked = with_activation_masks(sparse, 0.3)
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    stats = activation_stats(masked, x, batch=2)
    inputs, outputs = {}, {}
    for layer in masked.layers:
        xs = [outputs[i] if i >= 0 else x for i in layer.inputs]
        inputs[layer.index], outputs[layer.index] = xs[0], layer.forward(xs)
    for index, s in stats.items():
        layer, xin, y = masked.layers[index], inputs[index], outputs[index]
        conv = lambda a, w: float(conv2d(a.astype(np.float64), w.astype(np.float64), None, layer.stride,
                                         layer.pad).sum())
        ones = np.ones_like(layer.params["weights"])
        assert s.zeros == (y == 0).sum() and s.outputs == y.size and s.input_zeros == (xin == 0).sum()
        assert s.macs == conv(np.ones_like(xin), ones) + s.padding_macs
        assert s.nonzero_input_macs == conv(xin != 0, ones)
        assert s.effectual_macs == conv(xin != 0, layer.params["weights"] != 0)
    assert stats[10].effectual_macs < 0.5 * stats[10].macs


def small_dataset(tmp_path, count=2):
    folder = tmp_path / "ds"
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for image in sorted((COCO_FEW / "images").glob("*.jpg"))[:count]:
        shutil.copy(image, folder / "images")
        shutil.copy(COCO_FEW / "labels" / f"{image.stem}.txt", folder / "labels")
    return folder


def test_sparsify_cli_outputs_sizes_and_force(tmp_path, tiny_weights):
    runner = CliRunner()
    prefix = tmp_path / "s"
    args = ["sparsify", "yolov3-tiny", str(tiny_weights), "--pattern", "simd", "--group", "8", "--ratio", "0.5",
            "--skip-first-last", "-o", str(prefix)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "nonzero weights 8,845,488 -> " in result.stdout and "size: dense" in result.stdout
    dense = Network.from_cfg(f"{prefix}.cfg", f"{prefix}.weights")
    sparse = open_network(f"{prefix}.dns", None)
    for a, b in zip(dense.weight_tensors(), sparse.weight_tensors()):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "s.dns").stat().st_size < 0.6 * (tmp_path / "s.weights").stat().st_size
    x = blob()
    for a, b in zip(dense.forward(x), sparse.forward(x)):
        np.testing.assert_array_equal(a, b)
    stats = runner.invoke(main, ["stats", f"{prefix}.dns", "--json"])
    zeros = json.loads(stats.stdout)["weight_sparsity"]
    assert stats.exit_code == 0 and zeros["conv_weights"] == 8_845_488
    assert zeros["nonzero_weights"] == sum(int(np.count_nonzero(l.params["weights"])) for l in dense.layers if l.params)
    assert zeros["skipped_macs"] > 0.45 * json.loads(stats.stdout)["macs"]
    again = runner.invoke(main, args)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert runner.invoke(main, args + ["--force"]).exit_code == 0
    for bad, message in ((["--pattern", "simd", "--ratio", "1.5"], "must be in [0, 1)"),
                         (["--pattern", "simd"], "--pattern needs --ratio"),
                         (["--ratio", "0.5"], "--ratio needs --pattern"),
                         (["--activations"], "--activations needs --data"),
                         (["--pattern", "simd", "--ratio", "0.5", "--bias-correction"], "--bias-correction needs"),
                         ([], "nothing to do")):
        result = runner.invoke(main, ["sparsify", *bad, "-o", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert result.stderr.count("\n") == 1 and not list(tmp_path.glob("x*"))
    inputs = runner.invoke(main, ["sparsify", f"{prefix}.cfg", f"{prefix}.weights", "--winner-rate", "0.5",
                                  "-o", str(prefix)])
    assert inputs.exit_code == 2 and "overwrite an input" in inputs.stderr


def test_sparsify_cli_activation_masks_report_and_map(tmp_path, tiny_weights):
    data = small_dataset(tmp_path)
    result = CliRunner().invoke(main, ["sparsify", "--activation-threshold", "0.05", "--winner-rate", "0.6",
                                       "--activations", "--data", str(data), "--images", "1",
                                       "-o", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "zero activations 0.0% -> " in result.stdout and "mAP@0.5 " in result.stdout
    assert sorted(p.name for p in tmp_path.glob("m.*")) == ["m.cfg", "m.weights"]
    masked = Network.from_cfg(tmp_path / "m.cfg", tmp_path / "m.weights")
    assert masked.layers[14].winner_rate == 0.6 and masked.layers[15].winner_rate == 1.0
    # OpenCV ignores the mask keys: it runs the unmasked model
    cv_net = cv2.dnn.readNetFromDarknet(str(tmp_path / "m.cfg"), str(tmp_path / "m.weights"))
    cv_net.setInput(blob())
    theirs = cv_net.forward(["conv_15", "conv_22"])
    plain = Network.from_cfg(CFGS / "yolov3-tiny.cfg", tiny_weights)
    assert max(float(np.abs(a - b).max()) for a, b in zip(plain.forward(blob(), keep={15, 22}), theirs)) <= 2e-4
    measure = CliRunner().invoke(main, ["sparsify", "--activations", "--data", str(data), "--images", "1"])
    assert measure.exit_code == 0 and "layer" in measure.stdout and "mAP" not in measure.stdout


def test_sparse_engine_forward_equals_dense_engine():
    net = random_network("yolov3-tiny", seed=7, width=96, height=96)
    sparse, _ = sparsify_network(net, SparsifyConfig("simd", 0.7, 4))
    masked = with_activation_masks(sparse, 0.05)
    x = np.random.default_rng(1).random((2, 3, 96, 96), dtype=np.float32)
    engine = SparseEngine(masked, 4)
    assert len(engine.kernels) == 13
    for a, b in zip(masked.forward(x), engine.forward(x)):
        np.testing.assert_allclose(a, b, atol=1e-3 * float(np.abs(a).max()))


def test_bias_correction_restores_each_conv_mean_output():
    net = random_network("yolov3-tiny", seed=8, width=64, height=64)
    sparse, keep = sparsify_network(net, SparsifyConfig("simd", 0.5, 4))
    calib = np.random.default_rng(2).random((3, 3, 64, 64), dtype=np.float32)
    assert correct_bias(net, sparse, calib) == sorted(keep)
    inputs = {}

    def record(layer, xs):
        inputs[layer.index] = xs[0]
        return layer.forward(xs)
    net.forward(calib, run=record)
    for index in keep:
        old, new = net.layers[index], sparse.layers[index]
        mean = lambda layer: conv2d(inputs[index], *layer.folded(), layer.stride, layer.pad).mean(axis=(0, 2, 3))
        np.testing.assert_allclose(mean(new), mean(old), atol=1e-4 * float(np.abs(mean(old)).max()) + 1e-5)
