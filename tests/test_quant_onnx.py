"""QDQ ONNX of quantized networks: onnxruntime vs the engine's fake quant, layer by layer."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from dncompress.detect import detect_image, load_image, preprocess
from dncompress.export.onnx import onnx_forward
from dncompress.export.qdq import build_qdq_onnx
from dncompress.quant.apply import QuantConfig, bit_plan, quantize_network
from dncompress.quant.calibrate import ActivationStats, collect_stats
from dncompress.quant.quantizers import activation_params

from conftest import COCO128, ROOT, random_network

DOG = ROOT / "samples" / "dog.jpg"


def with_all_outputs(model):
    """The model with every node output exposed, to compare intermediate tensors."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        elem = onnx.TensorProto.UINT8 if node.op_type == "QuantizeLinear" else onnx.TensorProto.FLOAT
        for name in node.output:
            if name not in known:
                model.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return model


def run_all(model, x):
    session = ort.InferenceSession(with_all_outputs(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x})))


def quantized_random_net(bits, act_bits, seed=0):
    net = random_network("yolov3-tiny", seed=seed, width=128, height=128)
    x = np.random.default_rng(seed).random((2, *net.input_shape), np.float32)
    config = QuantConfig(bits, act_bits)
    stats = collect_stats_on(net, sorted(bit_plan(net, config)), x)
    return quantize_network(net, config, stats)[0], x


def collect_stats_on(net, layer_ids, x):
    """ActivationStats from an in-memory batch (collect_stats reads image files)."""
    rng = np.random.default_rng(0)
    keep = {net.layers[i].inputs[0] for i in layer_ids} - {-1}
    outputs = dict(zip(sorted(keep), net.forward(x, keep=keep)))
    outputs[-1] = x
    stats = {}
    for i in layer_ids:
        stats[i] = ActivationStats()
        stats[i].add(outputs[net.layers[i].inputs[0]], rng)
    return stats


@pytest.mark.parametrize("bits, act_bits, opset, int4", [(8, 8, 13, False), (4, 8, 21, True), (4, 4, 13, False)])
def test_qdq_activations_within_one_step_and_weights_exact(bits, act_bits, opset, int4):
    qnet, x = quantized_random_net(bits, act_bits)
    model = build_qdq_onnx(qnet, opset, int4, dynamic_batch=True)
    float_kernels = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4]
    assert not float_kernels, "float weight copies left in the graph"
    values = run_all(model, x)
    dq = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    producer = {o: n for n in model.graph.node for o in n.output}
    checked = 0
    for layer in qnet.layers:
        if layer.type != "quantize_convolutional":
            continue
        conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith(f"conv{layer.index}_"))
        x_name, w_name = conv.input[:2]
        q, scale = layer.weight_codes()
        np.testing.assert_array_equal(values[w_name], layer.folded()[0])
        assert x_name in dq
        chain = producer[dq[x_name].input[0]].input[0]          # QuantizeLinear's input
        if producer.get(chain) is not None and producer[chain].op_type == "Clip":
            chain = producer[chain].input[0]
        float_in = values[chain] if chain != "images" else x
        step, _ = activation_params(*layer.act_range, layer.bita)
        diff = np.abs(layer.quantize_input(float_in) - values[x_name])
        assert diff.max() <= step * 1.001, (layer.index, diff.max(), step)
        assert np.mean(diff > 0) < 1e-3
        checked += 1
    assert checked == 13


@pytest.mark.slow
def test_qdq_real_weights_w8a8_same_detections(tiny_net):
    images = sorted((COCO128 / "images").glob("*.jpg"))[:4]
    if not images:
        pytest.skip("needs ../shared/data/coco128")
    config = QuantConfig(8, 8)
    stats = collect_stats(tiny_net, sorted(bit_plan(tiny_net, config)), images, batch=4)
    qnet = quantize_network(tiny_net, config, stats)[0]
    forward = onnx_forward(build_qdq_onnx(qnet))
    img = load_image(DOG)
    found = [sorted(d.class_id for d in detect_image(f, qnet.heads, img, 416, 416, 0.5)) for f in (qnet.forward, forward)]
    assert found[0] == found[1] and len(found[0]) == 5
    x = preprocess(img, 416, 416)
    for a, b in zip(qnet.forward(x), forward(x)):
        # rounding ties flip single activations by one step; the flips propagate to the heads
        assert np.abs(a - b).max() / np.abs(a).max() < 0.05
