"""Setup shared by the experiment scripts: the model, a labelled dataset, calibration images, and the
unpruned/unquantized model's own predictions (for mAP and as the fidelity reference)."""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from dncompress.data import Dataset, calibration_batch, load_dataset
from dncompress.eval import ImagePrediction, fidelity_dataset, predict
from dncompress.model_io import open_model
from dncompress.network import Network


@dataclasses.dataclass
class Experiment:
    net: Network
    size: tuple[int, int]
    dataset: Dataset
    calib: np.ndarray
    classes: int
    base_preds: list[ImagePrediction]
    reference: Dataset


def add_arguments(parser: argparse.ArgumentParser, calib_images: int) -> None:
    parser.add_argument("--cfg", default="yolov3-tiny")
    parser.add_argument("--weights")
    parser.add_argument("--data", required=True, help="labelled dataset (YOLO txt labels)")
    parser.add_argument("--calib", required=True, help="calibration images, ideally not in --data")
    parser.add_argument("--calib-images", type=int, default=calib_images)


def load_experiment(args: argparse.Namespace) -> Experiment:
    net = open_model(args.cfg, args.weights)
    size = (net.info.width, net.info.height)
    dataset = load_dataset(args.data)
    base_preds = predict(net.forward, net.heads, dataset, *size, progress=False)
    return Experiment(net, size, dataset, calibration_batch(args.calib, args.calib_images, *size),
                      net.heads[0].classes, base_preds, fidelity_dataset(base_preds, dataset))
