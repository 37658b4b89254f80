"""Is a cfg's engine-vs-OpenCV/onnxruntime difference float32 rounding or semantics? Random weights with
calibrated BN (as tests/test_darknet_cfgs.py), one random input; each float32 implementation (the engine,
OpenCV DNN, onnxruntime on our ONNX export) against a float64 run of the engine's maths:
    python tools/float_drift.py /work/shared/data/cfg/alexeyab/yolov3-spp.cfg [...] [--size 128]
Rounding: every float32 implementation sits at a similar small distance from float64 (and the float64
reference is much closer to each than they are to each other only if one of them is off)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from darknet_reference import (engine_outputs, opencv_outputs, random_calibrated, relative_diff,  # noqa: E402
                               compared_layers)
from dncompress.export.onnx import build_onnx, onnx_forward  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cfgs", nargs="+")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    for cfg in args.cfgs:
        net = random_calibrated(Path(cfg), args.size)
        x = np.random.default_rng(1).random((1, *net.input_shape), dtype=np.float32)
        keep = compared_layers(net)
        exact = engine_outputs(net, x, keep, np.float64)
        ours = engine_outputs(net, x, keep)
        row = {"engine32": relative_diff(ours, exact)}
        try:
            _, cv = opencv_outputs(net, x)
            row["opencv"] = relative_diff(cv, exact)
            row["engine32-opencv"] = relative_diff(cv, ours)
            _, cv = opencv_outputs(net, x, winograd=False)
            row["opencv-nowinograd"] = relative_diff(cv, exact)
            row["engine32-opencv-nowinograd"] = relative_diff(cv, ours)
        except Exception as err:  # noqa: BLE001 - a cfg OpenCV refuses
            row["opencv"] = f"refused ({str(err).strip().splitlines()[-1][:60]})"
        from test_darknet_cfgs import logits_network  # noqa: E402
        logits = logits_network(net)
        ort = onnx_forward(build_onnx(logits))(x)
        heads = [logits.layers[h].inputs[0] for h in range(0)]  # noqa: F841
        ort_keep = compared_layers(logits)
        exact_l = engine_outputs(logits, x, ort_keep, np.float64)
        ours_l = engine_outputs(logits, x, ort_keep)
        if len(ort) == len(exact_l):
            row["onnxruntime"] = relative_diff(ort, exact_l)
            row["engine32-onnxruntime"] = relative_diff(ort, ours_l)
        print(Path(cfg).name, " ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
