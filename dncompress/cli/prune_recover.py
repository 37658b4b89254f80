"""`prune --classes` (class specialization) and `prune --finetune` (recovery by distillation), and the
label mapping `eval` applies to a specialized model: CLI glue over prune/classes.py and train/distill.py."""
from __future__ import annotations

import click

from ..errors import DncompressError
from ..network import Network


def cli_dataset(path: str, class_names: list[str] | None):
    """A dataset; with a specialized model, its labels renumbered to the model's classes by name."""
    from ..data import load_dataset
    from ..detect import read_names
    from ..prune.classes import remap_dataset
    dataset = load_dataset(path)
    if class_names:
        dataset = remap_dataset(dataset, dataset.names or read_names(None, 80), class_names)
    return dataset


def labels_for_model(dataset, net: Network):
    """A model specialized by `prune --classes` has <cfg stem>.names beside its cfg: the dataset's labels
    (named by the dataset's names, default COCO) are renumbered to its classes by name, others dropped."""
    from ..detect import read_names
    from ..prune.classes import names_beside, remap_dataset
    names_file = names_beside(net.file)
    if names_file is None:
        return dataset
    model_names = read_names(names_file, net.heads[0].classes)[:net.heads[0].classes]
    dataset_names = dataset.names or read_names(None, 80)
    if model_names == dataset_names:
        return dataset
    unknown = [n for n in model_names if n not in dataset_names]
    if unknown:
        raise DncompressError(f"class {unknown[0]!r} of {names_file} is not among the dataset's names "
                              "(default: COCO); cannot map the labels", dataset.source or None)
    click.echo(f"labels mapped by name to the {len(model_names)} classes of {names_file}", err=True)
    return remap_dataset(dataset, dataset_names, model_names)


def specialize_for_cli(net: Network, class_list: str, names_path: str | None) -> tuple[list[str], Network]:
    """--classes (and --names) -> (kept names, specialized network)."""
    from ..detect import check_heads, read_names
    from ..prune.classes import parse_class_list, specialize_classes
    check_heads(net.heads, net.file)
    names = read_names(names_path, net.heads[0].classes)
    if not names_path and names[0] == "0":
        raise DncompressError(f"the model has {net.heads[0].classes} classes, not COCO's 80: pass --names", net.file)
    ids = parse_class_list(class_list, names)
    return [names[i] for i in ids], specialize_classes(net, ids)


def names_bytes(class_names: list[str]) -> bytes:
    return ("\n".join(class_names) + "\n").encode()


def write_specialized(net: Network, class_names: list[str], prefix: str, weights, force: bool) -> None:
    """`prune --classes` without --ratio: PREFIX.cfg/.weights/.names, written together."""
    from ..fsutil import atomic_write_many, check_outputs
    from ..stats import summary
    outputs = [f"{prefix}.cfg", f"{prefix}.weights", f"{prefix}.names"]
    check_outputs(outputs, [net.file, weights], force)
    atomic_write_many(net.darknet_files(*outputs[:2]) | {outputs[2]: names_bytes(class_names)})
    click.echo(f"kept {len(class_names)} classes: {', '.join(class_names)}")
    click.echo(f"params {net.param_count():,}; BFLOPs {summary(net)['bflops']:.3f}")
    click.echo(f"wrote {', '.join(outputs)}")


def finetune_for_cli(net: Network, pruned: Network, calib, data_path, class_names, epochs: int, lr: float,
                     imgsz: int, batch: int, prefix: str, hints: float = 0.0) -> Network:
    """Fine-tune `pruned` against `net` on --calib (else --data), one progress line per step on stderr;
    each epoch saved as PREFIX.cfg/.weights; prints fidelity and mAP on --data."""
    from ..train.distill import FinetuneConfig, recover
    fit_path = calib or data_path
    fit = cli_dataset(fit_path, class_names)
    measure = cli_dataset(data_path, class_names) if data_path else None
    if fit.num_boxes:
        fit.check_classes(net.heads[0].classes)
    config = FinetuneConfig(epochs, lr, imgsz, batch, hints=hints)

    def on_step(log):
        parts = " ".join(f"{k} {v:.3f}" for k, v in log.loss.items())
        click.echo(f"fine-tune epoch {log.epoch + 1}/{epochs} step {log.step + 1}/{log.steps}: {parts} | "
                   f"{log.images_per_s:.1f} img/s lr {log.rate:.2g}", err=True)
    click.echo(f"fine-tuning {epochs} epochs at {imgsz}x{imgsz}, lr {lr:g}, batch {batch}, on {len(fit)} images of "
               f"{fit_path} ({'labels + ' if fit.num_boxes else ''}the original as teacher"
               f"{f', hints {hints:g}' if hints else ''}); each epoch is saved "
               f"to {prefix}.cfg/.weights", err=True)
    tuned, report = recover(net, pruned, fit, config, prefix, measure, measured_on_fit=fit_path == data_path,
                            on_step=on_step)
    if measure is not None:
        where = f"{len(measure)} images of {data_path}" + (" (fine-tuned on them: not held out)"
                                                             if report["measured_on_fit"] else "")
        before, after = report["before"], report["after"]
        click.echo(f"fidelity to the original (mAP@0.5 of its detections at conf 0.25) on {where}: "
                   f"{before['fidelity_map50']:.4f} pruned -> {after['fidelity_map50']:.4f} fine-tuned")
        if "map50" in after:
            click.echo(f"mAP@0.5: original {before['map50'][0]:.4f}, pruned {before['map50'][1]:.4f}, fine-tuned "
                       f"{after['map50'][1]:.4f}; mAP@0.5:0.95 {before['map50_95'][0]:.4f}, "
                       f"{before['map50_95'][1]:.4f}, {after['map50_95'][1]:.4f}")
    return tuned
