"""model_io: one table of formats; open_model / save_model round trips, suffix rules, errors."""
from __future__ import annotations

import numpy as np
import pytest

from dncompress.errors import DncompressError
from dncompress.model_io import FORMATS, model_files, open_model, output_paths, save_model, save_models
from dncompress.quant.apply import QuantConfig, quantize_network

from helpers import small_network


def same_params(a, b) -> None:
    assert [layer.type for layer in a.layers] == [layer.type for layer in b.layers]
    for x, y in zip(a.weight_tensors(), b.weight_tensors()):
        np.testing.assert_array_equal(x, y)


def test_every_format_has_files_and_a_description():
    for name, fmt in FORMATS.items():
        assert fmt.suffixes and all(s.startswith(".") for s in fmt.suffixes), name
        assert fmt.description and callable(fmt.files), name


def test_darknet_round_trip_by_prefix(tmp_path):
    net = small_network(0)
    written = save_model(net, tmp_path / "m")
    assert written == [tmp_path / "m.cfg", tmp_path / "m.weights"]
    back = open_model(tmp_path / "m.cfg")          # weights found beside the cfg
    same_params(net, back)
    assert back.weights_file == str(tmp_path / "m.weights")
    assert open_model(tmp_path / "m.cfg", imgsz=(64, 64)).info.width == 64


def test_sparse_and_darknet_written_together(tmp_path):
    net = small_network(1)
    conv = net.layers[0]
    conv.set_params(weights=np.where(np.abs(conv.params["weights"]) < 0.3, 0, conv.params["weights"]))
    encodings: dict[int, str] = {}
    save_models(net, {"darknet": tmp_path / "s", "sparse": tmp_path / "s.dns"}, encodings=encodings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.cfg", "s.dns", "s.weights"]
    assert set(encodings.values()) <= {"dense", "groups", "csr"} and encodings
    same_params(net, open_model(tmp_path / "s.dns"))
    same_params(net, open_model(tmp_path / "s.cfg"))


def test_packed_round_trip_and_imgsz_refused(tmp_path):
    quantized = quantize_network(small_network(2), QuantConfig(bits=4, act_bits=None, rounding="nearest",
                                                               bias_correction=False), None)
    save_model(quantized, tmp_path / "q.dnq")
    back = open_model(tmp_path / "q.dnq")
    same_params(quantized, back)
    with pytest.raises(DncompressError, match="--imgsz does not apply to a packed model"):
        open_model(tmp_path / "q.dnq", imgsz=(64, 64))
    # darknet: plain convs (stock Darknet reads it); darknet-q keeps the quantized sections
    save_model(quantized, tmp_path / "plain", "darknet")
    save_model(quantized, tmp_path / "dq")
    assert "[quantize_convolutional]" not in (tmp_path / "plain.cfg").read_text()
    assert "[quantize_convolutional]" in (tmp_path / "dq.cfg").read_text()
    same_params(back, open_model(tmp_path / "dq.cfg"))


def test_onnx_written_only_after_parity(tmp_path):
    parity: dict = {}
    save_model(small_network(3), [tmp_path / "m.bin"], "onnx", opset=13, parity=parity)
    assert (tmp_path / "m.bin").stat().st_size > 0 and parity["max_diff"] < 1e-4
    (tmp_path / "m.bin").rename(tmp_path / "m.onnx")
    with pytest.raises(DncompressError, match="does not read ONNX"):
        open_model(tmp_path / "m.onnx")


def test_options_and_names_are_checked(tmp_path):
    net = small_network(0)
    with pytest.raises(DncompressError, match="opset does not apply to the darknet format"):
        model_files(net, tmp_path / "m", "darknet", opset=13)
    with pytest.raises(DncompressError, match="unknown format 'tflite'"):
        save_model(net, tmp_path / "m", "tflite")
    with pytest.raises(DncompressError, match="writes 2 files"):
        output_paths([tmp_path / "only.cfg"], FORMATS["darknet"])
    assert output_paths(tmp_path / "a.weights", FORMATS["darknet"]) == [tmp_path / "a.cfg", tmp_path / "a.weights"]
    assert not list(tmp_path.iterdir())


def test_a_failing_format_writes_nothing(tmp_path):
    net = small_network(0)
    net.layers[0].set_params(biases=np.full(net.layers[0].filters, np.nan, np.float32))
    with pytest.raises(DncompressError, match="non-finite"):
        save_models(net, {"darknet": tmp_path / "m", "sparse": tmp_path / "m.dns"})
    assert not list(tmp_path.iterdir())


def test_cfg_warnings_reach_the_cli_as_one_line_each(tmp_path):
    from click.testing import CliRunner

    from dncompress.cli import main
    cfg = tmp_path / "d.cfg"
    cfg.write_text("[net]\nwidth=32\nheight=32\nchannels=3\nwidth=64\n[convolutional]\nfilters=4\nsize=3\npad=1\n"
                   "activation=leaky\nfoo=1\n")
    assert len(open_model(cfg, load_weights=False).warnings) == 2
    assert len(open_model(cfg, load_weights=False, imgsz=(64, 64)).warnings) == 2   # [net] rewritten
    result = CliRunner().invoke(main, ["stats", str(cfg)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "duplicate key 'width' (first set on line 2)" in warnings[0] and "foo=1" in warnings[1]
