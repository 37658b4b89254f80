"""In-graph [yolo]/[region] decode (the ONNX twin of detect.decode_yolo/decode_region) and optional
NonMaxSuppression. Box order is anchor-major per head, heads concatenated in cfg order."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ..layers import Layer
from ..network import Network
from .onnx import GraphBuilder


def grid(h: int, w: int) -> np.ndarray:
    """(1, 1, 2, H*W): cell column and row of each position."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([cols.ravel(), rows.ravel()]).astype(np.float32)[None, None]


def channel_slice(b: GraphBuilder, r: str, start: int, stop: int, base: str) -> str:
    return b.node("Slice", [r, b.const("starts", [start]), b.const("ends", [stop]), b.const("axes", [2])], base)


def decode_head(b: GraphBuilder, layer: Layer, t: str) -> tuple[str, str, str]:
    """t: (N, A*(5+K), H, W) -> boxes (N, A*H*W, 4) cx, cy, w, h relative to the net input,
    objectness (N, A*H*W), class scores (N, A*H*W, K)."""
    a, k = len(layer.anchors), layer.classes
    _, h, w = layer.out_shape
    base = f"decode_{layer.index}"
    r = b.node("Reshape", [t, b.const("shape", [0, a, 5 + k, h * w])], f"{base}_reshape")
    xy = b.node("Sigmoid", [channel_slice(b, r, 0, 2, f"{base}_txy")], f"{base}_xy")
    if layer.type == "yolo" and layer.scale_x_y != 1.0:
        s = layer.scale_x_y
        xy = b.node("Sub", [b.node("Mul", [xy, b.const("scale_x_y", np.float32(s))], f"{base}_xy_scaled"),
                            b.const("xy_shift", np.float32((s - 1) / 2))], f"{base}_xy_shifted")
    grid_size = b.const("grid_size", np.array([w, h], np.float32).reshape(1, 1, 2, 1))
    xy = b.node("Div", [b.node("Add", [xy, b.const("grid", grid(h, w))], f"{base}_xy_cell"), grid_size],
                f"{base}_xy_rel")
    # yolo anchors are in input pixels, region anchors in grid cells
    divisor = b.const("net_size", np.array(layer.net_size, np.float32).reshape(1, 1, 2, 1)) \
        if layer.type == "yolo" else grid_size
    anchors = b.const("anchors", layer.anchors.astype(np.float32).reshape(1, a, 2, 1))
    wh = b.node("Exp", [channel_slice(b, r, 2, 4, f"{base}_twh")], f"{base}_exp")
    wh = b.node("Div", [b.node("Mul", [wh, anchors], f"{base}_wh_px"), divisor], f"{base}_wh_rel")
    boxes = b.node("Concat", [xy, wh], f"{base}_xywh", axis=2)
    boxes = b.node("Transpose", [boxes], f"{base}_boxes_t", perm=[0, 1, 3, 2])
    boxes = b.node("Reshape", [boxes, b.const("shape", [0, -1, 4])], f"{base}_boxes")
    objectness = b.node("Sigmoid", [channel_slice(b, r, 4, 5, f"{base}_tobj")], f"{base}_obj_4d")
    objectness = b.node("Reshape", [objectness, b.const("shape", [0, -1])], f"{base}_objectness")
    logits = b.node("Transpose", [channel_slice(b, r, 5, 5 + k, f"{base}_tcls")], f"{base}_cls_t",
                    perm=[0, 1, 3, 2])
    softmax = layer.type == "region" and layer.softmax
    probs = b.node("Softmax", [logits], f"{base}_softmax", axis=-1) if softmax \
        else b.node("Sigmoid", [logits], f"{base}_sigmoid")
    scores = b.node("Reshape", [probs, b.const("shape", [0, -1, k])], f"{base}_class_scores")
    return boxes, objectness, scores


def emit_decode(b: GraphBuilder, net: Network, head_outputs: list[str], batch, nms: bool,
                thresh: float, iou: float, max_boxes: int) -> list:
    """Decode every head, concatenate, optionally add NonMaxSuppression; returns output value infos."""
    parts = [decode_head(b, layer, t) for layer, t in zip(net.heads, head_outputs)]
    names = ("boxes", "objectness", "class_scores")
    merged = [b.node("Concat", [p[i] for p in parts], names[i] + "_concat", axis=1) for i in range(3)]
    outputs = [b.node("Identity", [m], name) for m, name in zip(merged, names)]
    count = sum(len(h.anchors) * h.out_shape[1] * h.out_shape[2] for h in net.heads)
    k = net.heads[0].classes
    infos = [helper.make_tensor_value_info(outputs[0], TensorProto.FLOAT, [batch, count, 4]),
             helper.make_tensor_value_info(outputs[1], TensorProto.FLOAT, [batch, count]),
             helper.make_tensor_value_info(outputs[2], TensorProto.FLOAT, [batch, count, k])]
    if nms:
        # Darknet's candidate score is objectness * class score
        score = b.node("Mul", [b.node("Unsqueeze", [outputs[1], b.const("axes", [2])], "objectness_3d"),
                               outputs[2]], "scores")
        score = b.node("Transpose", [score], "scores_by_class", perm=[0, 2, 1])
        selected = b.node("NonMaxSuppression", [outputs[0], score, b.const("max_boxes", [max_boxes]),
                                                b.const("iou_threshold", [np.float32(iou)]),
                                                b.const("score_threshold", [np.float32(thresh)])],
                          "selected_indices", center_point_box=1)
        infos.append(helper.make_tensor_value_info(selected, TensorProto.INT64, ["detections", 3]))
    return infos
