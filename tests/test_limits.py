"""Activation-memory estimate and the bound that refuses networks too big for the machine."""
import tracemalloc

import numpy as np
import pytest
from click.testing import CliRunner

from dncompress.cfg import parse_cfg
from dncompress.cli import main
from dncompress.errors import DncompressError
from dncompress.network import MAX_ACTIVATION_ENV, Network

from helpers import CFGS, ROOT, random_network

DOG = str(ROOT / "samples" / "dog.jpg")


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny", "yolov2-tiny"])
def test_total_is_every_layer_output_and_peak_bounds_measured_memory(name):
    net = random_network(name, width=160, height=128)
    total, peak = net.activation_bytes()
    x = np.random.default_rng(0).random((1, *net.input_shape), dtype=np.float32)
    outputs = net.forward(x, keep=set(range(len(net.layers))))
    assert total == sum(o.nbytes for o in outputs)
    assert net.activation_bytes(batch=3) == (3 * total, 3 * peak)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        net.forward(x)
        measured = tracemalloc.get_traced_memory()[1] - before + x.nbytes
    finally:
        tracemalloc.stop()
    # numpy reports its buffers to tracemalloc; the model of each kernel's scratch is within a few %
    assert 0.9 * measured <= peak <= 1.1 * measured


def test_yolov3_at_416_figures():
    total, peak = Network.from_cfg(CFGS / "yolov3.cfg").activation_bytes()
    assert total > 200 * 2**20 and 0 < peak < total


def test_network_over_the_bound_names_figure_bound_and_remedy():
    with pytest.raises(DncompressError) as err:
        Network.from_cfg(CFGS / "yolov3.cfg", width=4096, height=4096, max_activation_mb=1024)
    message = str(err.value)
    assert "yolov3.cfg:line 1 [net]" in message
    assert "MB of activation memory at 4096x4096" in message and "1,024 MB limit" in message
    assert "--max-activation-mb" in message and MAX_ACTIVATION_ENV in message
    Network.from_cfg(CFGS / "yolov3.cfg", width=4096, height=4096, max_activation_mb=20000)


def test_exploding_channels_are_refused_without_allocating():
    doubling = "".join("[route]\nlayers=-1,-1\n" for _ in range(80))
    text = f"[net]\nwidth=32\nheight=32\n[convolutional]\nfilters=4\n{doubling}"
    with pytest.raises(DncompressError, match="MB of activation memory"):
        Network(parse_cfg(text, "boom.cfg"), "boom.cfg")


def test_env_var_and_cli_option_set_the_bound(monkeypatch, tiny_weights, tmp_path):
    runner = CliRunner()
    monkeypatch.setenv(MAX_ACTIVATION_ENV, "5")
    result = runner.invoke(main, ["detect", DOG, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "over the 5 MB limit" in result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    result = runner.invoke(main, ["--max-activation-mb", "100", "detect", DOG, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv(MAX_ACTIVATION_ENV, "lots")
    result = runner.invoke(main, ["detect", DOG, "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and f"{MAX_ACTIVATION_ENV}=lots must be a positive number" in result.stderr
    assert not (tmp_path / "p").exists()
