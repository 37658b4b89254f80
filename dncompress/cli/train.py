"""`dncompress train`: Darknet's YOLOv3 loss and SGD schedule, with sparsity, distillation and kept zeros."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from ..network import Network
from ..layers.conv import refuse_xnor
from .common import open_network, progress_lines
from .options import Number, model_arguments


def set_net_keys(net: Network, **values) -> None:
    """Override [net] training keys given on the command line (None = keep the cfg's)."""
    for key, value in values.items():
        if value is not None:
            net.net_section.options[key] = str(value)


@click.command("train")
@model_arguments
@click.option("--data", "data_path", required=True, type=click.Path(),
              help="Training set: folder with images/ and labels/, a list of image paths, or a .data file.")
@click.option("--epochs", required=True, type=click.IntRange(1), help="Epochs to train (in total, when resuming).")
@click.option("--imgsz", type=click.IntRange(32), help="Square network input size (default: the cfg's).")
@click.option("--batch", type=click.IntRange(1), help="Images per weight update (default: [net] batch if the "
              "cfg is a training cfg, batch > 1; else 8).")
@click.option("--subdivisions", type=click.IntRange(1), help="Forward/backward passes per update "
              "(batch/subdivisions images each) to bound memory (default: [net] subdivisions with its batch, else 1).")
@click.option("--lr", type=Number(0, low_open=True), help="learning_rate (default: the cfg's [net]).")
@click.option("--burn-in", type=click.IntRange(0), help="burn_in updates (default: the cfg's [net]).")
@click.option("--keep-zeros", is_flag=True, help="Conv weights that are zero at the start stay zero: fine-tune a "
              "weight-pruned model (prune energy, sparsify) without refilling its zeros.")
@click.option("--sparsity", default=0.0, show_default=True, type=Number(0),
              help="Network Slimming: add S*sign(gamma) to every prunable BN gamma's gradient. Each update moves a "
              "gamma by up to lr*S/(1-momentum) (10*lr*S): the run warns when S could zero a typical gamma by itself.")
@click.option("--teacher", nargs=2, metavar="CFG W", help="Distil the head outputs of this model (labels are "
              "used too when the dataset has any).")
@click.option("--frozen-bn", is_flag=True, help="Batch normalization on its running statistics, which stay "
              "fixed (gamma and beta still learn): for fine-tunes with small batches, e.g. of a pruned model.")
@click.option("--augment/--no-augment", default=True, show_default=True,
              help="Flip, HSV and scale/translate jitter (strengths from the cfg); else plain letterbox.")
@click.option("-o", "--output", "prefix", help="Checkpoint prefix: PREFIX.cfg/.weights each epoch, "
              "PREFIX_last.weights/.npz to resume (default <stem>-trained).")
@click.option("--resume", is_flag=True, help="Continue from PREFIX_last.weights (and its momentum).")
@click.option("--seed", default=0, show_default=True, help="Shuffling and augmentation seed.")
@click.option("--force", is_flag=True, help="Overwrite existing checkpoints.")
def train_command(cfg, weights, data_path, epochs, imgsz, batch, subdivisions, lr, burn_in, keep_zeros, sparsity,
                  teacher, frozen_bn, augment, prefix, resume, seed, force):
    """Train or fine-tune CFG on a YOLO-format dataset with Darknet's YOLOv3 loss and SGD schedule.

    \b
    Examples:
      dncompress train yolov3-tiny --data train/ --epochs 3 --imgsz 320 --lr 0.0005
      dncompress train pruned.cfg pruned.weights --data fit/ --epochs 2 --imgsz 320 --batch 8 --lr 0.0002 \\
          --burn-in 10 --frozen-bn --teacher yolov3-tiny.cfg yolov3-tiny.weights
      dncompress train yolov3-tiny --data train/ --epochs 10 --lr 0.0004 --sparsity 0.3 -o slim
    """
    from ..data import load_dataset
    from ..detect import check_heads
    from ..fsutil import check_outputs
    from ..train.loop import Checkpoints, TrainConfig, train
    from ..train.optim import Schedule
    from ..train.sparsity import format_gamma_summary, sparsity_advice
    dataset = load_dataset(data_path)
    if not teacher:
        dataset.require_labels("training on it would learn that every image is background; to distill from "
                               "a model without labels, pass --teacher CFG W")
    net = open_network(cfg, weights, (imgsz, imgsz) if imgsz else None)
    refuse_xnor(net, "train")
    check_heads(net.heads, net.file)
    dataset.check_classes(net.heads[0].classes)
    set_net_keys(net, learning_rate=lr, burn_in=burn_in)
    teacher_net = open_network(teacher[0], teacher[1], (net.info.width, net.info.height)) if teacher else None
    if teacher_net and [h.classes for h in teacher_net.heads] != [h.classes for h in net.heads]:
        raise DncompressError("--teacher's heads differ from the model's in number or classes; distillation "
                              "matches them output by output", teacher[0])
    checkpoints = Checkpoints(prefix or f"{Path(net.file).stem}-trained")
    if not resume:
        check_outputs(checkpoints.files, [net.file, weights, data_path], force)
    cfg_batch, cfg_subdivisions = (net.net_section.get_int(k, 1) for k in ("batch", "subdivisions"))
    if batch is None:
        batch, subdivisions = (cfg_batch, subdivisions or cfg_subdivisions) if cfg_batch > 1 else (8, subdivisions)
    if sparsity and not resume:
        advice = sparsity_advice(net, Schedule.from_net(net.net_section), sparsity, epochs * -(-len(dataset) // batch))
        if advice:
            click.echo(advice, err=True)
    config = TrainConfig(epochs, batch, min(subdivisions or 1, batch), sparsity, augment, seed, keep_zeros,
                         frozen_bn)

    def on_step(log):
        parts = " ".join(f"{k} {v:.3f}" for k, v in log.loss.items())
        progress_lines(f"epoch {log.epoch + 1}/{epochs} {parts} | {log.images_per_s:.1f} img/s lr {log.rate:.2g} "
                       "| step", log.step + 1, log.steps)

    def on_epoch(epoch, record):
        progress_lines.end()
        parts = " ".join(f"{k} {v:.3f}" for k, v in record["loss"].items())
        click.echo(f"epoch {epoch + 1}: loss/image {parts}; seen {net.header.seen}")
        click.echo(f"  {format_gamma_summary(record['gamma'])}")
    train(net, dataset, config, checkpoints, teacher_net, resume, on_step, on_epoch)
    click.echo(f"wrote {checkpoints.files[0]} and {checkpoints.files[1]}")
