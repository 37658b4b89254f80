"""One-shot structured pruning (prune/oneshot.py): OBS group removal and the ridge refit against brute-force
numpy, the cost model against stats, the allocation floors, and pruned networks loading in OpenCV."""
import itertools

import numpy as np
import pytest

from dncompress.network import Network
from dncompress.prune.groups import channel_groups
from dncompress.prune.oneshot import (ObsState, allocate, consumers_of, cost_model, fit, greedy_removal,
                                      prune_oneshot, regularized_inverse)
from dncompress.stats import layer_costs, summary

from helpers import CFGS, random_network, small_network
from helpers import opencv_parity
from helpers import run, small_input_cfg


def problem(seed, positions=5, s=3, outputs=4, rows=200):
    """A random least-squares layer: inputs X (rows, K) with a ones column last, folded weights W."""
    rng = np.random.default_rng(seed)
    k = positions * s
    x = rng.normal(size=(rows, k)) @ rng.normal(size=(k, k)) * 0.5 + rng.normal(size=k)
    x = np.concatenate([x, np.ones((rows, 1))], axis=1)
    w = np.concatenate([rng.normal(size=(outputs, k)), np.zeros((outputs, 1))], axis=1)
    columns = np.arange(k).reshape(positions, s)
    return x, w, columns


def refit_error(x, w, drop_cols, ridge_strength=0.0):
    """Brute force: least squares of the kept columns to the full layer's output X W^T; the error added."""
    y = x @ w.T
    kept = np.setdiff1d(np.arange(x.shape[1]), drop_cols)
    a = x[:, kept]
    if ridge_strength:
        pen = np.sqrt(ridge_strength) * np.eye(len(kept))
        pen[-1, -1] = 0
        a = np.concatenate([a, pen])
        y = np.concatenate([y, np.zeros((len(kept), y.shape[1]))])
    sol = np.linalg.lstsq(a, y, rcond=None)[0]
    return float(np.sum((x[:, kept] @ sol - x @ w.T) ** 2))


@pytest.mark.parametrize("s", [1, 3])
def test_obs_costs_and_greedy_match_brute_force(s):
    x, w, columns = problem(0, s=s)
    gram = x.T @ x
    state = ObsState(regularized_inverse(gram, 0.0), w.copy(), columns, 1.0)
    costs = state.costs(np.arange(len(columns)))
    brute = [refit_error(x, w, columns[p]) for p in range(len(columns))]
    np.testing.assert_allclose(costs, brute, rtol=1e-6, atol=1e-8)
    order, curve = greedy_removal([ObsState(regularized_inverse(gram, 0.0), w.copy(), columns, 1.0)], 3, batch=0)
    # the curve is the exact refit error of the removed set, and each step was the best single addition
    for n in range(3):
        np.testing.assert_allclose(curve[n], refit_error(x, w, columns[order[:n + 1]].ravel()), rtol=1e-6)
        options = [p for p in range(len(columns)) if p not in order[:n]]
        best = min(options, key=lambda p: refit_error(x, w, columns[order[:n] + [p]].ravel()))
        assert best == order[n]


def test_greedy_removal_is_near_the_best_subset():
    x, w, columns = problem(3, positions=6, s=2)
    gram = x.T @ x
    order, curve = greedy_removal([ObsState(regularized_inverse(gram, 0.0), w.copy(), columns, 1.0)], 3, batch=0)
    best = min(refit_error(x, w, columns[list(c)].ravel()) for c in itertools.combinations(range(6), 3))
    worst = max(refit_error(x, w, columns[list(c)].ravel()) for c in itertools.combinations(range(6), 3))
    assert curve[-1] <= best + 0.25 * (worst - best)


def test_fit_matches_ridge_lstsq():
    x, w, columns = problem(1)
    y = x @ w.T + np.random.default_rng(1).normal(size=(len(x), len(w)))
    kept = np.append(columns[[0, 2, 4]].ravel(), x.shape[1] - 1)
    a = x[:, kept]
    prior = np.zeros((len(w), len(kept)))
    ridge = 0.05
    strength = ridge * np.mean(np.diag(a.T @ a)[:-1])
    ours = fit(a.T @ a, y.T @ a, prior, ridge)
    pen = np.sqrt(strength) * np.eye(len(kept))
    pen[-1, -1] = 0
    ref = np.linalg.lstsq(np.concatenate([a, pen]), np.concatenate([y, np.zeros((len(kept), len(w)))]),
                          rcond=None)[0].T
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["bflops", "params"])
def test_cost_model_matches_stats_of_a_sliced_network(kind):
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    groups = channel_groups(net)
    model = cost_model(net, groups, kind)
    rng = np.random.default_rng(0)
    keep = np.array([rng.integers(1, len(g.positions) + 1) if g.prunable else len(g.positions) for g in groups],
                    float)
    sections = net.sections
    for g, group in zip(keep, groups):
        for conv in group.convs:
            sections[conv + 1].options["filters"] = str(int(g) * group.multiplicity(conv))
    sliced = Network(sections)
    conv_bflops = sum(2 * c.macs for c in layer_costs(sliced)) / 1e9
    if kind == "bflops":
        assert model.cost(keep) * 2 / 1e9 == pytest.approx(conv_bflops, rel=1e-9)
    else:
        weights = sum(np.prod(layer.param_shapes()["weights"]) for layer in sliced.layers
                      if layer.type == "convolutional")
        assert model.cost(keep) == pytest.approx(weights, rel=1e-9)


def test_allocation_respects_floors_and_budget():
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    groups = channel_groups(net)
    model = cost_model(net, groups, "channels")
    prunable = [g for g, group in enumerate(groups) if group.prunable]
    # one group's errors are free: the allocation takes from it first, down to its floor only
    curves = {g: list(np.cumsum(np.full(len(groups[g].positions), 1.0 if groups[g].convs != [12] else 0.0)))
              for g in prunable}
    floors = {g: max(1, len(groups[g].positions) // 10) for g in prunable}
    full = model.cost(np.array([len(g.positions) for g in groups], float))
    alloc = allocate(curves, groups, model, 0.5 * full, floors)
    g12 = next(g for g in prunable if groups[g].convs == [12])
    assert alloc[g12] == floors[g12]
    keep = np.array([alloc.get(g, len(group.positions)) for g, group in enumerate(groups)], float)
    assert model.cost(keep) <= 0.5 * full
    assert all(alloc[g] >= floors[g] for g in prunable)


def test_consumers_follow_routes_and_pooling():
    net = Network.from_cfg(CFGS / "yolov3-tiny.cfg")
    groups = {tuple(g.convs): g for g in channel_groups(net)}
    assert [c.conv for c in consumers_of(net, groups[(8,)])] == [10, 21]
    c21 = consumers_of(net, groups[(8,)])[1]
    # route 20 = [upsample(conv 18) 128 channels, conv 8 256 channels]; 3x3 columns
    assert c21.columns.shape == (256, 9) and c21.columns[0, 0] == 128 * 9
    assert [c.conv for c in consumers_of(net, groups[(13,)])] == [14, 18]


@pytest.mark.parametrize("name", ["small", pytest.param("yolov3-tiny", marks=pytest.mark.slow),
                                  pytest.param("yolov4-tiny", marks=pytest.mark.slow)])
def test_oneshot_random_network_meets_target_and_loads_in_opencv(name, tmp_path):
    net = small_network(2) if name == "small" else random_network(name, seed=2, width=96, height=96)
    images = np.random.default_rng(0).random((4, *net.input_shape), dtype=np.float32)
    target = 0.6 * summary(net)["bflops"]
    result = prune_oneshot(net, images, target, "bflops", max_rows=2000)
    pruned = result.network
    assert summary(pruned)["bflops"] <= target * 1.02
    for group in channel_groups(net):
        if group.prunable:
            kept = pruned.layers[group.convs[0]].filters // group.multiplicity(group.convs[0])
            assert kept >= max(1, 0.1 * len(group.positions))
    assert opencv_parity(pruned, tmp_path) <= 2e-4


@pytest.mark.slow
def test_oneshot_refit_beats_plain_slicing(tiny_net):
    """On real weights and a sample image pair, the refit output is closer to the original's than the
    same widths by |gamma| with compensation."""
    from dncompress.data import calibration_batch
    from dncompress.prune.apply import prune_network
    from helpers import ROOT
    images = calibration_batch(ROOT / "samples", 4, 416, 416)
    from dncompress.prune.workflow import channel_target
    result = prune_oneshot(tiny_net, images[:3], channel_target(tiny_net, 0.3), "channels", max_rows=4000)
    keep = set()
    for group in channel_groups(tiny_net):
        if not group.prunable:
            keep.update(ch for pos in group.positions for ch in pos)
            continue
        n = result.network.layers[group.convs[0]].filters // group.multiplicity(group.convs[0])
        order = np.argsort(-np.abs(tiny_net.layers[group.convs[0]].params["scales"][:len(group.positions)]))
        for p in order[:n]:
            keep.update(group.positions[p])
    slim = prune_network(tiny_net, keep)
    x = images[3:]
    ref = tiny_net.forward(x)
    ours = result.network.forward(x)
    theirs = slim.forward(x)
    err = sum(float(np.sum((a - b) ** 2)) for a, b in zip(ref, ours))
    err_slim = sum(float(np.sum((a - b) ** 2)) for a, b in zip(ref, theirs))
    assert err < 0.5 * err_slim


def test_batched_removal_curve_ends_at_the_exact_refit_error():
    x, w, columns = problem(5, positions=40, s=2, rows=400)
    gram = x.T @ x
    order, curve = greedy_removal([ObsState(regularized_inverse(gram, 0.0), w.copy(), columns, 2.0)], 25,
                                  batch=0.25)
    assert len(order) == len(set(order)) == 25 and np.all(np.diff(curve) >= 0)
    np.testing.assert_allclose(curve[-1], refit_error(x, w, columns[order].ravel()) / 2.0, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# the CLI: the default method, the guard, bad input


@pytest.mark.slow
def test_cli_default_method_prints_fidelity_and_writes_a_model_opencv_loads(tiny_weights, tmp_path):
    from helpers import ROOT
    cfg = small_input_cfg(tmp_path)
    out = tmp_path / "p"
    result = run(["prune", cfg, tiny_weights, "--target-bflops", "0.6", "--calib", ROOT / "samples", "--calib-images",
                  "5", "-o", out])
    assert result.exit_code == 0, result.output
    assert "fidelity to the original on held-out calibration images" in result.stdout
    assert "not sparsity-trained" in result.stdout
    assert "costs at the heads, --allocation heads" in result.stdout   # the default allocation
    net = Network.from_cfg(f"{out}.cfg", f"{out}.weights")
    assert summary(net)["bflops"] <= 0.6 * 1.01
    assert opencv_parity(net, tmp_path) <= 2e-4


@pytest.mark.slow
def test_cli_min_fidelity_refuses_to_write(tiny_weights, tmp_path):
    from helpers import ROOT
    cfg = small_input_cfg(tmp_path)
    result = run(["prune", cfg, tiny_weights, "--ratio", "0.9", "--min-keep", "0.02", "--calib", ROOT / "samples",
                  "--calib-images", "5", "--min-fidelity", "0.99", "-o", tmp_path / "p"])
    assert result.exit_code == 2, result.output
    assert "below --min-fidelity 0.99; nothing written" in result.stderr
    assert "WARNING: fidelity" in result.stderr and "--finetune" in result.stderr
    assert not list(tmp_path.glob("p*"))


def test_cli_bad_inputs_exit_2_and_write_nothing(tiny_weights, tmp_path):
    from helpers import ROOT
    cfg = small_input_cfg(tmp_path)
    blank = tmp_path / "blank"
    blank.mkdir()
    import cv2
    for i in range(3):
        cv2.imwrite(str(blank / f"{i}.jpg"), np.full((64, 64, 3), 128, np.uint8))
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "dog.jpg").write_bytes((ROOT / "samples" / "dog.jpg").read_bytes())
    cases = [
        (["--target-bflops", "100"], "is not below the network's"),
        (["--target-params", "1e12"], "is not below the network's"),
        (["--ratio", "0.5", "--target-bflops", "1"], "give one of --ratio"),
        (["--ratio", "0.5", "--calib", blank], "detects nothing"),
        (["--ratio", "0.5", "--data", unlabelled], "--data has no labels"),
    ]
    for extra, message in cases:
        result = run(["prune", cfg, tiny_weights, *extra, "-o", tmp_path / "out"])
        assert result.exit_code == 2, (extra, result.output)
        assert result.stderr.startswith("error:") and message in result.stderr, (extra, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert not list(tmp_path.glob("out*"))


def test_heldout_error_matches_brute_force_on_the_other_fold():
    """HeldOut.error: the OBS-compensated weights fitted on fold A, scored on fold B's rows, against
    numpy on B's inputs; the sliced alternative (removed columns zeroed, bias refit to B's mean) too."""
    from dncompress.prune.oneshot import HeldOut
    x, w, columns = problem(7, positions=6, s=2, outputs=5, rows=300)
    a, b = x[:150], x[150:]
    state = ObsState(regularized_inverse(a.T @ a, 0.0), w.copy(), columns, 1.0)
    state.remove([1, 4])
    removed = columns[[1, 4]].ravel()
    kept = np.setdiff1d(np.arange(x.shape[1]), removed)
    sol = np.linalg.lstsq(a[:, kept], a @ w.T, rcond=None)[0].T           # OBS = least squares on fold A
    compensated = np.zeros_like(w)
    compensated[:, kept] = sol
    y = b @ w.T
    err_comp = float(np.sum((b @ compensated.T - y) ** 2))
    sliced = w.copy()
    sliced[:, removed] = 0
    sliced[:, -1] += np.mean(y - b @ sliced.T, axis=0)                      # best bias on fold B
    err_slice = float(np.sum((b @ sliced.T - y) ** 2))
    rows = np.array([0, 2, 3])
    held = HeldOut(b.T @ b, rows, w[rows])
    expected = min(float(np.sum((b @ compensated[rows].T - y[:, rows]) ** 2)),
                   float(np.sum((b @ sliced[rows].T - y[:, rows]) ** 2))) / float(np.sum(y[:, rows] ** 2))
    assert held.error(state) == pytest.approx(expected, rel=1e-6)
    assert err_comp > 0 and err_slice > 0


def test_heldout_curve_is_non_decreasing_and_starts_near_zero():
    from dncompress.prune.oneshot import HeldOut, heldout_curve
    x, w, columns = problem(8, positions=20, s=1, outputs=4, rows=120)
    a, b = x[:60], x[60:]
    state = ObsState(regularized_inverse(a.T @ a, 0.005), w.copy(), columns, float(np.sum((a @ w.T) ** 2)))
    curve = heldout_curve([state], [HeldOut(b.T @ b, np.arange(4), w)], 15, checkpoints=5)
    assert len(curve) == 15 and np.all(np.diff(curve) >= 0) and 0 <= curve[0] <= curve[-1]
