"""The `sparsify` command as library calls returning data: zero weights and/or add activation masks
(`sparsify_model`), write the dense and sparse files together (`write_sparsified`), measure on a dataset
(`measure_sparsified`). The cli layer prints."""
from __future__ import annotations

from pathlib import Path

from ..network import Network
from ..progress import Progress, silent
from .activations import activation_stats, with_activation_masks
from .weights import SparsifyConfig, correct_bias, sparsify_network, weight_sparsity_report


def sparsify_model(net: Network, config: SparsifyConfig | None, threshold: float = 0.0, winner_rate: float = 1.0,
                   calib=None) -> tuple[Network, dict | None]:
    """(sparsified network, weight_sparsity_report or None): weights zeroed by `config` (their mean output
    shift removed on the `calib` batch when given), then activation masks (threshold, winner rate)."""
    sparse, report = net, None
    if config:
        sparse, _ = sparsify_network(net, config)
        if calib is not None:
            correct_bias(net, sparse, calib)
        report = weight_sparsity_report(net, sparse)
    if threshold > 0 or winner_rate < 1:
        sparse = with_activation_masks(sparse, threshold, winner_rate)
    return sparse, report


def write_sparsified(sparse: Network, outputs: list[str], config: SparsifyConfig | None) -> dict:
    """PREFIX.cfg + .weights (dense, with zeros) and, with `config`, PREFIX.dns, all together; returns their
    sizes in MB and how many convs the .dns stores per encoding."""
    from ..model_io import save_models
    encodings: dict[int, str] = {}
    targets = {"darknet": outputs[:2], **({"sparse": outputs[2:]} if config else {})}
    save_models(sparse, targets, group=config.group_size if config else 1, encodings=encodings)
    counts = {name: sum(e == name for e in encodings.values()) for name in ("groups", "csr", "dense")}
    return {"sizes_mb": {o: Path(o).stat().st_size / 1e6 for o in outputs},
            "encodings": {name: count for name, count in counts.items() if count}}


def measure_sparsified(net: Network, sparse: Network, data: str, activation_images: int = 0,
                       progress: Progress = silent) -> dict:
    """On `data`: activation statistics of both networks on the first `activation_images` images (if any:
    `activations` = (before, after, images)) and, when `sparse` differs, compare_models."""
    from ..data import calibration_batch, load_dataset
    from ..eval import compare_models
    dataset = load_dataset(data)
    report: dict = {}
    if activation_images:
        x = calibration_batch(data, activation_images, net.info.width, net.info.height, channels=net.info.channels)
        before = activation_stats(net, x)
        report["activations"] = (before, activation_stats(sparse, x) if sparse is not net else before, len(x))
    if sparse is not net:
        report.update(compare_models(net, sparse, dataset, progress=progress))
    return report
