"""Pruning through the Darknet-world layers: channels read by [sam]/[scale_channels]/[reorg]/[softmax]
stay whole; a shortcut between different channel counts couples the channels it adds; the pruned model
loads in OpenCV DNN and matches the engine."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from dncompress.cfg import parse_cfg
from dncompress.network import Network
from dncompress.prune.apply import prune_network
from dncompress.prune.criteria import l1_norm
from dncompress.prune.groups import channel_groups
from dncompress.prune.plan import plan_pruning

sys.path.insert(0, str(Path(__file__).parent))
from darknet_reference import opencv_relative_diff  # noqa: E402

CONV = "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize={k}\nstride=1\npad=1\nactivation=leaky\n"
HEAD = ("[convolutional]\nfilters=18\nsize=1\nstride=1\npad=1\nactivation=linear\n"
        "[yolo]\nmask=0,1,2\nanchors=10,14,23,27,37,58\nclasses=1\nnum=3\n")


def calibrated(body: str) -> Network:
    net = Network(parse_cfg("[net]\nwidth=32\nheight=32\nchannels=3\n" + body))
    net.init_random(0)
    net.calibrate_batchnorm(np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    return net


def prunable_convs(net: Network) -> set[int]:
    return {conv for g in channel_groups(net) if g.prunable for conv in g.convs}


def test_attention_and_reorg_inputs_stay_whole():
    net = calibrated(CONV.format(f=8, k=3) + CONV.format(f=8, k=3) + "[avgpool]\n" +
                     CONV.format(f=8, k=1).replace("leaky", "logistic") + "[scale_channels]\nfrom=-3\n" +
                     CONV.format(f=8, k=3).replace("leaky", "logistic") + "[sam]\nfrom=-2\n" +
                     CONV.format(f=16, k=3) + "[reorg]\nstride=2\n" + CONV.format(f=8, k=3) + HEAD)
    # layer 1 (features of scale_channels), 3 (its attention), 5 (sam), 7 (reorg input) are fixed;
    # layer 0 (read by conv 1 only) and 9 (before the head conv, read by a conv) stay prunable
    assert prunable_convs(net) == {0, 9}


def test_shortcut_between_channel_counts_prunes_coupled_and_loads_in_opencv():
    # layer 1 (16 channels) + layer 2 (8 channels): channels 0..7 added, 8..15 pass alone
    net = calibrated(CONV.format(f=8, k=3) + CONV.format(f=16, k=3) + CONV.format(f=8, k=1) +
                     "[shortcut]\nfrom=-2\nactivation=linear\n" + CONV.format(f=8, k=3) + HEAD)
    groups = channel_groups(net)
    coupled = next(g for g in groups if set(g.convs) == {1, 2})
    assert len(coupled.positions) == 8 and coupled.prunable
    alone = next(g for g in groups if g.convs == [1] and g.prunable)
    assert len(alone.positions) == 8
    keep = plan_pruning(groups, l1_norm(net), 0.5, scope="layer")
    pruned = prune_network(net, keep, with_compensation=False)
    assert pruned.layers[2].filters == 4 and pruned.layers[1].filters == 8
    x = np.random.default_rng(1).random((1, 3, 32, 32), dtype=np.float32)
    assert opencv_relative_diff(pruned, x) <= 1e-4
    with tempfile.TemporaryDirectory() as tmp:
        pruned.save(Path(tmp) / "p.cfg", Path(tmp) / "p.weights")
        assert cv2.dnn.readNetFromDarknet(str(Path(tmp) / "p.cfg"), str(Path(tmp) / "p.weights")) is not None
