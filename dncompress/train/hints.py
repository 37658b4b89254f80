"""Feature imitation for recovery ("hints", FitNets, Romero et al. 2015; layer-wise distillation of pruned
networks): besides the heads, the student's trunk convs are pulled towards the teacher's outputs of the same
layers. A pruned conv keeps some of the original's filters, so its output lives in fewer channels; a linear
map A (C_teacher x C_student), fitted once by ridge least squares on a batch before training, carries it to
the teacher's channels (for a channel-pruned student it is close to the selection of the kept filters).

Per image and hint layer the loss is weight * mean over (channels, positions) of (A s - t)^2 / var(t), the
teacher's relative error: scale-free across layers, 0 for a student that reproduces the teacher."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import DncompressError
from ..network import Network


@dataclasses.dataclass
class Hint:
    layer: int
    adapter: np.ndarray   # (C_teacher, C_student)
    bias: np.ndarray      # (C_teacher,)
    variance: float       # the teacher's output variance at this layer (mean over channels)


def hint_layers(student: Network, teacher: Network) -> list[int]:
    """Every conv that does not feed a head directly, in both networks at the same index (a pruned or
    class-specialized student keeps the teacher's layer graph)."""
    if [layer.type for layer in student.layers] != [layer.type for layer in teacher.layers]:
        raise DncompressError("hints need the student to have the teacher's layers (a pruned copy of it)", student.file)
    heads = {h.index for h in student.heads}
    feeds_head = {i for h in student.heads for i in student.layers[h.index].inputs}
    return [layer.index for layer in student.layers if layer.type == "convolutional"
            and layer.index not in feeds_head and layer.index not in heads]


def channels_last(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*H*W, C) float64."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).astype(np.float64)


def fit_hints(student_outs: dict[int, np.ndarray], teacher_outs: dict[int, np.ndarray],
              ridge: float = 1e-3, max_rows: int = 50_000, seed: int = 0) -> list[Hint]:
    """One Hint per layer: A, b = argmin ||A s + b - t||^2 + ridge * mean(diag) ||A||^2 over (a sample of) the
    positions of the given batch outputs."""
    rng = np.random.default_rng(seed)
    hints = []
    for index in sorted(student_outs):
        s, t = channels_last(student_outs[index]), channels_last(teacher_outs[index])
        if len(s) > max_rows:
            rows = rng.choice(len(s), max_rows, replace=False)
            s, t = s[rows], t[rows]
        s1 = np.hstack([s, np.ones((len(s), 1))])
        gram = s1.T @ s1
        reg = ridge * np.mean(np.diag(gram)[:-1]) * np.eye(len(gram))
        reg[-1, -1] = 0.0
        solution = np.linalg.solve(gram + reg, s1.T @ t)  # (C_s + 1, C_t)
        hints.append(Hint(index, solution[:-1].T.astype(np.float32), solution[-1].astype(np.float32),
                          float(max(t.var(axis=0).mean(), 1e-12))))
    return hints


def hint_loss(hint: Hint, out: np.ndarray, teacher: np.ndarray, weight: float) -> tuple[float, np.ndarray]:
    """out (N, C_s, H, W), teacher (N, C_t, H, W) -> (loss summed over the batch, d loss / d out)."""
    n, c, h, w = out.shape
    flat = out.reshape(n, c, h * w)
    diff = np.matmul(hint.adapter.astype(out.dtype), flat)  # (N, C_t, H*W): batched GEMMs, no transposes
    diff += hint.bias.astype(out.dtype).reshape(1, -1, 1)
    diff -= teacher.reshape(diff.shape)
    scale = weight / (hint.variance * diff[0].size)
    value = float(scale * sum(np.vdot(d, d) for d in diff))
    diff *= 2 * scale
    grad = np.matmul(hint.adapter.T.astype(out.dtype), diff)
    return value, grad.reshape(out.shape)
