"""`dncompress classify`: top-k classes of images with a Darknet classifier cfg."""
from __future__ import annotations

import json

import click

from .common import backend_forward, expand_images, open_network
from .options import model_arguments


@click.command("classify")
@model_arguments
@click.option("--image", "images", multiple=True, required=True, type=click.Path(),
              help="Image file or folder (repeatable).")
@click.option("--names", type=click.Path(), help="Class names, one per line (default: class indices).")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1, 1000), help="Classes to print.")
@click.option("--backend", type=click.Choice(["numpy", "onnx"]), default="numpy", show_default=True,
              help="The numpy engine, or onnxruntime on an ONNX export of the model.")
@click.option("--json", "as_json", is_flag=True, help="Print the predictions as JSON.")
def classify_command(cfg, weights, images, names, top, backend, as_json):
    """Top classes of images with a classifier CFG (darknet19, darknet53, resnet50, ...), preprocessed as
    Darknet's `classifier predict` (shorter side to the input size, centre crop).

    \b
    Examples:
      dncompress classify darknet19.cfg darknet19.weights --image dog.jpg --names imagenet.shortnames.list
      dncompress classify resnet50.cfg resnet50.weights --image photos/ --top 3 --json
    """
    from ..classify import class_count, classify_image, read_class_names
    from ..detect import load_image
    paths = expand_images(images)
    net = open_network(cfg, weights)
    class_names = read_class_names(names, class_count(net))
    forward = backend_forward(net, backend)
    results = []
    for path in paths:
        preds = classify_image(forward, load_image(path), net.info.width, net.info.height, class_names, top)
        results.append({"image": str(path), "top": [p.to_dict() for p in preds]})
        if not as_json:
            click.echo(f"{path}:")
            for p in preds:
                click.echo(f"  {p.score:8.4f}  {p.name}")
    if as_json:
        click.echo(json.dumps(results, indent=1))
