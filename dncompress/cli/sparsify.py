"""`dncompress sparsify`: zero weights (SIMD groups or unstructured) and/or activations, and measure it."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import DncompressError
from ..sparse.activations import NEAR_ZERO
from ..sparse.weights import NORMS, PATTERNS, SCOPES, SparsifyConfig
from ..layers.conv import refuse_xnor
from .common import open_network, print_comparison, progress_lines
from .options import Number, data_option, force_option, model_arguments


def print_weight_sparsity(report: dict) -> None:
    click.echo(f"{'layer':>5} {'weights':>9} {'nonzero':>21} {'zero':>6} {'MACs skipped':>13}")
    for row in report["layers"]:
        a, b = row["nonzero"]
        click.echo(f"{row['index']:>5} {row['weights']:>9,} {a:>9,} -> {b:<9,} {1 - b / row['weights']:6.1%} "
                   f"{row['skipped_macs'] / 1e6:10.1f} M")
    a, b = report["nonzero"]
    click.echo(f"nonzero weights {a:,} -> {b:,} ({1 - b / report['weights']:.1%} of conv weights zero); "
               f"a zero-skipping engine skips {report['skipped_macs'] / 1e9:.3f} of {report['macs'] / 1e9:.3f} G MACs "
               f"({report['skipped_macs'] / report['macs']:.1%})")


def print_activation_sparsity(before: dict, after: dict, images: int) -> None:
    """Per conv: output zeros and near zeros before, zeros and kept fraction after, and the share of its
    in-image MACs (zero padding left out; per image) with a zero operand."""
    click.echo(f"{'layer':>5} {'out zero':>8} {f'|a|<{NEAR_ZERO:g}':>8} {'-> zero':>7} {'kept':>6} {'in zero':>7} "
               f"{'MACs/image':>13} {'skip: act':>16} {'w+act':>6}")
    totals = {key: [0, 0] for key in ("real", "act", "both")}
    for index, b in before.items():
        a = after[index]
        real = b.macs - b.padding_macs
        act = (real - b.nonzero_input_macs, real - a.nonzero_input_macs)
        for key, pair in (("real", (real, real)), ("act", act), ("both", (real - b.effectual_macs,
                                                                        real - a.effectual_macs))):
            totals[key] = [t + v for t, v in zip(totals[key], pair)]
        click.echo(f"{index:>5} {b.zeros / b.outputs:8.1%} {b.near_zeros / b.outputs:8.1%} {a.zeros / a.outputs:7.1%} "
                   f"{1 - a.zeros / a.outputs:6.1%} {a.input_zeros / a.inputs:7.1%} {real / images / 1e9:11.3f} G "
                   f"{act[0] / real:6.1%} -> {act[1] / real:6.1%} {1 - a.effectual_macs / real:6.1%}")
    real = totals["real"][0]
    click.echo(f"a zero-skipping engine skips, of {real / images / 1e9:.3f} G in-image MACs per image: zero "
               f"activations {totals['act'][0] / real:.1%} -> {totals['act'][1] / real:.1%}; zero weights or activations "
               f"{totals['both'][0] / real:.1%} -> {totals['both'][1] / real:.1%}")


def sparsify_prefix(stem: str, config: SparsifyConfig | None, threshold: float, winner_rate: float) -> str:
    parts = [stem]
    if config:
        parts.append(f"{config.pattern}{config.group if config.pattern == 'simd' else ''}-s{config.ratio:g}")
    if threshold:
        parts.append(f"at{threshold:g}")
    if winner_rate < 1:
        parts.append(f"wr{winner_rate:g}")
    return "-".join(parts)


@click.command("sparsify")
@model_arguments
@click.option("--pattern", type=click.Choice(PATTERNS), help="Weight pruning: simd (Scalpel: whole groups of "
              "--group consecutive weights along each filter's reduction axis) or unstructured (per weight).")
@click.option("--group", type=click.Choice(["4", "8"]), default="4", show_default=True,
              help="SIMD width in weights (--pattern simd).")
@click.option("--ratio", type=Number(), help="Fraction of the groups (unstructured: weights) set to zero.")
@click.option("--norm", type=click.Choice(sorted(NORMS)), default="l2", show_default=True,
              help="Group score: norm of the BN-folded weights.")
@click.option("--scope", type=click.Choice(SCOPES), default="layer", show_default=True,
              help="RATIO of every layer, or one threshold over all pruned layers.")
@click.option("--skip-first-last", is_flag=True, help="Leave the first conv and the convs feeding the heads dense.")
@click.option("--bias-correction", is_flag=True, help="Remove each pruned conv's mean output shift on --calib "
              "images (folded into its bias or BN mean).")
@click.option("--calib", type=click.Path(), help="Calibration images (folder or dataset) for --bias-correction.")
@click.option("--calib-images", default=16, show_default=True, type=click.IntRange(1))
@click.option("--activation-threshold", default=0.0, type=Number(0), help="Dynamic mask: zero conv "
              "outputs with |a| < T (cfg key activation_threshold=; Darknet and OpenCV ignore it).")
@click.option("--winner-rate", default=1.0, type=Number(0, 1, low_open=True), help="Dynamic mask: keep "
              "the top fraction R (by |a|) of each conv's outputs per image (cfg key winner_rate=).")
@click.option("--activations", "measure_activations", is_flag=True, help="With --data: per-conv table of "
              "activation zeros and of the MACs a zero-skipping engine would skip, before/after.")
@click.option("--images", default=16, show_default=True, type=click.IntRange(1),
              help="How many --data images --activations measures.")
@click.option("-o", "--output", "prefix", help="Output prefix: PREFIX.cfg + PREFIX.weights (dense, with zeros), "
              "and PREFIX.dns (sparse) with --pattern (default <stem>-<pattern>-s<RATIO>).")
@data_option()
@force_option
def sparsify_command(cfg, weights, pattern, group, ratio, norm, scope, skip_first_last, bias_correction, calib,
                     calib_images, activation_threshold, winner_rate, measure_activations, images, prefix, data_path,
                     force):
    """Zero weights (SIMD-aligned groups or unstructured) and/or activations (dynamic masks) inside the
    dense model; write it as Darknet cfg + weights and as a sparse .dns file, and measure what it saves.

    \b
    Examples:
      dncompress sparsify yolov3-tiny --pattern simd --group 4 --ratio 0.3
      dncompress sparsify yolov3-tiny --pattern unstructured --ratio 0.5 --bias-correction --calib images/
      dncompress sparsify yolov3-tiny --activation-threshold 0.05 --activations --data val/
    """
    from ..data import calibration_batch
    from ..fsutil import check_outputs
    from ..sparse.workflow import measure_sparsified, sparsify_model, write_sparsified
    masks = activation_threshold > 0 or winner_rate < 1
    if pattern and ratio is None:
        raise DncompressError("--pattern needs --ratio (e.g. --ratio 0.5)")
    if ratio is not None and not pattern:
        raise DncompressError("--ratio needs --pattern simd or --pattern unstructured")
    if bias_correction and not (pattern and calib):
        raise DncompressError("--bias-correction needs --pattern and calibration images (--calib DIR)")
    if measure_activations and not data_path:
        raise DncompressError("--activations needs --data (the images to measure)")
    if not (pattern or masks or measure_activations):
        raise DncompressError("nothing to do: give --pattern and --ratio (weights), --activation-threshold or "
                              "--winner-rate (activations), or --activations --data PATH (measure)")
    config = SparsifyConfig(pattern, ratio, int(group), norm, scope, skip_first_last) if pattern else None
    net = open_network(cfg, weights)
    refuse_xnor(net, "sparsify")
    outputs = []
    if config or masks:
        prefix = prefix or sparsify_prefix(Path(net.file).stem, config, activation_threshold, winner_rate)
        outputs = [f"{prefix}.cfg", f"{prefix}.weights"] + ([f"{prefix}.dns"] if config else [])
        check_outputs(outputs, [net.file, net.weights_file], force)
    calib_batch = calibration_batch(calib, calib_images, net.info.width, net.info.height,
                                    channels=net.info.channels) if bias_correction else None
    sparse, weight_report = sparsify_model(net, config, activation_threshold, winner_rate, calib_batch)
    if weight_report:
        print_weight_sparsity(weight_report)
    if outputs:
        written = write_sparsified(sparse, outputs, config)
        click.echo(f"wrote {' and '.join(outputs)}")
        if config:
            sizes, counts = written["sizes_mb"], ", ".join(f"{n} {name}" for name, n in written["encodings"].items())
            click.echo(f"size: dense {outputs[1]} {sizes[outputs[1]]:.2f} MB, sparse {outputs[2]} "
                       f"{sizes[outputs[2]]:.2f} MB ({1 - sizes[outputs[2]] / sizes[outputs[1]]:.1%} less; "
                       f"conv encodings: {counts})")
    if data_path:
        report = measure_sparsified(net, sparse, data_path, images if measure_activations else 0,
                                    progress=progress_lines)
        if "activations" in report:
            print_activation_sparsity(*report["activations"])
        print_comparison(report)
