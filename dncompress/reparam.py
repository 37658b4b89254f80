"""Structural reparameterization: fold batchnorm into conv weights, then merge parallel linear conv branches
(RepVGG, Ding et al. 2021) and stacked linear convs into single convs wherever the cfg's layer graph makes
it exact. Builds a new Network from modified sections and parameters; the input network is left unchanged."""
from __future__ import annotations

import dataclasses

import numpy as np

from .cfg import Section
from .graph import is_plain_conv
from .network import Network

# the keys holding layer references, renumbered when layers are removed
REFERENCE_KEYS = {"route": "layers", "shortcut": "from"}
# shortcut keys whose meaning a merged conv keeps; others (AlexeyAB's weighted shortcuts) are left alone
SHORTCUT_KEYS = {"from", "activation"}


@dataclasses.dataclass
class Fold:
    """One merge: its kind (parallel, sequential), the original layers it replaced, what they were and
    what they became (`into`: kernel size and activation)."""

    kind: str
    layers: list[int]
    parts: list[str]
    into: str

    def describe(self) -> str:
        """e.g. `parallel   layers 2, 3, 4, 5: 3x3 conv + 1x1 conv => one 3x3 conv (leaky)`."""
        if self.kind == "parallel":  # larger kernels first, identity last
            parts = " + ".join(sorted(self.parts, key=lambda p: -int(p.split("x")[0]) if "x" in p else 0))
        else:
            parts = " -> ".join(self.parts)
        return f"{self.kind:<10} layers {', '.join(map(str, self.layers))}: {parts} => one {self.into}"


@dataclasses.dataclass
class Branch:
    """An affine map of one source tensor written as a conv: weights (O, I / groups, k, k), bias (O,)."""

    weights: np.ndarray
    bias: np.ndarray
    stride: int
    pad: int
    groups: int
    name: str

    @property
    def size(self) -> int:
        return self.weights.shape[-1]


@dataclasses.dataclass
class Match:
    """A foldable block: `removed` layers go, layer `at` becomes one conv (section, params) reading the layer
    before it; `parts` name what was merged and the layer each came from (None: an identity branch)."""

    kind: str
    removed: set[int]
    at: int
    section: Section
    params: dict[str, np.ndarray]
    parts: list[tuple[str, int | None]]


def is_linear_conv(layer) -> bool:
    """A plain [convolutional] whose output is affine in its input (no BN left, activation linear)."""
    return (is_plain_conv(layer) and not layer.batch_normalize and layer.activation == "linear"
            and not getattr(layer, "xnor", False))


def conv_branch(layer) -> Branch:
    w, b = layer.folded()
    return Branch(w.astype(np.float64), b.astype(np.float64), layer.stride, layer.pad, layer.groups,
                  f"{layer.size}x{layer.size} conv")


def identity_branch(channels: int, groups: int) -> Branch:
    """x itself as a 1x1 conv with `groups` groups."""
    per_group = channels // groups
    w = np.zeros((channels, per_group, 1, 1))
    w[np.arange(channels), np.arange(channels) % per_group] = 1.0
    return Branch(w, np.zeros(channels), 1, 0, groups, "identity")


def dense(w: np.ndarray, groups: int) -> np.ndarray:
    """Grouped conv weights (O, I / groups, k, k) as the equivalent dense (O, I, k, k) block diagonal."""
    if groups == 1:
        return w
    o, per_group = w.shape[:2]
    out = np.zeros((o, per_group * groups, *w.shape[2:]))
    rows = o // groups
    for g in range(groups):
        out[g * rows:(g + 1) * rows, g * per_group:(g + 1) * per_group] = w[g * rows:(g + 1) * rows]
    return out


def merge_parallel(branches: list[Branch]) -> Branch | None:
    """The sum of branches on one input as one conv: smaller kernels embedded at the offset that reads the
    same input pixels (the 1x1 at the 3x3 centre), biases summed. None if strides or alignment differ."""
    if len({b.stride for b in branches}) > 1:
        return None
    big = max(branches, key=lambda b: b.size)
    groups = branches[0].groups if len({b.groups for b in branches}) == 1 else 1
    w = np.zeros((big.weights.shape[0], big.weights.shape[1] * big.groups // groups, big.size, big.size))
    for b in branches:
        offset = big.pad - b.pad
        if offset < 0 or offset + b.size > big.size:
            return None
        w[:, :, offset:offset + b.size, offset:offset + b.size] += b.weights if b.groups == groups \
            else dense(b.weights, b.groups)
    return Branch(w, sum(b.bias for b in branches), big.stride, big.pad, groups, "")


def compose(first: Branch, second: Branch) -> Branch | None:
    """second(first(x)) as one conv, when exact: `second` 1x1 (pointwise on any `first`), or `first` 1x1
    and `second` unpadded (or `first` without bias: the zero padding then stays zero). Dense convs only."""
    if first.groups != 1 or second.groups != 1:
        return None
    if second.size == 1 and second.stride == 1 and second.pad == 0:
        w2 = second.weights[:, :, 0, 0]
        return Branch(np.einsum("om,mikl->oikl", w2, first.weights), w2 @ first.bias + second.bias,
                      first.stride, first.pad, 1, "")
    if first.size == 1 and first.stride == 1 and first.pad == 0 and (second.pad == 0 or not first.bias.any()):
        w = np.einsum("omkl,mi->oikl", second.weights, first.weights[:, :, 0, 0])
        return Branch(w, second.bias + np.einsum("omkl,m->o", second.weights, first.bias),
                      second.stride, second.pad, 1, "")
    return None


def conv_macs(out_shape: tuple[int, int, int], in_channels: int, size: int, groups: int = 1) -> int:
    """Multiply-accumulates of a conv producing `out_shape` (C, H, W)."""
    return int(np.prod(out_shape)) * in_channels // groups * size * size


def merged_section(base: Section, branch: Branch, filters: int, activation: str, comments: list[str]) -> Section:
    """`base` rewritten as the merged conv: kernel, stride, padding and groups of `branch`, no BN."""
    section = base.copy()
    options = section.options
    if "batch_normalize" in options:
        options["batch_normalize"] = "0"
    options["filters"] = str(filters)
    options["size"] = str(branch.size)
    for key, value in (("stride", branch.stride), ("groups", branch.groups)):
        if key in options or value != 1:
            options[key] = str(value)
    same = branch.pad == branch.size // 2
    if branch.pad and not same:
        options["padding"] = str(branch.pad)
    else:
        options.pop("padding", None)
    if branch.pad and same:
        options["pad"] = "1"
    elif "pad" in options and section.get_int("pad") and branch.size // 2:
        options["pad"] = "0"
    options["activation"] = activation
    section.comments = list(comments)
    return section


def conv_params(branch: Branch) -> dict[str, np.ndarray]:
    return {"biases": branch.bias.astype(np.float32), "weights": np.ascontiguousarray(branch.weights, np.float32)}


def alias_of(net: Network, index: int) -> tuple[int, list[int]]:
    """The layer whose output `index` passes on unchanged through single-input [route]s, and those routes."""
    path = []
    while index >= 0 and net.layers[index].type == "route" and len(net.layers[index].inputs) == 1 \
            and net.layers[index].groups == 1:
        path.append(index)
        index = net.layers[index].inputs[0]
    return index, path


def parallel_match(net: Network, shortcut, read_by: list[list[int]]) -> Match | None:
    """shortcut = act(a + b) where a and b are linear convs on one tensor X (or X itself), each conv read by
    nothing else, the layer left before the shortcut once they are gone still yields X, and the merged conv
    costs no more MACs than the branches."""
    if set(shortcut.section.options) - SHORTCUT_KEYS:
        return None
    options = []
    for i in shortcut.inputs:
        source, path = alias_of(net, i)
        choices = [(None, source, path)]
        layer = net.layers[i]
        if is_linear_conv(layer) and read_by[i] == [shortcut.index]:
            x, conv_path = alias_of(net, layer.inputs[0])
            choices.insert(0, (layer, x, conv_path))
        options.append(choices)
    for conv_a, x_a, path_a in options[0]:
        for conv_b, x_b, path_b in options[1]:
            if x_a != x_b or (conv_a is None and conv_b is None) or conv_a is conv_b:
                continue
            match = _parallel(net, shortcut, [conv_a, conv_b], x_a, path_a + path_b, read_by)
            if match is not None:
                return match
    return None


def _parallel(net: Network, shortcut, convs: list, x: int, routes: list[int], read_by) -> Match | None:
    removed = {c.index for c in convs if c is not None}
    changed = True
    while changed:  # alias routes go too once nothing but the block reads them
        changed = False
        for r in routes:
            if r not in removed and set(read_by[r]) <= removed | {shortcut.index}:
                removed.add(r)
                changed = True
    before = max((i for i in range(shortcut.index) if i not in removed), default=-1)
    if alias_of(net, before)[0] != x:
        return None
    groups = next(c.groups for c in convs if c is not None)
    channels = shortcut.out_shape[0]
    channels_in = next(c.in_shapes[0][0] for c in convs if c is not None)
    branches = [conv_branch(c) if c is not None else identity_branch(channels, groups) for c in convs]
    merged = merge_parallel(branches)
    separate = sum(conv_macs(c.out_shape, c.in_shapes[0][0], c.size, c.groups) for c in convs if c is not None)
    if merged is None or conv_macs(shortcut.out_shape, channels_in, merged.size, merged.groups) > separate:
        return None  # e.g. a grouped 3x3 beside a dense 1x1 would become a dense 3x3
    base = net.layers[max((c for c in convs if c is not None), key=lambda c: c.size).index].section
    block = sorted(removed | {shortcut.index})
    section = merged_section(base, merged, channels, shortcut.activation, net.layers[block[0]].section.comments)
    parts = [(b.name, None if c is None else c.index) for b, c in zip(branches, convs)]
    return Match("parallel", removed, shortcut.index, section, conv_params(merged), parts)


def sequential_match(net: Network, layer, read_by: list[list[int]]) -> Match | None:
    """conv B reading a linear conv A that nothing else reads, when B(A(x)) is one exact conv no costlier
    than the two."""
    if not is_plain_conv(layer) or layer.batch_normalize or layer.inputs[0] < 0:
        return None
    first = net.layers[layer.inputs[0]]
    if not is_linear_conv(first) or read_by[first.index] != [layer.index]:
        return None
    merged = compose(conv_branch(first), conv_branch(layer))
    if merged is None:
        return None
    separate = sum(conv_macs(c.out_shape, c.in_shapes[0][0], c.size, c.groups) for c in (first, layer))
    if conv_macs(layer.out_shape, first.in_shapes[0][0], merged.size) > separate:
        return None
    base = (first if merged.size == first.size and merged.size > 1 else layer).section
    section = merged_section(base, merged, layer.filters, layer.activation, first.section.comments)
    return Match("sequential", {first.index}, layer.index, section, conv_params(merged),
                 [(f"{first.size}x{first.size} conv", first.index), (f"{layer.size}x{layer.size} conv", layer.index)])


def find_match(net: Network) -> Match | None:
    """The first foldable block in layer order."""
    read_by = net.graph.readers
    for layer in net.layers:
        match = parallel_match(net, layer, read_by) if layer.type == "shortcut" else \
            sequential_match(net, layer, read_by)
        if match is not None:
            return match
    return None


def renumbered(layer, new_index: dict[int, int]) -> Section:
    """The layer's section with its route/shortcut references pointing at the same layers' new indices
    (relative references stay relative, absolute ones absolute)."""
    section = layer.section.copy()
    key = REFERENCE_KEYS.get(layer.type)
    if key is None:
        return section
    offsets = section.get_ints(key)
    new = [new_index[layer.resolve(o, key)] - (new_index[layer.index] if o < 0 else 0) for o in offsets]
    if new != offsets:
        section.options[key] = ",".join(map(str, new))
    return section


def apply_match(net: Network, match: Match) -> Network:
    """A new network without `match.removed`, layer `match.at` replaced by the merged conv, references
    renumbered."""
    kept = [layer for layer in net.layers if layer.index not in match.removed]
    new_index = {layer.index: i for i, layer in enumerate(kept)}
    sections = [net.net_section.copy()] + [match.section if layer.index == match.at else renumbered(layer, new_index)
                                           for layer in kept]
    out = net.derive(sections)
    for layer, new in zip(kept, out.layers):
        params = match.params if layer.index == match.at else layer.params
        if params:
            new.set_params(**params)
    return out


def fold_batchnorm(net: Network) -> tuple[Network, list[int]]:
    """Every [convolutional] with batch_normalize=1 as batch_normalize=0 with the weights and bias the engine
    runs (BN folded with Darknet's CPU epsilon); the folded layers' indices."""
    sections = [net.net_section.copy()]
    folded = []
    for layer in net.layers:
        section = layer.section.copy()
        if is_plain_conv(layer) and layer.batch_normalize:
            section.options["batch_normalize"] = "0"
            folded.append(layer.index)
        sections.append(section)
    out = net.derive(sections)
    for old, new in zip(net.layers, out.layers):
        if old.index in folded:
            w, b = old.folded()
            new.set_params(weights=w.copy(), biases=b.copy())
        elif old.params:
            new.set_params(**old.params)
    return out, folded


def reparameterize(net: Network) -> tuple[Network, list[int], list[Fold]]:
    """(new network, convs whose BN was folded, branch folds). Folds repeat until none applies, so a
    3x3 + 1x1 + identity block merges in two steps."""
    net, bn_folded = fold_batchnorm(net)
    origins = [[i] for i in range(len(net.layers))]
    made_by: list[Fold | None] = [None] * len(net.layers)
    folds: list[Fold] = []
    while (match := find_match(net)) is not None:
        block = sorted(match.removed | {match.at})
        parts = []
        for part, index in match.parts:
            earlier = None if index is None else made_by[index]
            if earlier is not None and earlier.kind == match.kind:
                folds.remove(earlier)
                parts.extend(earlier.parts)
            else:
                parts.append(part)
        layer = match.section
        fold = Fold(match.kind, sorted(i for b in block for i in origins[b]), parts,
                    f"{layer.options['size']}x{layer.options['size']} conv ({layer.options['activation']})")
        folds.append(fold)
        keep = [i for i in range(len(net.layers)) if i not in match.removed]
        origins = [fold.layers if i == match.at else origins[i] for i in keep]
        made_by = [fold if i == match.at else made_by[i] for i in keep]
        net = apply_match(net, match)
    return net, bn_folded, folds


def head_difference(net: Network, other: Network, x: np.ndarray) -> float:
    """Largest |difference| of the raw head outputs (the last layer's without heads) on batch x, relative
    to the largest |output| of `net`."""
    def outputs(n: Network) -> list[np.ndarray]:
        return n.forward(x) if n.heads else n.forward(x, keep={len(n.layers) - 1})
    ours, theirs = outputs(net), outputs(other)
    scale = max(float(np.abs(a).max()) for a in ours)
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)) / max(scale, 1e-12)
